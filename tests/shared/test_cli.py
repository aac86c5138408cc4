"""The `ringcache` front door: bad input is one line on stderr and exit status 2."""

from __future__ import annotations

import re

import pytest

from shared.cli import main


@pytest.mark.parametrize("argv, message", [
    ([], "ringcache: missing command (see ringcache --help)\n"),
    (["bogus"], "ringcache: unknown command 'bogus' (see ringcache --help)\n"),
])
def test_bad_command_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", message)


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    words = set(re.findall(r"[a-z]+", capsys.readouterr().out))
    assert {"up", "router", "node", "get", "set", "delete", "stats", "ring", "where",
            "reload", "plan"} <= words


def test_version_names_the_installed_distribution(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr() == (f"ringcache {version('ringcache')}\n", "")


def test_log_lines_say_what_happened_without_twisted_chatter():
    from twisted.logger import LogLevel
    from twisted.python.failure import Failure

    from shared.cli import log_line

    def event(text, level=LogLevel.info, **more):
        return {"log_format": "{text}", "text": text, "log_level": level,
                "log_time": 0.0, **more}

    for chatter in ("ConnectionCap starting on 7002", "(TCP Port 7002 Closed)",
                    "Starting factory <twisted.web.client._HTTP11ClientFactory object at 0x7f>",
                    "Main loop terminated.", "Received SIGTERM, shutting down."):
        assert log_line(event(chatter)) is None, chatter
    line = log_line(event("node node-a (127.0.0.1:7001) is down: refused", LogLevel.warn))
    assert line.endswith(" WARNING: node node-a (127.0.0.1:7001) is down: refused\n")
    assert "#" not in line and "[" not in line  # no namespace, no level tag
    assert log_line(event("WARNING: 0.0.0.0:7001 is open", LogLevel.warn)).endswith(
        " WARNING: 0.0.0.0:7001 is open\n")
    try:
        raise ValueError("a bug of ours")
    except ValueError:
        failure = Failure()
    line = log_line(event("request failed", LogLevel.critical, log_failure=failure))
    assert " ERROR: request failed\n" in line and "ValueError: a bug of ours" in line
