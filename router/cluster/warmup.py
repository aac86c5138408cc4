"""The warm-up window after a ring change: which node owned a key before, for how long.

For ``router.warmup`` seconds after a reload that moved keys, a miss on a key's new owner
asks the owner under the previous ring before the source (mcrouter's WarmUpRoute), so
plain cache groups keep their data across a ring change and sources are spared a
stampede. Clients of nodes that left the ring are kept open for the window, then stopped.
"""

from __future__ import annotations

from shared.net import cancel_call


class WarmUp:
    def __init__(self, reactor):
        self.reactor = reactor
        self.previous_ring = None
        self.until = 0.0
        self.retired: dict = {}  # name -> client of a node no longer in the ring
        self._end_call = None

    def begin(self, previous_ring, moved: float, replaced: dict, seconds: float,
              live_clients) -> None:
        """A new ring is in force; ``replaced`` maps names to clients it no longer uses."""
        cancel_call(self._end_call)
        self._end_call = None
        retiring, self.retired = self.retired, {}
        if previous_ring is not None and moved > 0 and seconds > 0:
            self.previous_ring = previous_ring
            self.until = self.reactor.seconds() + seconds
            self.retired = replaced
            self._end_call = self.reactor.callLater(seconds, self.end)
        else:
            self.previous_ring = None
            retiring.update(replaced)
        live = set(map(id, live_clients))
        for client in retiring.values():
            if id(client) not in live:
                client.stop()

    def end(self) -> None:
        self._end_call = None
        self.previous_ring = None
        retired, self.retired = self.retired, {}
        for client in retired.values():
            client.stop()

    def previous_owner(self, routing_key: bytes) -> str | None:
        """The key's owner under the previous ring while the window lasts, else None."""
        if self.previous_ring is None or self.reactor.seconds() >= self.until:
            return None
        return self.previous_ring.owner(routing_key)

    def info(self) -> dict:
        left = max(0.0, self.until - self.reactor.seconds()) if self.previous_ring else 0.0
        return {"active": left > 0, "seconds_left": left,
                "previous_digest": self.previous_ring.digest if self.previous_ring else None}
