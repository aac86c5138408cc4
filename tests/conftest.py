"""What every test may do: unit tests (all but tests/integration and tests/deploy) start no
process and open no network socket, so that `make test-unit` is fast and deterministic.
A test that needs either belongs under tests/integration/, and is told so."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent
_REAL_WORLD = (_TESTS / "integration", _TESTS / "deploy")


class StartsAProcess(AssertionError):
    pass


def _refuse(what: str):
    def refused(*args, **kwargs):
        raise StartsAProcess(f"a unit test {what}: move it under tests/integration/")
    return refused


def _inet_only(real, what: str):
    def guarded(sock, address, *args):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            _refuse(what)()
        return real(sock, address, *args)
    return guarded


@pytest.fixture(autouse=True)
def _unit_tests_stay_in_process(request, monkeypatch):
    path = Path(str(request.node.path)).resolve()
    if any(path.is_relative_to(place) for place in _REAL_WORLD):
        return
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("started a process"))
    monkeypatch.setattr(os, "fork", _refuse("forked"))
    monkeypatch.setattr(os, "posix_spawn", _refuse("started a process"))
    monkeypatch.setattr(socket.socket, "bind", _inet_only(socket.socket.bind, "opened a port"))
    monkeypatch.setattr(socket.socket, "connect",
                        _inet_only(socket.socket.connect, "opened a connection"))
    monkeypatch.setattr(socket.socket, "connect_ex",
                        _inet_only(socket.socket.connect_ex, "opened a connection"))
