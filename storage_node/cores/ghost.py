"""Ghosts: which keys a core evicted lately, and from which of its two queues, in 8 to 16
bytes an entry of the cache.

A ghost keeps no key, only a 32-bit tag in the slot its key's hash picks: the queue, 23
other bits of the hash as a fingerprint, and the epoch of the eviction. Evictions are
counted in epochs of a sixteenth of ``window``, so a key stays a ghost for about
``window`` evictions after its own, from either queue; ``population()`` counts the
ghosts of each queue in that window. A key whose slot a
later eviction took is forgotten early; one key in eight million that lands on a
stranger's tag, or a tag left untouched for 256 epochs (the count goes round), is
recalled wrongly: either only makes the policy a little worse, never wrong, which is the
trade for no key object kept alive and 4 bytes a slot.
"""

from __future__ import annotations

from array import array

SMALL, MAIN = 0, 1
EPOCHS = 16  # a window is this many epochs; tags count epochs modulo 256
_MIN_SLOTS = 64


class Ghosts:
    def __init__(self, hash=hash):
        self._hash = hash
        self._epoch_length = 1
        self._table = array("I", bytes(4 * _MIN_SLOTS))
        self.clear()

    def fit(self, window: int) -> None:
        """Remember about ``window`` evictions (the cache's entry count)."""
        self._epoch_length = max(window // EPOCHS, 1)
        if 2 * window > len(self._table):
            # Tags cannot move to a larger table (their keys are gone): it starts empty.
            self._table = array("I", bytes(4 << (2 * window - 1).bit_length()))
            self.clear()

    # A tag: bits 9-31 the fingerprint (bits 41-63 of the hash), 1-8 the epoch, 0 the queue.

    def add(self, key: bytes, queue: int) -> None:
        h = self._hash(key)
        self._table[h & self._mask] = (h >> 32) & 0xFFFFFE00 | self._tags[queue]
        self._new[queue] += 1
        self._left -= 1
        if not self._left:
            self._next_epoch()

    def _next_epoch(self) -> None:
        self._left = self._epoch_length
        ended = self._epoch
        self._epoch = epoch = (ended + 1) & 0xFF
        self._tags = [epoch << 1 | SMALL, epoch << 1 | MAIN]
        for queue in (SMALL, MAIN):
            counts = self._per_epoch[queue]
            counts[ended % EPOCHS] = self._new[queue]
            counts[epoch % EPOCHS] = 0  # epoch - 16, which just left the window
            self._new[queue] = 0

    def pop(self, key: bytes) -> int | None:
        """SMALL or MAIN if ``key`` is a ghost of that queue (and no longer after), else None."""
        h = self._hash(key)
        slot = h & self._mask
        tag = self._table[slot]
        if tag & 0xFFFFFE00 != (h >> 32) & 0xFFFFFE00 or not tag:
            return None
        self._table[slot] = 0
        epoch = (tag >> 1) & 0xFF
        if (self._epoch - epoch) & 0xFF >= EPOCHS:
            return None
        queue = tag & 1
        if epoch == self._epoch:
            counts, index = self._new, queue
        else:
            counts, index = self._per_epoch[queue], epoch % EPOCHS
        if counts[index]:  # else a tag 256 epochs old, read as a new one: not counted
            counts[index] -= 1
        return queue

    def population(self) -> tuple[int, int]:
        """Ghosts of SMALL and of MAIN in the window, as ARC weighs its two lists."""
        return (sum(self._per_epoch[SMALL]) + self._new[SMALL],
                sum(self._per_epoch[MAIN]) + self._new[MAIN])

    def clear(self) -> None:
        self._table = array("I", bytes(4 * len(self._table)))
        self._mask = len(self._table) - 1
        self._epoch, self._left = 0, self._epoch_length
        self._tags = [SMALL, MAIN]
        self._new = [0, 0]  # ghosts from SMALL and from MAIN of the current epoch
        self._per_epoch = ([0] * EPOCHS, [0] * EPOCHS)  # the same, by epoch modulo EPOCHS
