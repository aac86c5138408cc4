"""shared/net.py write_now: answers sent at once when nothing is queued, in pieces too."""

from __future__ import annotations

import pytest
from twisted.internet.tcp import Connection
from twisted.internet.testing import StringTransport

from shared.net import write_now


class Socket:
    """A non-blocking socket that takes at most ``room`` bytes a send (0: EAGAIN)."""

    def __init__(self, room: int):
        self.room = room
        self.sent = b""
        self.sends = 0

    def setblocking(self, flag):
        pass

    def fileno(self):
        return -1

    def _take(self, data: bytes) -> int:
        if not self.room:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        self.sends += 1
        taken = data[:self.room]
        self.sent += taken
        return len(taken)

    def send(self, data) -> int:
        return self._take(bytes(data))

    def sendmsg(self, buffers) -> int:
        return self._take(b"".join(buffers))


class Reactor:
    def addWriter(self, writer):
        pass

    def removeWriter(self, writer):
        pass


def connection(room: int) -> Connection:
    transport = Connection(Socket(room), None, Reactor())
    transport.connected = True
    return transport


def queued(transport: Connection) -> bytes:
    return bytes(transport.dataBuffer) + b"".join(transport._tempDataBuffer)


PIECES = [b"VALUE k 0 12\r\n", memoryview(b"xxxxhello world!yyyy")[4:16], b"\r\nEND\r\n"]
WHOLE = b"VALUE k 0 12\r\nhello world!\r\nEND\r\n"


def test_pieces_go_out_in_one_send_when_the_socket_takes_them():
    transport = connection(1 << 20)
    write_now(transport, list(PIECES))
    assert (transport.socket.sent, transport.socket.sends, queued(transport)) == (WHOLE, 1, b"")


@pytest.mark.parametrize("room", [1, 14, 15, 26, 27, 32])
def test_what_the_socket_does_not_take_of_pieces_is_queued_in_order(room):
    transport = connection(room)
    write_now(transport, list(PIECES))
    assert transport.socket.sent == WHOLE[:room]
    assert queued(transport) == WHOLE[room:]
    write_now(transport, b"next")  # behind what is queued, never before it
    assert transport.socket.sent + queued(transport) == WHOLE + b"next"


def test_pieces_a_full_socket_does_not_take_are_all_queued():
    transport = connection(0)
    write_now(transport, list(PIECES))
    assert (transport.socket.sent, queued(transport)) == (b"", WHOLE)


def test_other_transports_get_the_pieces_joined():
    transport = StringTransport()
    write_now(transport, list(PIECES))
    write_now(transport, bytearray(b"more"))
    assert transport.value() == WHOLE + b"more"
