"""Eviction cores: the registry of built-in policies and the loader for `policy:` names.

``adaptive`` is the compiled storage_node.cores._adaptive when it is built, else its
pure-Python twin storage_node.cores.adaptive (also forced by RINGCACHE_PURE_PYTHON=1);
both keep the same entries, evict the same ones and charge the same bytes.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Collection

from storage_node.cores.adaptive import AdaptiveCore as PureAdaptiveCore
from storage_node.cores.lfu import LFUCore
from storage_node.cores.lru import LRUCore

AdaptiveCore: type = PureAdaptiveCore
if not os.environ.get("RINGCACHE_PURE_PYTHON"):
    try:
        from storage_node.cores._adaptive import AdaptiveCore
    except ImportError:
        pass
COMPILED = AdaptiveCore is not PureAdaptiveCore

CORES: dict[str, type] = {
    "adaptive": AdaptiveCore,
    "lru": LRUCore,
    "lfu": LFUCore,
}


class PolicyError(ValueError):
    """A `policy:` that names no core."""


def load_core(policy: str, allowed: Collection[str] = ()) -> type:
    """The core class for a policy name: a key of CORES, or a ``python:module:Class`` that
    ``allowed`` names. The node fills ``allowed`` from its own command line only: a name a
    peer sends is never imported just because it was sent."""
    if policy in CORES:
        return CORES[policy]
    if policy.startswith("python:"):
        if policy not in allowed:
            raise PolicyError(f"policy {policy!r} is not allowed on this node "
                              f"(start it with --allow-policy {policy})")
        spec = policy[len("python:"):]
        module_name, sep, attr = spec.partition(":")
        if not sep or not module_name or not attr:
            raise PolicyError(f"policy {policy!r}: expected python:module:Class")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a user's module may fail at import in any way
            raise PolicyError(
                f"policy {policy!r}: cannot import {module_name}: {type(exc).__name__}: {exc}"
            ) from None
        try:
            cls = getattr(module, attr)
        except AttributeError:
            raise PolicyError(f"policy {policy!r}: {module_name} has no {attr}") from None
        if not callable(cls):
            raise PolicyError(f"policy {policy!r}: {attr} is not a class")
        return cls
    known = ", ".join(sorted(CORES))
    raise PolicyError(f"unknown policy {policy!r} (known: {known}, or python:module:Class)")
