"""The node's group table: one eviction core per group under one memory cap, and CONFIGURE."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from dataclasses import dataclass

from storage_node.cores import PolicyError, load_core
from storage_node.cores.walk import move_entries
from storage_node.grace import with_grace

# A group seen in a request before any CONFIGURE gets this policy and (at most) this
# budget, so a node started by hand answers at once; the router always configures.
DEFAULT_POLICY = "adaptive"  # the best built-in core on bench/eviction.py's traces
DEFAULT_GROUP_BYTES = 64 * 1024 * 1024


class ConfigError(ValueError):
    """A CONFIGURE the node refuses; the configuration in force is unchanged."""


@dataclass(frozen=True)
class GroupSpec:
    """One group as configured: its name, policy and budget on this node, and its grace
    (seconds an entry past its ttl is still answered, storage_node/grace.py)."""

    name: str
    policy: str
    max_bytes: int
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0


class Group:
    """A live group: its core, its effective budget and the counters the core does not keep."""

    __slots__ = ("spec", "budget", "core", "touch", "ttl_left", "flush_at", "hits", "misses",
                 "sets")

    def __init__(self, spec: GroupSpec, budget: int, core):
        self.spec = spec
        self.budget = budget  # may be below spec.max_bytes when max_memory is short
        self.core = core
        # User cores may lack touch(); re-storing the value with the new ttl is the
        # same thing seen from outside.
        self.touch = getattr(core, "touch", None) or self._touch_by_set
        # Seconds an entry has left (None: no expiry), for the writes that keep an entry's
        # ttl (incr, append). A core that cannot tell gives its entries no expiry then.
        self.ttl_left = getattr(core, "ttl_left", None) or _no_expiry
        self.flush_at: float | None = None  # a delayed flush_all, on the node's clock
        self.hits = self.misses = self.sets = 0

    def _touch_by_set(self, key: bytes, ttl: float | None) -> bool:
        stored = self.core.get(key)
        if stored is None:
            return False
        self.core.set(key, stored, ttl)
        return True

    def flush_due(self, now: float) -> bool:
        """Apply a delayed flush whose time has come: whether one was."""
        if self.flush_at is not None and now >= self.flush_at:
            self.flush_at = None
            self.core.clear()
            return True
        return False


class GroupTable:
    """The groups this node holds, by name; ``configure`` swaps in a whole new set."""

    def __init__(self, max_memory: int, clock: Callable[[], float], log: Callable[[str], None],
                 allowed_policies: Collection[str] = ()):
        self.max_memory = max_memory
        self.clock = clock
        self.log = log
        # The python:module:Class policies this node may import: from its own command
        # line, never from a peer (a CONFIGURE naming any other is refused).
        self.allowed_policies = frozenset(allowed_policies)
        self.configured = False  # after the first CONFIGURE, unknown groups are errors
        self.groups: dict[str, Group] = {}

    def get(self, name: str) -> Group | None:
        """The group named ``name``; before the first CONFIGURE, one made with the defaults."""
        group = self.groups.get(name)
        if group is None and not self.configured and name:
            specs = [g.spec for g in self.groups.values()]
            self.configure([*specs, GroupSpec(name, DEFAULT_POLICY,
                                              min(DEFAULT_GROUP_BYTES, self.max_memory))])
            group = self.groups[name]
        return group

    def __iter__(self):
        return iter(self.groups.values())

    def configure(self, specs: list[GroupSpec]) -> None:
        """Hold exactly ``specs``; raises ConfigError, changing nothing, if any is invalid.

        A group whose policy and effective budget are unchanged keeps its core and data.
        Any other group gets a new core, and the old core's entries move into it, coldest
        first, so that a smaller budget or another policy evicts down to the budget in the
        new policy's order (a core that cannot list its entries, see cores/walk.py, leaves
        the group empty). Groups not in ``specs`` go. Whatever is dropped is logged.  An
        empty ``specs`` is refused: the router always sends its topology's groups, and a
        topology has at least its default group.
        """
        _check(specs)
        total = sum(spec.max_bytes for spec in specs)
        groups = {}
        # Every new core is built before any is swapped in, so a bad policy late in the
        # list leaves the configuration in force untouched.
        for spec in specs:
            budget = self.budget(spec, total)
            old = self.groups.get(spec.name)
            if old is not None and old.spec.policy == spec.policy and old.budget == budget and (
                    _grace(old.spec) == _grace(spec)):
                old.spec = spec
                groups[spec.name] = old
            else:
                groups[spec.name] = self.new_group(spec, budget)
        self._move_or_drop(groups)
        self.groups = groups
        if total > self.max_memory:
            self.log(
                f"group budgets sum to {total} bytes, above max_memory {self.max_memory}: "
                f"scaling every group to {self.max_memory / total:.1%} of its max_bytes"
            )

    def _move_or_drop(self, new: dict[str, Group]) -> None:
        for name, old in self.groups.items():
            kept = new.get(name)
            if kept is old:
                continue
            items = len(old.core)
            held = f"it held {items} {'entry' if items == 1 else 'entries'}, {old.core.nbytes} bytes"
            if kept is None:
                self.log(f"dropping group {name!r} ({held}): it is not in the new configuration")
                continue
            old.flush_due(self.clock())
            moved = move_entries(old.core, kept.core)
            change = (f"policy {old.spec.policy} -> {kept.spec.policy}, budget {old.budget} -> "
                      f"{kept.budget} bytes")
            if moved is None:
                self.log(f"emptying group {name!r} ({held}): {change}; its core cannot list "
                         f"its entries for the new one")
            else:
                left = items - len(kept.core)
                self.log(f"moving group {name!r} ({held}) to a new core: {change}; "
                         f"{len(kept.core)} kept" + (f", {left} evicted to fit" if left else ""))
            kept.hits, kept.misses, kept.sets = old.hits, old.misses, old.sets

    def budget(self, spec: GroupSpec, total: int) -> int:
        """The bytes the group's core may hold: its max_bytes, scaled down if all
        groups' sum ``total`` exceeds max_memory."""
        if total <= self.max_memory:
            return spec.max_bytes
        # One factor for every group keeps their proportions, and rounding down keeps
        # the sum of budgets (so of bytes held) within max_memory.
        return spec.max_bytes * self.max_memory // total

    def new_group(self, spec: GroupSpec, budget: int) -> Group:
        """A group with a new, empty core; ConfigError if its policy cannot be had."""
        core = with_grace(self._new_core(spec, budget), spec.stale_while_revalidate,
                          spec.stale_if_error)
        return Group(spec, budget, core)

    def _new_core(self, spec: GroupSpec, budget: int):
        try:
            core_class = load_core(spec.policy, self.allowed_policies)
            # The measured memory an entry takes beyond its bytes, charged per entry so that
            # the node's RSS follows max_memory (built-in cores; a user core that takes the
            # keyword gets its own ENTRY_OVERHEAD, if it has one).
            overhead = getattr(core_class, "ENTRY_OVERHEAD", 0)
            if overhead and _takes_entry_overhead(core_class):
                return core_class(budget, self.clock, entry_overhead=overhead)
            return core_class(budget, self.clock)
        except PolicyError as exc:  # its text names the policy already
            raise ConfigError(f"group {spec.name!r}: {exc}") from None
        except Exception as exc:  # whatever a user core's module or constructor raises
            raise ConfigError(f"group {spec.name!r}: policy {spec.policy!r}: {exc!r}") from None


def _check(specs: list[GroupSpec]) -> None:
    if not specs:
        raise ConfigError("no group named (a topology always has its default group)")
    names = set()
    for spec in specs:
        if not spec.name:
            raise ConfigError("a group has no name")
        if spec.name in names:
            raise ConfigError(f"group {spec.name!r} is listed twice")
        if spec.max_bytes <= 0:
            raise ConfigError(f"group {spec.name!r}: max_bytes must be positive")
        for window in ("stale_while_revalidate", "stale_if_error"):
            seconds = getattr(spec, window)
            if not 0 <= seconds < float("inf"):
                raise ConfigError(f"group {spec.name!r}: {window} must be a duration, "
                                  f"got {seconds!r}")
        names.add(spec.name)


def _grace(spec: GroupSpec) -> tuple[float, float]:
    return spec.stale_while_revalidate, spec.stale_if_error


def _no_expiry(key: bytes) -> None:
    return None


def _takes_entry_overhead(core_class) -> bool:
    try:
        return "entry_overhead" in inspect.signature(core_class).parameters
    except (TypeError, ValueError):  # a callable whose signature cannot be read
        return False
