"""shared/connections.py's descriptor table presizing, read back from /proc/self/status."""

from __future__ import annotations

import os
import resource

from shared.connections import presize_fd_table


def fd_table_size() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("FDSize:"))


def test_the_table_is_grown_at_once_and_no_descriptor_is_left_open():
    before = set(os.listdir("/proc/self/fd"))
    want = fd_table_size() * 4
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    try:
        presize_fd_table(want)
        assert fd_table_size() >= min(want, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert set(os.listdir("/proc/self/fd")) == before


def test_a_count_past_the_open_file_limit_grows_it_to_the_limit():
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    presize_fd_table(soft * 10)  # no error
    assert fd_table_size() >= soft
