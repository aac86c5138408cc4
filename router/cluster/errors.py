"""The errors the router's front ends translate into protocol answers."""


class RingcacheError(Exception):
    """Base of every error a client may be answered with."""


class UnknownGroup(RingcacheError):
    def __init__(self, group: str):
        super().__init__(f"unknown group {group!r}")
        self.group = group


class NodeUnavailable(RingcacheError):
    """The node owning a key cannot be reached or did not answer in time."""

    def __init__(self, node: str, reason: str):
        super().__init__(f"node {node} unavailable: {reason}")
        self.node = node
        self.reason = reason


class NodeTimeout(NodeUnavailable):
    """The node did not answer within the router's timeout. Unlike a refused connection,
    a write it was sent may still be applied (a stopped node resumes and applies it), so
    a front end must say the outcome is unknown, not that the write failed."""

    def __init__(self, node: str, timeout: float):
        super().__init__(node, f"no answer within {timeout * 1000:.0f}ms")
        self.timeout = timeout


class NodeError(RingcacheError):
    """The node answered, with an error status."""


class SourceError(RingcacheError):
    """The group's source failed to load a key (not cached)."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"source {source} failed: {reason}")
        self.source = source
        self.reason = reason


class TooLarge(RingcacheError):
    """A value above the item size limit."""


class SourceBusy(RingcacheError):
    """A miss refused at once because its group already has as many source loads
    running and waiting as it allows (topology: source.concurrency and source.queue)."""

    def __init__(self, source: str, running: int, waiting: int):
        super().__init__(f"source {source} busy: {running} loads running, {waiting} waiting")
        self.source = source



class AnswerTooLarge(RingcacheError):
    """A get whose answer would be too big to hold (a node's answer past one frame)."""
