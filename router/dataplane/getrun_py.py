"""Pipelined and multi-key gets routed a batch at a time: the pure-Python twin of router.dataplane._getrun.

``take_gets`` reads every complete plain ``get`` line at the head of a client's buffer (one
read's worth of pipelined gets, or one multi-get) and routes all their keys at once: each
distinct key is placed on the ring, and the keys of one group on one node become one
GET_MANY request body. The ``GetRun`` it returns is filled with each node's answer and
renders the client's whole answer (VALUE lines, END) in one go. Anything else -- a miss, a
node that failed, a group with replicas -- is left ``unresolved`` for the router's slow
path, which answers it with ``resolve`` or ``resolve_error`` before ``render``.

router/dataplane/getrun.py picks the compiled module when it is built; tests/router/dataplane/test_getrun.py runs the
same tests against both.
"""

from __future__ import annotations

import re
from bisect import bisect_left

from router.cluster.ring import murmur3_32, routing_key
from router.memcache.keys import KEY_MAX_LENGTH, NOT_IN_KEYS, split_group
from shared import ringcache_pb2 as pb
from shared.entry import positive, unpack_cas
from shared.wire import Tag, encode_request, len_field

COMPILED = False

_GET_MANY = encode_request(0, pb.GET_MANY)  # a body's op field: no id, that comes later
END = b"END\r\n"
ANSWER_TOO_BIG = b"SERVER_ERROR out of memory writing get response\r\n"
# A plain get or gets line: keys of legal bytes and length, single spaces, the line end.
_PLAIN_GET = re.compile(rb"get(s?)((?: [^%b]{1,%d})+)\r?\n"
                        % (re.escape(NOT_IN_KEYS), KEY_MAX_LENGTH))


class RouteTable:
    """What routing a key needs, as plain numbers: groups by index, the ring's points.

    ``prefixes`` maps a group name (bytes) to its index; ``default`` is the index of the
    group for keys without a known ``GROUP:`` prefix; ``names`` the groups' names; ``fast``
    whether a group is served here (a group with replicas is not: each of its keys is
    left unresolved). ``hashes`` are the ring's sorted point hashes and ``owners`` the node
    index of each point.
    """

    __slots__ = ("prefixes", "default", "names", "fast", "hashes", "owners", "_groups")

    def __init__(self, prefixes: dict, default: int, names: list, fast: list, hashes: list,
                 owners: list):
        self.prefixes = dict(prefixes)
        self.default = default
        self.names = list(names)
        self.fast = list(fast)
        self.hashes = list(hashes)
        self.owners = list(owners) + list(owners[:1])  # past the last point: the first
        self._groups = [len_field(Tag.GROUP, n.encode()) for n in self.names]

    def place(self, key: bytes) -> tuple[int, bytes, int]:
        """(group index, the key within its group, node index or -1) of a memcached key:
        its group as router/memcache/keys.py names it, its node as the ring places it."""
        group, rest = split_group(key, self.prefixes, self.default)
        if not self.fast[group]:
            return group, rest, -1
        point = bisect_left(self.hashes, murmur3_32(routing_key(self.names[group], rest)))
        return group, rest, self.owners[point]


class GetRun:
    """The gets of one client read: where each key went, and what came back."""

    __slots__ = ("commands", "slots", "batches", "entries", "errors", "left", "hits", "misses",
                 "nslots", "ncommands", "_bodies", "_answer_max")

    def __init__(self, answer_max: int):
        # Per command: (slot per key, its keys, whether it is gets: CAS uniques wanted).
        self.commands: list[tuple[list, list, bool]] = []
        self.slots: list[list] = []  # [group, node, key, batch, index in batch]
        self.batches: list[tuple[int, bytes]] = []  # (node, GET_MANY body) once built
        self.entries: list = []  # per slot: None, or the entry its node (or resolve) gave
        self.errors: dict[int, bytes] = {}  # slot -> the error line its command answers
        self.left = 0  # batches not yet filled or failed
        self.nslots = 0  # distinct keys
        self.ncommands = 0
        self.hits = self.misses = 0  # counted over the keys of every command, by render
        self._bodies: list[tuple[int, int, list, list]] = []  # (node, group, keys, slots)
        self._answer_max = answer_max

    def fill(self, batch: int, values) -> int:
        """Node answered ``batch`` with one entry per key (b"" for a miss); batches left."""
        _, _, keys, slots = self._bodies[batch]
        if len(values) != len(keys):
            raise ValueError(f"{len(values)} answers for {len(keys)} keys")
        entries = self.entries
        for slot, value in zip(slots, values):
            entries[slot] = value
        self.left -= 1
        return self.left

    def fail(self, batch: int) -> int:
        """``batch`` got no usable answer: its keys stay unresolved. Batches left."""
        self.left -= 1
        return self.left

    def unresolved(self) -> list[tuple[int, int, int, int, bytes, bytes | None]]:
        """(slot, group, node, batch, key, entry) of every key the fast path could not
        answer: entry None (its batch failed, or its group is not served here), b"" (a
        miss) or the negative entry (a cached absence)."""
        out = []
        for i, (group, node, key, batch, _) in enumerate(self.slots):
            stored = self.entries[i]
            if i not in self.errors and not positive(stored):
                out.append((i, group, node, batch, key, stored))
        return out

    def resolve(self, slot: int, stored: bytes) -> None:
        """The slow path's answer for ``slot``: an entry as a node stores it, b"" for none."""
        self.entries[slot] = stored

    def resolve_error(self, slot: int, line: bytes) -> None:
        """``slot`` failed: each command naming it answers ``line`` instead."""
        self.errors[slot] = line

    def slot(self, i: int) -> tuple[int, bytes]:
        """(group, key within it) of slot ``i``: what the hot-key sampler records."""
        group, _, key, _, _ = self.slots[i]
        return group, key

    def batch_keys(self, batch: int) -> list[bytes]:
        """The keys (within their group) of ``batch``, in the order ``fill`` takes them."""
        return list(self._bodies[batch][2])

    def batch_sizes(self) -> list[tuple[int, int]]:
        """(group, keys) per batch, for the per-group hit counts."""
        return [(group, len(keys)) for _, group, keys, _ in self._bodies]

    def render(self, large: int = 0) -> bytes | list:
        """The answers to every command of the run, in order: one bytes object; or, with
        ``large`` and a value of at least that many bytes among them, a list of pieces in
        which each such value is a piece of its own (the compiled twin leaves it where the
        node's answer holds it, uncopied, for the socket to take as it is)."""
        out = []
        entries, errors = self.entries, self.errors
        hits = misses = 0
        pieces = None  # the pieces before ``out``, once a value is left apart
        for slots, keys, with_cas in self.commands:
            error = next((errors[s] for s in slots if s in errors), None)
            if error is not None:
                out.append(error)
                continue
            parts = []
            size = 0
            apart = []  # (index in parts, value) of the values left apart
            for slot, key in zip(slots, keys):
                stored = entries[slot]
                if not positive(stored):
                    misses += 1
                    continue
                hits += 1
                value, flags, cas = unpack_cas(stored)
                size += len(value)
                if large and len(value) >= large:
                    parts.append(b"VALUE %b %d %d %d\r\n" % (key, flags, len(value), cas)
                                 if with_cas else b"VALUE %b %d %d\r\n" % (key, flags, len(value)))
                    apart.append((len(parts), value))
                    parts.append(b"\r\n")
                elif with_cas:
                    parts.append(b"VALUE %b %d %d %d\r\n%b\r\n"
                                 % (key, flags, len(value), cas, value))
                else:
                    parts.append(b"VALUE %b %d %d\r\n%b\r\n" % (key, flags, len(value), value))
            if size > self._answer_max:
                out.append(ANSWER_TOO_BIG)
                continue
            parts.append(END)
            if not apart:
                out.append(b"".join(parts))
                continue
            pieces = pieces or []
            at = 0
            for index, value in apart:
                out.append(b"".join(parts[at:index]))
                pieces.append(b"".join(out))
                pieces.append(value)
                out, at = [], index
            out.append(b"".join(parts[at:]))
        self.hits, self.misses = hits, misses
        if pieces is None:
            return b"".join(out)
        pieces.append(b"".join(out))
        return pieces


def take_gets(buf: bytearray, pos: int, table: RouteTable, max_line: int, max_keys: int,
              answer_max: int) -> tuple[int, GetRun | None]:
    """Route every complete plain get/gets line from ``buf[pos:]``: (where they end, the run),
    or (pos, None) when the first line is not one (the general parser takes it)."""
    run = GetRun(answer_max)
    placed: dict[tuple[int, bytes], int] = {}
    batches: dict[tuple[int, int], int] = {}
    slots = run.slots
    end = len(buf)
    while pos < end:
        nl = buf.find(b"\n", pos, pos + max_line + 2)
        if nl < 0:
            break
        match = _PLAIN_GET.fullmatch(buf, pos, nl + 1)
        if match is None:
            break
        keys = match[2][1:].split(b" ")
        if len(keys) > max_keys:
            break  # the general path: it counts distinct keys, and refuses too many
        command_slots = []
        for key in keys:
            group, rest, node = table.place(key)
            slot = placed.get((group, rest))
            if slot is None:
                slot = placed[group, rest] = len(slots)
                if node < 0:
                    slots.append([group, node, rest, -1, 0])
                else:
                    batch = batches.get((node, group))
                    if batch is None:
                        batch = batches[node, group] = len(run._bodies)
                        run._bodies.append((node, group, [], []))
                    _, _, members, member_slots = run._bodies[batch]
                    slots.append([group, node, rest, batch, len(members)])
                    members.append(rest)
                    member_slots.append(slot)
            command_slots.append(slot)
        run.commands.append((command_slots, keys, match[1] == b"s"))
        pos = nl + 1
    if not run.commands:
        return pos, None
    run.entries = [None] * len(slots)
    run.nslots = len(slots)
    run.ncommands = len(run.commands)
    run.batches = [(node, _GET_MANY + table._groups[group]
                    + b"".join(len_field(Tag.KEYS, k) for k in keys))
                   for node, group, keys, _ in run._bodies]
    run.left = len(run.batches)
    return pos, run


__all__ = ["ANSWER_TOO_BIG", "COMPILED", "GetRun", "RouteTable", "take_gets"]
