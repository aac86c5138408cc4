"""The watchers of one memcached listener: memcached's log lines, to those who asked for
them, and a watcher that does not read costs a bounded buffer."""

from __future__ import annotations

from router.memcache.watch import MAX_BUFFERED, Watchers


class Watcher:
    def __init__(self):
        self.lines: list[bytes] = []
        self.backlog = 0

    def unsent(self) -> int:
        return self.backlog

    def send_log(self, line: bytes) -> None:
        self.lines.append(line)


def test_lines_go_to_the_watchers_of_their_kind_in_memcached_s_words():
    watchers = Watchers(clock=lambda: 1_700_000_000.25)
    both, stores = Watcher(), Watcher()
    assert not watchers.fetching and not watchers.mutating
    watchers.add(both, frozenset({"fetchers", "mutations"}))
    watchers.add(stores, frozenset({"mutations"}))
    assert watchers.fetching and watchers.mutating
    watchers.item_get(b"a b/c", False, 2, 17, 0)
    watchers.item_store(b"k", "stored", "set", 0, 1, 17, 5)
    assert both.lines == [
        b"ts=1700000000.250000 gid=1 type=item_get key=a%20b%2Fc status=not_found clsid=2 "
        b"cfd=17 size=0\n",
        b"ts=1700000000.250000 gid=2 type=item_store key=k status=stored cmd=set ttl=0 "
        b"clsid=1 cfd=17 size=5\n"]
    assert stores.lines == both.lines[1:]
    watchers.remove(both)
    assert not watchers.fetching and watchers.mutating and len(watchers) == 1


def test_a_watcher_that_does_not_read_has_lines_dropped_then_is_told_how_many():
    watchers = Watchers(clock=lambda: 5.0)
    slow = Watcher()
    watchers.add(slow, frozenset({"fetchers"}))
    slow.backlog = MAX_BUFFERED + 1
    for _ in range(3):
        watchers.item_get(b"k", True, 1, 9, 1)
    assert slow.lines == []
    slow.backlog = 0
    watchers.item_get(b"k", True, 1, 9, 1)
    assert slow.lines == [b"skipped=3\nts=5.0 gid=4 type=item_get key=k status=found clsid=1 "
                          b"cfd=9 size=1\n"]
