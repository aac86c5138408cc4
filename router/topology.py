"""Load topology.yaml into frozen dataclasses, refusing anything unknown, mistyped or inconsistent."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml

from shared.units import parse_duration, parse_size


class TopologyError(ValueError):
    """A topology that cannot be used; the message is ``"<file>: <key.path>: <problem>"``."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        """``HOST:PORT`` or ``[IPv6]:PORT``; raises ValueError saying what is wrong."""
        if not isinstance(text, str):
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        host, sep, port = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host or any(c.isspace() or c in "[]" for c in host):
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"port must be a number from 1 to 65535, got {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterConfig:
    memcache: Address = Address("127.0.0.1", 11211)
    http: Address = Address("127.0.0.1", 8080)
    vnodes: int = 160
    timeout: float = 0.5  # seconds, per node request
    default_group: str
    warmup: float = 0.0
    item_size_max: int = 1 << 20


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    address: Address
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class SourceSpec:
    kind: str  # python | redis | sql | http
    target: str  # the value of the kind's key: module:function, a URL
    options: Mapping[str, Any]  # the block's other keys (key, query), timeout in seconds


@dataclass(frozen=True, slots=True)
class GroupSpec:
    name: str
    policy: str = "adaptive"  # storage_node/node.py DEFAULT_POLICY, the measured best core
    max_bytes: int = 64 << 20
    ttl: float | None = None
    negative_ttl: float | None = None
    replicas: int = 1
    source: SourceSpec | None = None


@dataclass(frozen=True, slots=True)
class Topology:
    router: RouterConfig
    nodes: tuple[NodeSpec, ...]
    groups: Mapping[str, GroupSpec]
    path: str
    base_dir: str  # directory of the file; python sources import from it
    _prefixes: Mapping[bytes, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_prefixes", {name.encode(): name for name in self.groups})

    def group_for(self, memcache_key: bytes) -> tuple[str, bytes]:
        """``GROUP:KEY`` goes to GROUP when that group exists; any other key, whole, to the default."""
        prefix, sep, rest = memcache_key.partition(b":")
        group = self._prefixes.get(prefix) if sep else None
        if group is None:
            return self.router.default_group, memcache_key
        return group, rest


_ROUTER_KEYS = ("memcache", "http", "vnodes", "timeout", "default_group", "warmup", "item_size_max")
_NODE_KEYS = ("name", "address", "weight")
_GROUP_KEYS = ("policy", "max_bytes", "ttl", "negative_ttl", "replicas", "source")
_SOURCE_KEYS = {
    "python": ("python", "timeout"),
    "redis": ("redis", "key", "timeout"),
    "sql": ("sql", "query", "timeout"),
    "http": ("http", "timeout"),
}
_POLICIES = ("adaptive", "lru", "lfu")
_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_PYTHON_POLICY = re.compile(rf"python:{_DOTTED}:[A-Za-z_]\w*")
_PYTHON_SOURCE = re.compile(rf"{_DOTTED}:[A-Za-z_]\w*")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://.*")


# /v1/where/{group}/{key} would shadow a group named "where".
RESERVED_GROUP_NAMES = frozenset({"where"})


class _Problem(Exception):
    """A problem at a key path; parse_topology adds the file name."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}" if where else problem)


def load_topology(path: str | os.PathLike[str]) -> Topology:
    """Read and validate the topology file at ``path``."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(f"{path}: cannot read: {exc}") from None
    return parse_topology_text(text, path)


def parse_topology_text(text: str, path: str) -> Topology:
    """Validate a topology YAML document; ``path`` names it in errors and sets base_dir."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        raise TopologyError(f"{path}: {where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: {exc}") from None
    return parse_topology(data, path)


def parse_topology(data: Any, path: str) -> Topology:
    """Validate an already-parsed YAML document; ``path`` names it in errors and sets base_dir."""
    try:
        return _topology(data, path)
    except _Problem as exc:
        raise TopologyError(f"{path}: {exc}") from None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping instead of keeping the last."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float)):
                continue  # SafeLoader itself refuses unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _topology(data: Any, path: str) -> Topology:
    top = _mapping(data, "", ("router", "nodes", "groups"))
    router_block = _mapping(_required(top, "router", ""), "router", _ROUTER_KEYS)
    nodes = _nodes(_required(top, "nodes", ""))
    groups_block = _required(top, "groups", "")
    if not isinstance(groups_block, dict):
        raise _Problem("groups", f"expected a mapping of group names, got {_kind(groups_block)}")
    groups = {}
    for name, block in groups_block.items():
        _check_name(name, f"groups.{name}", "group name", forbid=":")
        if name in RESERVED_GROUP_NAMES:
            raise _Problem(f"groups.{name}", f"{name!r} is reserved by the HTTP API "
                           f"(/v1/{name}/...); choose another group name")
        groups[name] = _group(name, block, len(nodes))
    router = _router(router_block, groups)
    return Topology(
        router=router,
        nodes=nodes,
        groups=MappingProxyType(groups),
        path=path,
        base_dir=os.path.dirname(os.path.abspath(path)),
    )


def _router(block: dict, groups: Mapping[str, GroupSpec]) -> RouterConfig:
    default_group = _required(block, "default_group", "router")
    if not isinstance(default_group, str) or default_group not in groups:
        known = ", ".join(groups) or "none"
        raise _Problem("router.default_group", f"{default_group!r} is not a defined group (groups: {known})")
    kwargs: dict[str, Any] = {"default_group": default_group}
    for key in ("memcache", "http"):
        if key in block:
            kwargs[key] = _convert(Address.parse, block[key], f"router.{key}")
    if "vnodes" in block:
        kwargs["vnodes"] = _positive_int(block["vnodes"], "router.vnodes")
    if "timeout" in block:
        kwargs["timeout"] = _positive(parse_duration, block["timeout"], "router.timeout")
    if "warmup" in block:
        kwargs["warmup"] = _convert(parse_duration, block["warmup"], "router.warmup")
    if "item_size_max" in block:
        kwargs["item_size_max"] = _positive(parse_size, block["item_size_max"], "router.item_size_max")
    return RouterConfig(**kwargs)


def _nodes(items: Any) -> tuple[NodeSpec, ...]:
    if not isinstance(items, list) or not items:
        raise _Problem("nodes", f"expected a list of at least one node, got {_kind(items)}")
    nodes: list[NodeSpec] = []
    names: dict[str, int] = {}
    addresses: dict[Address, int] = {}
    for i, item in enumerate(items):
        where = f"nodes[{i}]"
        block = _mapping(item, where, _NODE_KEYS)
        name = _required(block, "name", where)
        _check_name(name, f"{where}.name", "node name")
        if name in names:
            raise _Problem(f"{where}.name", f"duplicate node name {name!r} (also nodes[{names[name]}])")
        address = _convert(Address.parse, _required(block, "address", where), f"{where}.address")
        if address in addresses:
            raise _Problem(
                f"{where}.address", f"duplicate node address {str(address)!r} (also nodes[{addresses[address]}])"
            )
        weight = block.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
            math.isfinite(weight) and weight > 0
        ):
            raise _Problem(f"{where}.weight", f"expected a positive number, got {weight!r}")
        names[name], addresses[address] = i, i
        nodes.append(NodeSpec(name, address, float(weight)))
    return tuple(nodes)


def _group(name: str, block: Any, node_count: int) -> GroupSpec:
    where = f"groups.{name}"
    block = _mapping({} if block is None else block, where, _GROUP_KEYS)
    kwargs: dict[str, Any] = {"name": name}
    if "policy" in block:
        policy = block["policy"]
        if policy not in _POLICIES and not (isinstance(policy, str) and _PYTHON_POLICY.fullmatch(policy)):
            raise _Problem(f"{where}.policy", f"expected adaptive, lru, lfu or python:module:Class, got {policy!r}")
        kwargs["policy"] = policy
    if "max_bytes" in block:
        kwargs["max_bytes"] = _positive(parse_size, block["max_bytes"], f"{where}.max_bytes")
    for key in ("ttl", "negative_ttl"):
        if block.get(key) is not None:
            kwargs[key] = _positive(parse_duration, block[key], f"{where}.{key}")
    if "replicas" in block:
        replicas = _positive_int(block["replicas"], f"{where}.replicas")
        if replicas > node_count:
            raise _Problem(f"{where}.replicas", f"{replicas} replicas but only {node_count} nodes")
        kwargs["replicas"] = replicas
    if "source" in block:
        kwargs["source"] = _source(block["source"], f"{where}.source")
    return GroupSpec(**kwargs)


def _source(block: Any, where: str) -> SourceSpec:
    if not isinstance(block, dict):
        raise _Problem(where, f"expected a mapping like {{python: module:function}}, got {_kind(block)}")
    kinds = [k for k in _SOURCE_KEYS if k in block]
    if len(kinds) != 1:
        got = " and ".join(kinds) if kinds else "none"
        raise _Problem(where, f"expected exactly one of {', '.join(_SOURCE_KEYS)}, got {got}")
    kind = kinds[0]
    _mapping(block, where, _SOURCE_KEYS[kind], f"a {kind} source")
    target = block[kind]
    if not isinstance(target, str):
        raise _Problem(f"{where}.{kind}", f"expected a string, got {_kind(target)}")
    checks = {
        "python": (_PYTHON_SOURCE.fullmatch(target), "expected module:function"),
        "redis": (target.startswith(("redis://", "rediss://", "unix://")), "expected a redis://, rediss:// or unix:// URL"),
        "sql": (_URL.fullmatch(target), "expected a SQLAlchemy URL like sqlite:///app.db"),
        "http": (
            target.startswith(("http://", "https://")) and "{key}" in target,
            "expected an http:// or https:// URL containing {key}",
        ),
    }
    ok, expected = checks[kind]
    if not ok:
        raise _Problem(f"{where}.{kind}", f"{expected}, got {target!r}")
    options: dict[str, Any] = {}
    if "timeout" in block:
        options["timeout"] = _positive(parse_duration, block["timeout"], f"{where}.timeout")
    if kind == "redis" and "key" in block:
        key = block["key"]
        if not isinstance(key, str) or "{key}" not in key:
            raise _Problem(f"{where}.key", f"expected a template containing {{key}}, got {key!r}")
        options["key"] = key
    if kind == "sql":
        query = _required(block, "query", where)
        if not isinstance(query, str) or query.count("?") != 1:
            raise _Problem(f"{where}.query", f"expected SQL with exactly one ? placeholder, got {query!r}")
        options["query"] = query
    return SourceSpec(kind, target, MappingProxyType(options))


def _mapping(value: Any, where: str, allowed: tuple[str, ...], what: str = "") -> dict:
    """``value`` as a dict whose keys are all in ``allowed``."""
    if not isinstance(value, dict):
        raise _Problem(where, f"expected a mapping with keys {', '.join(allowed)}, got {_kind(value)}")
    for key in value:
        if key not in allowed:
            prefix = f"{where}.{key}" if where else str(key)
            problem = f"unknown key for {what}" if what else "unknown key"
            raise _Problem(prefix, f"{problem} (allowed: {', '.join(allowed)})")
    return value


def _required(block: dict, key: str, where: str) -> Any:
    if key not in block:
        raise _Problem(f"{where}.{key}" if where else key, "required key is missing")
    return block[key]


def _check_name(name: Any, where: str, what: str, forbid: str = "") -> None:
    # Names travel inside memcached keys, URLs and metric labels: no spaces or control bytes.
    if not isinstance(name, str) or not name:
        raise _Problem(where, f"{what} must be a non-empty string, got {name!r}")
    if any(c.isspace() or not c.isprintable() or c in forbid for c in name):
        banned = f", control characters or {forbid!r}" if forbid else " or control characters"
        raise _Problem(where, f"{what} {name!r} must not contain whitespace{banned}")


def _convert(parse, value: Any, where: str) -> Any:
    try:
        return parse(value)
    except ValueError as exc:
        raise _Problem(where, str(exc)) from None


def _positive(parse, value: Any, where: str) -> Any:
    result = _convert(parse, value, where)
    if result <= 0:
        raise _Problem(where, f"must be greater than zero, got {value!r}")
    return result


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Problem(where, f"expected a positive integer, got {value!r}")
    return value


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"
