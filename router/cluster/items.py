"""What the router's read and write paths pass around: a cached item, and a group as served."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from router.cluster.hotkeys import HotKeys
from router.cluster.loads import LoadLimiter
from router.cluster.nearcache import NearCache


class Item(NamedTuple):
    value: bytes
    flags: int = 0
    cas: int = 0  # the node's CAS unique for this copy (0: not known, e.g. straight from a source)
    # False when the owning node did not have it (read through, warmed up): a miss to count
    hit: bool = True
    ttl: float | None = None  # seconds the copy had left when read (None: none, or not known)
    # An answer past its ttl, from the node's grace: "revalidate" (stale_while_revalidate:
    # a refresh runs behind it) or "if_error" (stale_if_error: its load failed)
    stale: str | None = None
    # memcached's item bits of a meta get's answer (shared/ringcache.proto's Meta: ITEM_*)
    meta: int = 0
    near: bool = False  # answered from the router's near cache (router/cluster/nearcache.py)


@dataclass
class Group:
    """A group as the router serves it: its spec and its live source (or None)."""

    spec: object  # router.topology.GroupSpec
    source: object | None  # router.sources.base.Source
    loads: LoadLimiter | None = None  # bounds the source's loads (router/cluster/loads.py)
    hot: HotKeys | None = None  # its sampled gets (router/cluster/hotkeys.py)
    near: NearCache | None = None  # its hot keys' entries, when near_cache is configured

    @property
    def name(self) -> str:
        return self.spec.name
