"""What the router's read and write paths pass around: a cached item, and a group as served."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from router.cluster.loads import LoadLimiter


class Item(NamedTuple):
    value: bytes
    flags: int = 0
    cas: int = 0  # the node's CAS unique for this copy (0: not known, e.g. straight from a source)
    # False when the owning node did not have it (read through, warmed up): a miss to count
    hit: bool = True


@dataclass
class Group:
    """A group as the router serves it: its spec and its live source (or None)."""

    spec: object  # router.topology.GroupSpec
    source: object | None  # router.sources.base.Source
    loads: LoadLimiter | None = None  # bounds the source's loads (router/cluster/loads.py)

    @property
    def name(self) -> str:
        return self.spec.name
