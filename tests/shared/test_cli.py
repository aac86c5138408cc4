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
