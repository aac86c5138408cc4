"""The listen backlog (shared/backlog.py): what a backlog may be, and the kernel's cap said once."""

from __future__ import annotations

import pytest

from shared.backlog import DEFAULT_BACKLOG, backlog_problem, capped_warning


def test_the_default_is_memcacheds():
    assert DEFAULT_BACKLOG == 1024


@pytest.mark.parametrize("value", [1, 1024, 65535])
def test_whole_numbers_from_1_to_65535_are_backlogs(value):
    assert backlog_problem(value) is None


@pytest.mark.parametrize("value", [0, -1, 65536, 1.5, "1024", True, None])
def test_anything_else_is_refused_saying_what_is_expected(value):
    assert backlog_problem(value) == f"expected a whole number from 1 to 65535, got {value!r}"


def test_a_kernel_cap_below_the_backlog_is_said(tmp_path):
    somaxconn = tmp_path / "somaxconn"
    somaxconn.write_text("128\n")
    assert capped_warning(1024, str(somaxconn)) == (
        "WARNING: listen backlog 1024 is capped by the kernel at 128 (net.core.somaxconn): "
        "a burst of more than 128 new connections will wait for SYN retries; raise the "
        "host's net.core.somaxconn to 1024 to lift it")


@pytest.mark.parametrize("cap", ["1024", "4096"])
def test_a_cap_at_or_above_the_backlog_is_not(tmp_path, cap):
    somaxconn = tmp_path / "somaxconn"
    somaxconn.write_text(cap + "\n")
    assert capped_warning(1024, str(somaxconn)) is None


def test_no_cap_to_read_is_no_warning(tmp_path):
    assert capped_warning(1024, str(tmp_path / "absent")) is None
