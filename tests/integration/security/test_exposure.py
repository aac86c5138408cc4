"""A process open beyond this host without authentication says so, loudly, at start; the
demo on 127.0.0.1 stays quiet."""

from __future__ import annotations

import pytest

from tests.helpers import RINGCACHE, free_port, port_open, start_process, stop_process
from tests.integration.security.peers import SECRET, start_node


@pytest.mark.parametrize("auth", [False, True])
def test_a_node_listening_beyond_loopback_without_auth_warns(tmp_path, auth):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    port, proc = start_node(*(["--secret-file", str(secret)] if auth else []))
    stop_process(proc)
    assert "WARNING" not in proc.read_stderr()  # 127.0.0.1: the demo may run open
    port = free_port()
    proc = start_process([*RINGCACHE, "node", "--listen", f"0.0.0.0:{port}",
                          *(["--secret-file", str(secret)] if auth else [])],
                         lambda: port_open(port))
    stop_process(proc)
    warned = f"WARNING: 0.0.0.0:{port} is reachable from other hosts and this node asks no one to authenticate"
    assert (warned in proc.read_stderr()) is not auth


