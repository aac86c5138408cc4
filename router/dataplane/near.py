"""The data plane's hot keys: sampling a run's keys for the trackers, and answering the
keys a group's near cache holds without a node hop.

A run's batches of a group with a near cache are looked up there first
(router/cluster/nearcache.py): a batch whose every key is held is filled at once and never
sent; one with some keys held is sent for the others only, and the node's answer is
spliced with what was held, in the order the run fills. Every answer of such a batch is
offered to the near cache, which keeps the hot keys' entries. Groups without a near cache
are sent as serve.py sends them.
"""

from __future__ import annotations

from typing import NamedTuple

from router.cluster.hotkeys import Sampler
from shared import ringcache_pb2 as pb
from shared.wire import Tag, encode_request, len_field

_GET_MANY = encode_request(0, pb.GET_MANY)


def sample(sampler: Sampler, run, groups: list) -> None:
    """Hand the keys the sampler picks among ``run``'s to their groups' trackers."""
    n = run.nslots
    for _ in range(sampler.due(n)):
        group, key = run.slot(sampler.pick(n))
        groups[group].hot.add(key)


class _Answer(NamedTuple):
    """A batch's answer as the run is filled with it: held entries and the node's, spliced."""

    status: int
    values: list


class NearWaiter:
    """Waits for a node's answer to the keys of a batch its near cache did not hold."""

    __slots__ = ("inner", "near", "keys", "found", "missing", "epoch")

    def __init__(self, inner, near, keys: list, found: list, missing: list):
        self.inner = inner  # the run's waiter for this batch (serve.py's _BatchWaiter)
        self.near = near
        self.keys, self.found, self.missing = keys, found, missing
        self.epoch = near.epoch  # a write dropped after this makes the answer too old to keep

    def callback(self, response) -> None:
        if response.status != pb.OK or len(response.values) != len(self.missing):
            self.inner.callback(response)  # the run's waiter says what went wrong
            return
        near, keys, hot, epoch = self.near, self.keys, self.near.hot, self.epoch
        values = response.values
        if len(self.missing) == len(keys):  # nothing was held: the node's answer as it is
            for key, stored in zip(keys, values):
                if key in hot:
                    near.offer(key, stored, epoch)
            self.inner.callback(response)
            return
        merged = self.found
        for i, stored in zip(self.missing, values):
            merged[i] = stored
            if keys[i] in hot:
                near.offer(keys[i], stored, epoch)
        self.inner.callback(_Answer(pb.OK, merged))

    def errback(self, error) -> None:
        self.inner.errback(error)


def send_batches(state, router, waiter, unavailable) -> None:
    """Send ``state.run``'s batches, answering from the near caches what they hold.
    ``waiter(state, batch, router)`` makes the run's waiter of a batch (serve.py's
    _BatchWaiter); ``unavailable(state, batch, client)`` fails a batch whose node cannot
    be sent to."""
    run, routes = state.run, state.routes
    clients, groups = routes.clients, routes.groups
    now = router.reactor.seconds()
    sizes = run.batch_sizes()
    for batch, (node, body) in enumerate(run.batches):
        waits = waiter(state, batch, router)
        near = groups[sizes[batch][0]].near
        if near is not None:
            keys = run.batch_keys(batch)
            found = [near.get(key, now) for key in keys]
            missing = [i for i, stored in enumerate(found) if stored is None]
            if not missing:
                run.fill(batch, found)
                continue
            if len(missing) < len(keys):
                body = _body(groups[sizes[batch][0]].name, [keys[i] for i in missing])
            waits = NearWaiter(waits, near, keys, found, missing)
        if not clients[node].send_prepared(body, waits):
            unavailable(state, batch, clients[node])


def _body(group: str, keys: list) -> bytes:
    """A GET_MANY request body (no id: the client adds it) for ``keys`` of ``group``."""
    return (_GET_MANY + len_field(Tag.GROUP, group.encode())
            + b"".join(len_field(Tag.KEYS, key) for key in keys))
