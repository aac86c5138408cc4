"""The data plane's hot keys: sampling a run's keys for the trackers, and answering the
keys a group's near cache holds without a node hop.

A run's batches of a group with a near cache are looked up there first
(router/cluster/nearcache.py): a batch whose every key is held is filled at once and never
sent (a single get of a hot key: no node hop); any other is sent whole, and the answers of
its admitted keys not held are offered to the near cache. Groups without a near cache are sent
as serve.py sends them.
"""

from __future__ import annotations

from router.cluster.hotkeys import Sampler
from shared import ringcache_pb2 as pb


def sample(sampler: Sampler, run, groups: list) -> None:
    """Hand the keys of ``run`` the sampler's countdown lands on to their groups' trackers
    (the caller saw it land within the run: ``sampler.left <= run.nslots``)."""
    n = run.nslots
    at = sampler.left - 1  # the slot on which the countdown reaches zero
    while at < n:
        group, key = run.slot(at)
        groups[group].hot.add(key)
        at += sampler.gap()
    sampler.left = at - n + 1


class NearWaiter:
    """Waits for a node's answer to a batch its near cache did not wholly hold, and offers
    the answers of the keys it admits and does not hold to the near cache."""

    __slots__ = ("inner", "near", "keys", "epoch")

    def __init__(self, inner, near, keys: list):
        self.inner = inner  # the run's waiter for this batch (serve.py's _BatchWaiter)
        self.near = near
        self.keys = keys
        self.epoch = near.epoch  # a write dropped after this makes the answer too old to keep

    def callback(self, response) -> None:
        values = response.values
        if response.status == pb.OK and len(values) == len(self.keys):
            near, admits, epoch = self.near, self.near.admits, self.epoch
            now = near.clock()
            for key, stored in zip(self.keys, values):
                if key in admits and not near.holds(key, now):
                    near.offer(key, stored, epoch)
        self.inner.callback(response)

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
        near = groups[sizes[batch][0]].near
        if near is None:
            waits = waiter(state, batch, router)
        else:
            keys = run.batch_keys(batch)
            found = near.every(keys, now)
            if found is not None:
                near.hits += len(keys)
                run.fill(batch, found)
                continue
            # A batch that needs its node anyway asks it for every key: one key more in a
            # GET_MANY costs the node little, and the router then fills the run straight
            # from the node's answer.
            waits = NearWaiter(waiter(state, batch, router), near, keys)
        if not clients[node].send_prepared(body, waits):
            unavailable(state, batch, clients[node])

