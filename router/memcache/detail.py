"""memcached's per-prefix statistics (``stats detail on|off|dump``, memcached's
stats_prefix.c): while detail is on, each get (hit or not), store and delete of a key
holding the delimiter ``:`` counts for the part before it, and ``stats detail dump``
lists them as ``PREFIX name get N hit N set N del N`` lines, then END. ``stats reset``
clears them.

Kept per router process, as memcached keeps them per server. Only the text protocol
counts, and a get counts when its answer is back from the nodes (memcached counts it
while it builds the answer): a dump pipelined right behind a get may not show it yet.
"""

from __future__ import annotations

DELIMITER = b":"


class PrefixStats:
    """The counters of one listener's connections, and whether they are being kept."""

    def __init__(self):
        self.enabled = False
        self._counts: dict[bytes, list[int]] = {}  # prefix -> [gets, hits, sets, deletes]

    def _counter(self, key: bytes) -> list[int] | None:
        prefix, sep, _ = key.partition(DELIMITER)
        if not sep:
            return None  # memcached keeps none for a key without the delimiter
        counts = self._counts.get(prefix)
        if counts is None:
            counts = self._counts[prefix] = [0, 0, 0, 0]
        return counts

    def record_get(self, key: bytes, hit: bool) -> None:
        counts = self._counter(key)
        if counts is not None:
            counts[0] += 1
            counts[1] += hit

    def record_set(self, key: bytes) -> None:
        counts = self._counter(key)
        if counts is not None:
            counts[2] += 1

    def record_delete(self, key: bytes) -> None:
        counts = self._counter(key)
        if counts is not None:
            counts[3] += 1

    def clear(self) -> None:
        self._counts.clear()

    def dump(self) -> bytes:
        """memcached's ``stats detail dump`` answer, END included."""
        return b"".join(b"PREFIX %b get %d hit %d set %d del %d\r\n" % (prefix, *counts)
                        for prefix, counts in self._counts.items()) + b"END\r\n"


def values_of(answer: bytes) -> list[tuple[bytes, int]]:
    """(key, value bytes) of each VALUE line of the answer to a run of gets (bytes or a
    bytearray), in order, across the END of each get (read by their byte counts, so that
    a value holding "VALUE" is not taken for one)."""
    out = []
    pos, size = 0, len(answer)
    while pos < size:
        if answer.startswith(b"END\r\n", pos):
            pos += 5
            continue
        if not answer.startswith(b"VALUE ", pos):
            break  # an error line: what follows is no get's
        end = answer.index(b"\r\n", pos)
        fields = answer[pos:end].split(b" ")
        nbytes = int(fields[3])
        out.append((bytes(fields[1]), nbytes))
        pos = end + 2 + nbytes + 2
    return out
