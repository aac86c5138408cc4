"""A token bucket: so many events per minute, in bursts of up to that many."""

from __future__ import annotations

from collections.abc import Callable


class TokenBucket:
    """Starts full; refills continuously at ``per_minute / 60`` tokens a second.

    The rate is an argument of each ``take`` rather than fixed at construction, so a
    topology reload that changes it applies from the next request on.
    """

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self._tokens: float | None = None  # None: full, whatever the rate turns out to be
        self._at = 0.0

    def take(self, per_minute: int) -> float:
        """0.0 with one token taken, or the seconds until there is one (nothing taken)."""
        now = self.clock()
        if self._tokens is None:
            tokens = float(per_minute)
        else:
            tokens = min(float(per_minute), self._tokens + (now - self._at) * per_minute / 60)
        self._at = now
        if tokens >= 1:
            self._tokens = tokens - 1
            return 0.0
        self._tokens = tokens
        return (1 - tokens) * 60 / per_minute
