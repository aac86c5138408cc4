"""The warm-up window after a ring change: which nodes owned a key before, for how long.

For ``router.warmup`` seconds after a reload that moved keys, a miss on a key's new owner
asks the owners under the previous rings before the source (mcrouter's WarmUpRoute), so
plain cache groups keep their data across a ring change and sources are spared a
stampede. Clients of nodes that left the ring are kept open for the window (a node
removed while still running is drained this way), then stopped.

Each change that moved keys opens a window of its own; a reload that moved nothing (the
same file applied again, as a file watch does after ``POST /v1/reload``) leaves the
windows in progress alone, where it used to close them.
"""

from __future__ import annotations

from shared.net import cancel_call


class WarmUp:
    def __init__(self, reactor):
        self.reactor = reactor
        self.windows: list[tuple[object, float]] = []  # (previous ring, until), newest first
        self.retired: dict = {}  # name -> client of a node no longer in the ring
        self._retired_until: dict[str, float] = {}
        self._end_call = None

    @property
    def previous_ring(self):
        return self.windows[0][0] if self.windows else None

    @property
    def until(self) -> float:
        return max((until for _, until in self.windows), default=0.0)

    def begin(self, previous_ring, moved: float, replaced: dict, seconds: float,
              live_clients) -> None:
        """A new ring is in force; ``replaced`` maps names to clients it no longer uses."""
        now = self.reactor.seconds()
        live = set(map(id, live_clients))
        # A retired node back in the ring with the same client is not retired any more.
        for name in [n for n, c in self.retired.items() if id(c) in live]:
            del self.retired[name], self._retired_until[name]
        if previous_ring is not None and moved > 0 and seconds > 0:
            self.windows.insert(0, (previous_ring, now + seconds))
            for name, client in replaced.items():
                if id(client) not in live:
                    self.retired[name] = client
                    self._retired_until[name] = now + seconds
        else:
            for client in replaced.values():
                if id(client) not in live:
                    client.stop()
        self._expire()

    def end(self) -> None:
        """Every window is over now."""
        self.windows = []
        self._retired_until = {name: 0.0 for name in self._retired_until}
        self._expire()

    def _expire(self) -> None:
        cancel_call(self._end_call)
        self._end_call = None
        now = self.reactor.seconds()
        self.windows = [(ring, until) for ring, until in self.windows if until > now]
        for name, until in list(self._retired_until.items()):
            if until <= now:
                del self._retired_until[name]
                self.retired.pop(name).stop()
        ends = [until for _, until in self.windows] + list(self._retired_until.values())
        if ends:
            self._end_call = self.reactor.callLater(min(ends) - now, self._expire)

    def previous_owners(self, routing_key: bytes) -> list[str]:
        """The key's owners under the previous rings while their windows last, newest
        first, each once."""
        now = self.reactor.seconds()
        owners: list[str] = []
        for ring, until in self.windows:
            if until > now:
                name = ring.owner(routing_key)
                if name not in owners:
                    owners.append(name)
        return owners

    def previous_owner(self, routing_key: bytes) -> str | None:
        owners = self.previous_owners(routing_key)
        return owners[0] if owners else None

    def info(self) -> dict:
        now = self.reactor.seconds()
        left = max(0.0, self.until - now) if self.windows else 0.0
        return {"active": left > 0, "seconds_left": left,
                "previous_digest": self.previous_ring.digest if self.previous_ring else None}
