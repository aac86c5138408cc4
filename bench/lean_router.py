"""A prototype data plane: memcached gets routed to real storage nodes from a bare epoll loop, no Twisted.

Usage: python bench/lean_router.py TOPOLOGY_FILE

It listens on the topology's memcache address and places keys as the real router does
(router.config.topology's group_for, router.cluster.ring's HashRing and routing_key, same vnodes and
weights), so with the same topology it reads the keys the real router wrote. Each node
gets CONFIGURE (every group's name, policy and max_bytes) when the loop starts, then,
once per loop iteration, one frame: a GET_MANY per group holding every key that all
clients asked of that node in the iteration. Per key the work is: split, group_for,
ring owner, append to the batch; on the way back, unpack the entry and format its
VALUE line. A client's answers leave in request order (pipelined gets included) with
one ``send`` per client per iteration.

What it serves: ``get``/``gets`` of one or more keys (gets' cas token is always 1) and
a plain ``set KEY FLAGS EXPTIME BYTES`` (answered STORED once the owner node stored it;
the harness preloads through it). Anything else is answered ``SERVER_ERROR not supported
by the lean prototype`` after its line is consumed. A miss answers END: there is no
read-through, as the bench's group has no source. No replicas, no timeouts, no reload,
no HTTP API; a node that closes or breaks the framing stops the process. SIGTERM exits.
vs_twemproxy.py --lean measures it.
"""

from __future__ import annotations

import select
import signal
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.memcache.text import value_line  # noqa: E402
from router.cluster.ring import HashRing, routing_key  # noqa: E402
from router.config.topology import load_topology  # noqa: E402
from shared import entry  # noqa: E402
from shared.backlog import DEFAULT_BACKLOG  # noqa: E402
from shared import ringcache_pb2 as pb  # noqa: E402
from shared.framing import FrameDecoder, decode_payload, encode_frame  # noqa: E402

READ_SIZE = 65536
END = b"END\r\n"
STORED = b"STORED\r\n"
UNSUPPORTED = b"SERVER_ERROR not supported by the lean prototype\r\n"
CAS = 1  # the prototype keeps no cas; any stable token satisfies a gets client
KEY_MAX = 250


class Answer:
    """One client command's answer: its parts, filled as nodes reply, and how many are missing."""

    __slots__ = ("client", "parts", "left")

    def __init__(self, client: Client, parts: list, left: int):
        self.client = client
        self.parts = parts
        self.left = left


class Client:
    """A memcached client connection: unparsed bytes, answers in request order, unsent bytes."""

    __slots__ = ("sock", "fd", "buf", "answers", "unsent", "open")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = b""
        self.answers: list[Answer] = []
        self.unsent = b""
        self.open = True


class NodeLink:
    """One storage node connection: this iteration's batches, requests awaiting answers."""

    __slots__ = ("name", "sock", "fd", "decoder", "batches", "stores", "waiting", "unsent")

    def __init__(self, name: str, sock: socket.socket):
        self.name = name
        self.sock = sock
        self.fd = sock.fileno()
        self.decoder = FrameDecoder()
        # group -> (node keys, [(answer, part index, memcached key, with cas), ...])
        self.batches: dict[str, tuple[list, list]] = {}
        self.stores: list[tuple] = []  # (group, key, flags, exptime, value, answer)
        # request id -> a GET_MANY's targets list, or a SET's Answer
        self.waiting: dict[int, object] = {}
        self.unsent = b""


def connect(host: str, port: int) -> socket.socket:
    # A blocking connect on loopback completes at once; the socket then joins the loop.
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def serve(topology_path: str) -> None:
    topology = load_topology(topology_path)
    cfg = topology.router
    ring = HashRing(((n.name, n.weight) for n in topology.nodes), vnodes=cfg.vnodes)
    owner, group_for = ring.owner, topology.group_for
    configs = [pb.GroupConfig(name=g.name, policy=g.policy, max_bytes=g.max_bytes)
               for g in topology.groups.values()]
    loop = select.epoll()
    EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
    links: dict[str, NodeLink] = {}
    by_fd: dict[int, object] = {}  # fd -> Client or NodeLink
    next_id = 0
    for spec in topology.nodes:
        link = NodeLink(spec.name, connect(spec.address.host, spec.address.port))
        links[spec.name] = by_fd[link.fd] = link
        loop.register(link.fd, EPOLLIN)
        next_id += 1  # CONFIGURE's answer is read and dropped like any unknown id
        frame = pb.Frame()
        frame.requests.add(id=next_id, op=pb.CONFIGURE, groups=configs)
        link.sock.sendall(encode_frame(frame.SerializeToString()))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((cfg.memcache.host, cfg.memcache.port))
    listener.listen(DEFAULT_BACKLOG)
    listener.setblocking(False)
    listen_fd = listener.fileno()
    loop.register(listen_fd, EPOLLIN)
    buf = bytearray(READ_SIZE)
    ready: set[Client] = set()  # clients whose first answer may be complete
    pending: set[NodeLink] = set()  # nodes with requests queued in this iteration

    def send(peer, data: bytes) -> None:
        """Send now; a remainder waits for EPOLLOUT (no back-pressure, like Twisted's buffer)."""
        if peer.unsent:
            peer.unsent += data
            return
        try:
            sent = peer.sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            peer.unsent = data[sent:]
            loop.modify(peer.fd, EPOLLIN | EPOLLOUT)

    def drain(peer) -> None:
        sent = peer.sock.send(peer.unsent)
        peer.unsent = peer.unsent[sent:]
        if not peer.unsent:
            loop.modify(peer.fd, EPOLLIN)

    def close_client(client: Client) -> None:
        client.open = False
        del by_fd[client.fd]
        loop.unregister(client.fd)
        client.sock.close()

    def get(client: Client, keys: list, with_cas: bool) -> None:
        answer = Answer(client, [b""] * len(keys) + [END], len(keys))
        client.answers.append(answer)
        for i, key in enumerate(keys):
            group, node_key = group_for(key)
            link = links[owner(routing_key(group, node_key))]
            batch = link.batches.get(group)
            if batch is None:
                batch = link.batches[group] = ([], [])
                pending.add(link)
            batch[0].append(node_key)
            batch[1].append((answer, i, key, with_cas))

    def store(client: Client, key: bytes, flags: int, exptime: int, value: bytes) -> None:
        answer = Answer(client, [b""], 1)
        client.answers.append(answer)
        group, node_key = group_for(key)
        link = links[owner(routing_key(group, node_key))]
        link.stores.append((group, node_key, flags, exptime, value, answer))
        pending.add(link)

    def unsupported(client: Client) -> None:
        client.answers.append(Answer(client, [UNSUPPORTED], 0))
        ready.add(client)

    def parse(client: Client, data: bytes) -> None:
        """Every whole command in ``data``; an unfinished one waits in client.buf."""
        pos, size = 0, len(data)
        while pos < size:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                break
            words = data[pos:eol].split()
            command = words[0] if words else b""
            if (command == b"get" or command == b"gets") and len(words) > 1 and all(
                    len(k) <= KEY_MAX for k in words[1:]):
                get(client, words[1:], command == b"gets")
            elif command == b"set" and len(words) == 5 and all(w.isdigit() for w in words[2:]):
                length = int(words[4])
                end = eol + 2 + length
                if size < end + 2:
                    break  # the data block is still coming
                if data[end:end + 2] != b"\r\n":
                    unsupported(client)  # a bad data block: skip just the line
                else:
                    store(client, words[1], int(words[2]), int(words[3]), data[eol + 2:end])
                    eol = end
            else:
                unsupported(client)
            pos = eol + 2
        client.buf = data[pos:]

    def flush_nodes() -> None:
        nonlocal next_id
        for link in pending:
            frame = pb.Frame()
            add = frame.requests.add
            waiting = link.waiting
            for group, (keys, targets) in link.batches.items():
                next_id += 1
                add(id=next_id, op=pb.GET_MANY, group=group, keys=keys)
                waiting[next_id] = targets
            for group, key, flags, exptime, value, answer in link.stores:
                next_id += 1
                req = add(id=next_id, op=pb.SET, group=group, key=key, value=value)
                if flags:
                    req.flags = flags
                if exptime:
                    req.ttl = exptime
                waiting[next_id] = answer
            link.batches = {}
            link.stores = []
            send(link, encode_frame(frame.SerializeToString()))
        pending.clear()

    def answered(link: NodeLink, data: bytes) -> None:
        decoder = link.decoder
        decoder.receive_data(data)
        waiting = link.waiting
        unpack, negative = entry.unpack, entry.NEGATIVE
        for payload in decoder.frames():
            for response in decode_payload(payload).responses:
                target = waiting.pop(response.id, None)
                if target is None:
                    if response.status != pb.OK:  # CONFIGURE refused
                        raise SystemExit(f"node {link.name}: {response.error}")
                    continue
                if type(target) is Answer:  # a SET
                    target.parts[0] = STORED if response.status == pb.OK else (
                        b"SERVER_ERROR %b\r\n" % response.error.encode())
                    target.left = 0
                    ready.add(target.client)
                    continue
                values = response.values
                if response.status != pb.OK or len(values) != len(target):
                    raise SystemExit(f"node {link.name}: GET_MANY failed: {response.error}")
                for (answer, i, key, with_cas), stored in zip(target, values):
                    if stored and stored != negative:
                        value, flags = unpack(stored)
                        answer.parts[i] = value_line(key, flags, value, CAS if with_cas else None)
                    answer.left -= 1
                    if not answer.left:
                        ready.add(answer.client)

    def flush_clients() -> None:
        for client in ready:
            answers = client.answers
            done = 0
            while done < len(answers) and not answers[done].left:
                done += 1
            if done and client.open:
                out = b"".join(b"".join(a.parts) for a in answers[:done])
                del answers[:done]
                try:
                    send(client, out)
                except OSError:
                    close_client(client)
        ready.clear()

    try:
        while True:
            for fd, events in loop.poll():
                peer = by_fd.get(fd)
                if peer is None:
                    if fd == listen_fd:
                        sock, _ = listener.accept()
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        sock.setblocking(False)
                        client = Client(sock)
                        by_fd[client.fd] = client
                        loop.register(client.fd, EPOLLIN)
                    continue  # else a client closed earlier in this batch
                try:
                    if events & EPOLLOUT:
                        drain(peer)
                    if not events & ~EPOLLOUT:
                        continue
                    n = peer.sock.recv_into(buf)
                except BlockingIOError:
                    continue  # level-triggered: the event comes back
                except OSError:
                    n = 0
                if type(peer) is NodeLink:
                    if not n:
                        raise SystemExit(f"node {peer.name} closed the connection")
                    answered(peer, buf[:n])
                elif not n:
                    close_client(peer)
                else:
                    parse(peer, peer.buf + buf[:n] if peer.buf else bytes(buf[:n]))
            flush_nodes()
            flush_clients()
    finally:
        for peer in list(by_fd.values()):
            peer.sock.close()
        listener.close()
        loop.close()


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwinds out of poll; finally closes
    serve(sys.argv[1])


if __name__ == "__main__":
    main()
