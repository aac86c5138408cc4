"""Both twins of the adaptive core, and their whole state in one form, for the tests that hold
them to each other.

``TWINS`` names the pure-Python core (storage_node/cores/adaptive.py) and the compiled one
(storage_node/cores/_adaptive.c); a test parametrized over them runs on both. The compiled
twin must be built (`make install` builds it): its absence fails, never skips.

``snapshot(core)`` is the state in the pure core's terms: each live entry's state (fresh,
read, main0..main3), value and deadline; both queues' places in order, stale ones included;
the stale counts; the byte and entry counts, the small queue's target and the upkeep
countdown; the ghosts' table and epoch counts; the expiry bands in order. The compiled core
reports it itself (``_snapshot()``); the pure core's is read from its attributes here. A
NaN deadline (a ttl of NaN) reads as the string "nan", so that equal states compare equal.
"""

from __future__ import annotations

import importlib

import pytest

from storage_node.cores.adaptive import AdaptiveCore as PureAdaptiveCore
from storage_node.cores.base import Expiring


def compiled_class() -> type:
    try:
        return importlib.import_module("storage_node.cores._adaptive").AdaptiveCore
    except ImportError as exc:  # the build compiles it; its absence is a failure here
        pytest.fail(f"storage_node.cores._adaptive is not built ({exc}): run `make install`")


def twin(name: str) -> type:
    return compiled_class() if name == "compiled" else PureAdaptiveCore


TWINS = ["compiled", "pure"]


def snapshot(core) -> dict:
    state = core._snapshot() if not isinstance(core, PureAdaptiveCore) else _pure_snapshot(core)
    state["entries"] = {key: (where, value, _nan(deadline))
                        for key, (where, value, deadline) in state["entries"].items()}
    state["expiry"] = [(band, [(key, _nan(deadline)) for key, deadline in dues])
                       for band, dues in state["expiry"]]
    return state


def _nan(deadline):
    return "nan" if deadline != deadline else deadline


def _pure_snapshot(core) -> dict:
    states = [("fresh", core._fresh), ("read", core._read),
              *((f"main{count}", level) for count, level in enumerate(core._counts))]
    ghosts = core._ghosts
    return {
        "entries": {key: (state, getattr(entry, "value", entry),
                          float(entry) if type(entry) is Expiring else None)
                    for state, level in states for key, entry in level.items()},
        "small_order": list(core._small_order),
        "main_order": list(core._main_order),
        "stale": (dict(core._stale[0]), dict(core._stale[1])),
        "small_bytes": core._small_bytes,
        "target": float(core._target),
        "count": core._entries,
        "until_upkeep": core._until_upkeep,
        "ghosts": {
            "table": ghosts._table.tobytes(),
            "epoch_length": ghosts._epoch_length,
            "left": ghosts._left,
            "epoch": ghosts._epoch,
            "new": list(ghosts._new),
            "per_epoch": (list(ghosts._per_epoch[0]), list(ghosts._per_epoch[1])),
        },
        "expiry": [(band, list(zip(keys, deadlines)))
                   for band, (keys, deadlines) in core._expiry._bands.items()],
        "expiry_size": core._expiry.size,
    }


def observable(core) -> tuple:
    """What a user of the core sees without a get (which would count as a read)."""
    return len(core), core.nbytes, core.evictions, core.expirations
