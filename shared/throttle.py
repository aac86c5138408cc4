"""One log line per interval for an event a hostile peer can repeat at will (a refused
connection, a failed handshake): the first is logged at once, the rest are counted and
the count rides on the next line logged, so a flood costs no disk and no CPU."""

from __future__ import annotations

from collections.abc import Callable


class LogThrottle:
    def __init__(self, log: Callable[[str], None], clock: Callable[[], float],
                 interval: float = 10.0):
        self._log = log
        self._clock = clock
        self._interval = interval
        self._last = self._next = float("-inf")  # when a line was logged, may be again
        self.suppressed = 0  # events since the last line, not logged

    def __call__(self, text: str) -> bool:
        """Log ``text`` unless a line went out less than ``interval`` ago; True if logged."""
        now = self._clock()
        if now < self._next:
            self.suppressed += 1
            return False
        if self.suppressed:
            text += f" ({self.suppressed} more like it in the last {now - self._last:.0f}s not logged)"
            self.suppressed = 0
        self._log(text)
        self._last = now
        self._next = now + self._interval
        return True
