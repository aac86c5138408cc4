"""memcached's `watch` against a real router and nodes: a watching connection is sent a
line per fetch and store of the other clients, in memcached's words, naming each client
by its number in `stats conns`."""

from __future__ import annotations

import re
import socket

import pytest


pytestmark = pytest.mark.integration


class Client:
    def __init__(self, cluster):
        self.sock = socket.create_connection(("127.0.0.1", cluster.memcache_port), timeout=5)
        self.lines = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.lines.readline()

    def number(self) -> str:
        """This client's number: the last connection `stats conns` lists is the newest."""
        self.send(b"stats conns\r\n")
        last = None
        while (line := self.line()) != b"END\r\n":
            last = line
        return last.split(b" ")[1].split(b":")[0].decode()

    def close(self) -> None:
        self.lines.close()
        self.sock.close()


def test_a_watcher_sees_each_client_s_fetches_and_stores(cluster):
    first = Client(cluster)
    first_number = first.number()
    watcher = Client(cluster)
    watcher.send(b"watch fetchers mutations\r\n")
    assert watcher.line() == b"OK\r\n"
    only_stores = Client(cluster)
    only_stores.send(b"watch mutations\n")
    assert only_stores.line() == b"OK\r\n"

    first.send(b"set sessions:foo 0 0 5 noreply\r\nhello\r\n")
    # memcached's store looks the key up first (a fetch), then stores it.
    assert re.fullmatch(rb"ts=\d+\.\d+ gid=\d+ type=item_get key=sessions%3Afoo "
                        rb"status=not_found clsid=\d+ cfd=" + first_number.encode()
                        + rb" size=0\n", watcher.line())
    stored = (rb"ts=\d+\.\d+ gid=\d+ type=item_store key=sessions%3Afoo status=stored "
              rb"cmd=set ttl=0 clsid=\d+ cfd=" + first_number.encode() + rb" size=5\n")
    assert re.fullmatch(stored, watcher.line())
    assert re.fullmatch(stored, only_stores.line())

    second = Client(cluster)
    second_number = second.number()
    assert second_number != first_number
    second.send(b"get sessions:foo\r\nget sessions:nothing\r\n")
    assert second.line().startswith(b"VALUE sessions:foo 0 5")
    assert re.fullmatch(rb"ts=\d+\.\d+ gid=\d+ type=item_get key=sessions%3Afoo status=found "
                        rb"clsid=\d+ cfd=" + second_number.encode() + rb" size=5\n",
                        watcher.line())
    assert b"key=sessions%3Anothing status=not_found" in watcher.line()

    # A refused add is a fetch that finds the key, then a store not stored.
    first.send(b"add sessions:foo 0 60 1\r\nx\r\n")
    assert first.line() == b"NOT_STORED\r\n"
    assert b"type=item_get key=sessions%3Afoo status=found" in watcher.line()
    assert b"status=not_stored cmd=add ttl=60" in watcher.line()
    assert b"status=not_stored cmd=add ttl=60" in only_stores.line()

    # A watcher is listed as one; once it closes, the others are served as before.
    watcher.send(b"version\r\n")  # a watcher is read no more
    first.send(b"stats conns\r\n")
    listed = b""
    while (line := first.line()) != b"END\r\n":
        listed += line
    assert b"state conn_watch" in listed
    watcher.close()
    only_stores.close()
    first.send(b"set sessions:foo 0 0 2\r\nhi\r\n")
    assert first.line() == b"STORED\r\n"
    first.close()
    second.close()


def test_watch_after_unanswered_commands_is_refused_and_unknown_flags_are_errors(cluster):
    client = Client(cluster)
    client.send(b"version\r\nwatch\r\n")
    assert client.line().startswith(b"VERSION ")
    assert client.line() == b"ERROR cannot pipeline other commands before watch\r\n"
    client.send(b"watch fetchers bogus\r\n")
    assert client.line() == b"ERROR\r\n"
    client.send(b"get sessions:x\r\n")  # still an ordinary client
    assert client.line() == b"END\r\n"
    client.close()


def test_gat_is_a_fetch_too(cluster):
    client = Client(cluster)
    client.send(b"set sessions:touched 0 0 3\r\nabc\r\n")
    assert client.line() == b"STORED\r\n"
    watcher = Client(cluster)
    watcher.send(b"watch\r\n")  # fetchers alone
    assert watcher.line() == b"OK\r\n"
    client.send(b"gat 100 sessions:touched sessions:absent\r\n")
    assert client.line().startswith(b"VALUE sessions:touched 0 3")
    assert b"key=sessions%3Atouched status=found" in watcher.line()
    line = watcher.line()
    assert b"key=sessions%3Aabsent status=not_found" in line and line.endswith(b" size=0\n")
    watcher.close()
    client.close()
