"""The data plane's hot path: a client read's plain gets served a batch at a time.

One client read becomes one GetRun (router/dataplane/getrun.py: routed, deduplicated and encoded in
one call), one GET_MANY per node and group, one waiter per node answer, and one rendered
answer for all the read's commands. No Deferred, protobuf message or Python object per key
on this path. What it cannot answer from the nodes' entries -- a miss (read-through,
warm-up, negative entries), a node that failed or timed out, a group with replicas -- is
handed key by key to the router's slow path (router/cluster/router.py), and the run is rendered once
every key has its answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from router.cluster.errors import AnswerTooLarge, NodeError, NodeUnavailable
from router.dataplane import near
from router.dataplane.getrun import RouteTable
from shared import entry
from shared import ringcache_pb2 as pb
from shared.net import UNCOPIED


@dataclass(frozen=True)
class Routes:
    """A ring and its groups as the data plane routes them: a snapshot taken per topology,
    so a run routed before a reload finishes with the clients and groups it began with."""

    table: RouteTable
    clients: list  # NodeClient per node index of the table
    groups: list  # router.cluster.items.Group per group index
    near: bool = False  # whether any group has a near cache (router/dataplane/near.py)


def gather(ds: list, results) -> Deferred:
    """A Deferred firing with ``results`` once every one of ``ds`` (which never fail) has
    fired: DeferredList without its per-result bookkeeping."""
    left = len(ds)
    if left == 0:
        return succeed(results)
    done = Deferred()

    def one(_):
        nonlocal left
        left -= 1
        if left == 0:
            done.callback(results)

    for d in ds:
        d.addBoth(one)
    return done


class InFlight:
    """One GetRun in flight: its answer slot, and why a failed batch failed."""

    __slots__ = ("run", "routes", "done", "token", "error_line", "failures", "loaded", "conn")

    def __init__(self, run, routes: Routes, done, token, error_line, conn):
        self.run = run
        self.routes = routes
        self.conn = conn  # the client connection, by which the slow path queues loads
        # done(answer bytes, run, token, loaded): the client's answer to every command of
        # the run, and how many of its keys were answered but not cached (misses).
        self.done, self.token = done, token
        self.error_line = error_line  # a Failure in the client protocol's words
        self.failures: dict[int, object] = {}  # batch -> Failure, or the Response refused
        self.loaded = 0


class _BatchWaiter:
    """Waits for one node's answer to one GET_MANY of a run (NodeClient calls it)."""

    __slots__ = ("state", "batch", "router")

    def __init__(self, state: InFlight, batch: int, router):
        self.state, self.batch, self.router = state, batch, router

    def callback(self, response) -> None:
        state = self.state
        run = state.run
        if response.status == pb.OK:
            try:
                left = run.fill(self.batch, response.values)
            except ValueError:  # not one answer per key: a node we do not understand
                state.failures[self.batch] = response
                left = run.fail(self.batch)
        else:
            state.failures[self.batch] = response
            left = run.fail(self.batch)
        if left == 0:
            finish(state, self.router)

    def errback(self, error) -> None:
        state = self.state
        state.failures[self.batch] = error if isinstance(error, Failure) else Failure(error)
        if state.run.fail(self.batch) == 0:
            finish(state, self.router)


def serve(router, run, routes: Routes, done, token, error_line, conn=None) -> None:
    """Send ``run``'s batches to their nodes; ``done(answer, run, token, loaded)`` is called
    once every key has its answer. ``error_line(failure)`` words a key's failure; ``conn``
    is the client connection the run is for (router/cluster/reads.py)."""
    state = InFlight(run, routes, done, token, error_line, conn)
    sampler = router.sampler
    if sampler.left > run.nslots:
        sampler.left -= run.nslots  # most runs: none of their keys is sampled
    else:
        near.sample(sampler, run, routes.groups)
    if routes.near:
        near.send_batches(state, router, _BatchWaiter, _unavailable)
    else:
        clients = routes.clients
        for batch, (node, body) in enumerate(run.batches):
            if not clients[node].send_prepared(body, _BatchWaiter(state, batch, router)):
                _unavailable(state, batch, clients[node])
    if run.left == 0:
        finish(state, router)


def _unavailable(state: InFlight, batch: int, client) -> None:
    state.failures[batch] = Failure(NodeUnavailable(client.name, client.down_reason))
    state.run.fail(batch)


def finish(state: InFlight, router) -> None:
    """Every batch is in: answer what the nodes answered, and the rest by the slow path."""
    run = state.run
    unresolved = run.unresolved()
    _count_hits(router.stats.group_hits, run, unresolved, state.routes.groups)
    if not unresolved:
        _render(state)
        return
    waiting = []
    for slot, group, node, batch, key, stored in unresolved:
        try:
            result = _slow(state, router, group, node, batch, key, stored)
        except Exception:
            result = Failure()
        if isinstance(result, Deferred):
            waiting.append(result.addBoth(_resolved, state, slot))
        else:
            _resolved(result, state, slot)
    gather(waiting, state).addCallback(_render)


def _count_hits(hits, run, unresolved: list, groups: list) -> None:
    """Per group, the keys the nodes answered: each batch's keys less those unresolved."""
    for group, n in run.batch_sizes():
        hits[groups[group].name] += n
    for _, group, _, batch, _, _ in unresolved:
        if batch >= 0:
            hits[groups[group].name] -= 1


def _slow(state: InFlight, router, group: int, node: int, batch: int, key: bytes, stored):
    """One key the fast path could not answer: an Item, None, a Deferred of one, or raises."""
    g, conn = state.routes.groups[group], state.conn
    if node < 0:  # a group with replicas: the router reads it copy by copy
        return router.read_near(g, key, conn)
    client = state.routes.clients[node]
    if stored is not None:  # a miss, or a cached absence
        return router.missed(g, key, client, stored == entry.NEGATIVE, conn)
    failure = state.failures[batch]
    if isinstance(failure, Failure):
        if failure.check(NodeUnavailable):
            return router.read_failed(failure, g, key, [client], 0, conn)
        return failure
    # The node answered the batch with a status: an old node without GET_MANY is asked
    # key by key; answers too big for one frame are refused, as memcached refuses a get
    # answer it cannot hold; any other status is the node's error.
    if failure.status == pb.UNKNOWN_OP or failure.status == pb.OK:
        return router.read(g, key, [client], conn)
    if failure.status == pb.TOO_LARGE:
        raise AnswerTooLarge(failure.error)
    raise NodeError(failure.error or pb.Status.Name(failure.status))


def _resolved(result, state: InFlight, slot: int) -> None:
    if isinstance(result, Failure):
        state.run.resolve_error(slot, state.error_line(result))
    elif result is None:
        state.run.resolve(slot, b"")
    else:
        if not result.hit:
            state.loaded += 1
        state.run.resolve(slot, entry.pack(result.value, result.flags, result.cas))


def _render(state: InFlight) -> None:
    state.done(state.run.render(UNCOPIED), state.run, state.token, state.loaded)
