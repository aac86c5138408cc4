"""Sans-I/O length-prefixed framing for router <-> node traffic.

A frame is a 4-byte big-endian unsigned length followed by that many bytes of payload
(a serialized ``ringcache.Frame``).  The decoder holds no socket: feed it bytes with
``receive_data`` and take whole payloads from ``next_frame`` until it returns None.
"""

from __future__ import annotations

import struct

from shared import ringcache_pb2 as pb

# Hard bound on one frame's payload: a peer announcing more is broken or hostile, and
# buffering it would let one connection take the node's memory.
MAX_FRAME = 64 * 1024 * 1024

_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size


class FrameError(Exception):
    """The peer broke the framing protocol; the only safe answer is to close it."""


class WireError(FrameError, ValueError):
    """A payload that is not a well-formed Frame message: the peer's fault too."""


def encode_frame(payload: bytes, max_frame: int = MAX_FRAME) -> bytes:
    if len(payload) > max_frame:
        # Our own bug (a batch too large), not the peer's: refuse before sending.
        raise ValueError(f"frame of {len(payload)} bytes exceeds MAX_FRAME {max_frame}")
    return _HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Accumulates bytes and yields whole frame payloads.

    A payload is handed out without a copy when it arrived whole in one read: as a
    memoryview of the bytes received (the common case, and for a large value one copy
    less on its way to the client). One that spanned reads is gathered in a buffer, and
    handed out as a view of that buffer when it ends it (then a new buffer is begun), or
    else copied out once.
    """

    __slots__ = ("_buf", "_pos", "_data", "_dpos", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME):
        self._buf = bytearray()
        self._pos = 0  # start of the first unconsumed byte in _buf
        self._data = None  # the last read, while frames are taken straight from it
        self._dpos = 0
        self.max_frame = max_frame

    def receive_data(self, data: bytes) -> None:
        if self._data is not None:
            self._spill()
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
            self._data, self._dpos = data, 0
        else:
            self._buf += data

    def next_frame(self) -> bytes | memoryview | None:
        """The next whole payload, or None until more data arrives.

        Raises FrameError when the announced length exceeds ``max_frame``.
        """
        data = self._data
        if data is not None:
            pos = self._dpos
            if len(data) - pos >= HEADER_SIZE:
                (length,) = _HEADER.unpack_from(data, pos)
                if length > self.max_frame:
                    raise FrameError(f"frame of {length} bytes exceeds the limit of "
                                     f"{self.max_frame}")
                end = pos + HEADER_SIZE + length
                if end <= len(data):
                    self._dpos = end
                    if end == len(data):
                        self._data = None
                    return memoryview(data)[pos + HEADER_SIZE:end]
            self._spill()
            return None
        buf, pos = self._buf, self._pos
        if len(buf) - pos < HEADER_SIZE:
            self._compact()
            return None
        (length,) = _HEADER.unpack_from(buf, pos)
        if length > self.max_frame:
            raise FrameError(f"frame of {length} bytes exceeds the limit of {self.max_frame}")
        end = pos + HEADER_SIZE + length
        if len(buf) < end:
            self._compact()
            return None
        if end == len(buf):
            # The frame ends what is buffered (as it does when its last read completed
            # it): the buffer itself is handed out, and a new one begun, without a copy.
            self._buf, self._pos = bytearray(), 0
            return memoryview(buf)[pos + HEADER_SIZE:end]
        payload = bytes(memoryview(buf)[pos + HEADER_SIZE:end])
        self._pos = end
        return payload

    def frames(self):
        """Every whole payload buffered so far."""
        while (payload := self.next_frame()) is not None:
            yield payload

    @property
    def missing(self) -> int:
        """Bytes still to come of the frame being gathered (0 when none is begun)."""
        held = len(self._buf) - self._pos
        if self._data is not None or held < HEADER_SIZE:
            return 0
        (length,) = _HEADER.unpack_from(self._buf, self._pos)
        return max(0, HEADER_SIZE + length - held)

    @property
    def buffered(self) -> int:
        held = len(self._buf) - self._pos
        return held + (len(self._data) - self._dpos if self._data is not None else 0)

    def _spill(self) -> None:
        """The rest of the last read (a partial frame) into the buffer, to gather it."""
        self._buf += memoryview(self._data)[self._dpos:]
        self._data = None

    def _compact(self) -> None:
        # Drop consumed bytes only when we stop for more data: one memmove per read,
        # not one per frame.
        if self._pos:
            del self._buf[:self._pos]
            self._pos = 0


def encode_batch(requests=(), responses=()) -> bytes:
    """One length-prefixed frame holding a batch of requests and/or responses."""
    frame = pb.Frame()
    if requests:
        frame.requests.extend(requests)
    if responses:
        frame.responses.extend(responses)
    return encode_frame(frame.SerializeToString())


def decode_payload(payload: bytes) -> pb.Frame:
    """Parse one payload; a payload that is not a Frame is the peer's fault."""
    frame = pb.Frame()
    try:
        frame.ParseFromString(payload)
    except Exception as exc:  # protobuf raises DecodeError, sometimes others
        raise WireError(f"undecodable frame: {exc}") from None
    return frame
