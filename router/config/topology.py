"""Load topology.yaml into frozen dataclasses, refusing anything unknown, mistyped or inconsistent."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml

from router.memcache.keys import split_group
from shared.backlog import DEFAULT_BACKLOG, backlog_problem
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


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """A listener's or a peer's TLS identity: PEM files, absolute paths. With ``ca`` the
    other side must present a certificate that CA signed."""

    cert: str
    key: str
    ca: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterConfig:
    memcache: Address = Address("127.0.0.1", 11211)
    http: Address = Address("127.0.0.1", 8080)
    vnodes: int = 160
    timeout: float = 0.5  # seconds, per node request
    default_group: str
    warmup: float = 0.0
    item_size_max: int = 1 << 20
    workers: int = 1  # router processes sharing the memcached port ("auto": the cores, capped)
    memcache_tls: TLSFiles | None = None  # TLS on the client port, as memcached's -Z
    http_tls: TLSFiles | None = None  # HTTPS for the HTTP API
    # Apply the file when it changes; otherwise only on SIGHUP and POST /v1/reload, so an
    # operator can save an edit, look at `ringcache plan`, then reload.
    watch: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityConfig:
    """Who may talk to whom. Paths are absolute (relative ones are taken from the topology
    file's directory); secrets themselves are read by whoever uses them."""

    # Router <-> node mutual TLS: the cluster CA and the router's own certificate.
    node_tls: TLSFiles | None = None
    # Router <-> node shared secret (HMAC challenge at connect), for plaintext networks.
    # The file's contents are the secret; RINGCACHE_SECRET in the environment also works.
    secret_file: str | None = None
    # Bearer token for the HTTP admin API (reload, plan, writes); RINGCACHE_ADMIN_TOKEN too.
    token_file: str | None = None
    protect_reads: bool = False  # the token is required for HTTP reads as well


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsConfig:
    """Bounds that keep one client from exhausting a router process (per process)."""

    max_connections: int = 4096  # per client listener; past it new ones are refused
    idle_timeout: float = 0.0  # close a client connection idle this long (0: never, as memcached)
    command_timeout: float = 30.0  # a started command line or data block must finish in this
    output_buffer: int = 4 << 20  # answer bytes queued per connection before its reading pauses
    # Bytes of unfinished commands (a value still arriving) held over all client connections;
    # past it, connections in the middle of a value are not read until others finish.
    input_buffer: int = 64 << 20
    reloads_per_minute: int = 30  # reload/plan requests over HTTP; more are answered 429
    # Connections the kernel queues for each listener before accepting (shared/backlog.py).
    backlog: int = DEFAULT_BACKLOG


# Ring and document bounds: a topology past them is refused rather than frozen on.
MAX_NODES = 1024
MAX_GROUPS = 1024
MAX_WEIGHT = 100
MAX_RING_POINTS = 1_000_000  # vnodes x total weight: ~1 s to build, ~40 MB
MAX_WORKERS = 64
AUTO_WORKERS_CAP = 16
# YAML: aliases are refused past this many (an alias bomb is a few hundred bytes that
# expand to gigabytes), and nesting past this depth (the loader recurses).
MAX_YAML_ALIASES = 100
MAX_YAML_DEPTH = 32
MAX_YAML_BYTES = 1 << 20


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
    concurrency: int = 16  # loads of this group in flight at once, per router process
    queue: int = 256  # loads waiting for a free slot; past it a miss fails at once


@dataclass(frozen=True, slots=True)
class NearCacheSpec:
    """A group's near cache: the hot keys each router process keeps, up to ``max_bytes``
    (keys, values and overhead charged) for at most ``ttl`` seconds each."""

    max_bytes: int = 16 << 20
    ttl: float = 2.0


@dataclass(frozen=True, slots=True)
class GroupSpec:
    name: str
    policy: str = "adaptive"  # storage_node/node.py DEFAULT_POLICY, the measured best core
    max_bytes: int = 64 << 20
    ttl: float | None = None
    negative_ttl: float | None = None
    replicas: int = 1
    source: SourceSpec | None = None
    # Grace, RFC 5861's names: past its ttl an entry is still answered, at once with a
    # refresh behind it (stale_while_revalidate) or when its load fails (stale_if_error).
    stale_while_revalidate: float | None = None
    stale_if_error: float | None = None
    # Hot keys kept in each router process (router/cluster/nearcache.py); None: off.
    near_cache: NearCacheSpec | None = None


@dataclass(frozen=True, slots=True)
class Topology:
    router: RouterConfig
    nodes: tuple[NodeSpec, ...]
    groups: Mapping[str, GroupSpec]
    path: str
    base_dir: str  # directory of the file; python sources import from it
    security: SecurityConfig = SecurityConfig()
    limits: LimitsConfig = LimitsConfig()
    # The YAML it was read from (router workers apply the very same bytes on reload).
    text: str = field(default="", repr=False, compare=False)
    # The etcd revision the document was read at (router/config/etcd_origin.py); None for a file.
    revision: int | None = field(default=None, compare=False)
    _prefixes: Mapping[bytes, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_prefixes", {name.encode(): name for name in self.groups})

    def group_for(self, memcache_key: bytes) -> tuple[str, bytes]:
        """(group name, key within it) of a memcached key (router/memcache/keys.py)."""
        return split_group(memcache_key, self._prefixes, self.router.default_group)


_ROUTER_KEYS = ("memcache", "http", "vnodes", "timeout", "default_group", "warmup", "item_size_max",
                "workers", "memcache_tls", "http_tls", "watch")
_SECURITY_KEYS = ("ca", "cert", "key", "secret_file", "token_file", "protect_reads")
_LIMITS_KEYS = ("max_connections", "idle_timeout", "command_timeout", "output_buffer", "input_buffer",
                "reloads_per_minute", "backlog")
_TLS_KEYS = ("cert", "key", "ca")
_NODE_KEYS = ("name", "address", "weight")
_GROUP_KEYS = ("policy", "max_bytes", "ttl", "negative_ttl", "replicas", "source",
               "stale_while_revalidate", "stale_if_error", "near_cache")
_NEAR_CACHE_KEYS = ("max_bytes", "ttl")
_LOAD_KEYS = ("timeout", "concurrency", "queue")
_SOURCE_KEYS = {
    "python": ("python", *_LOAD_KEYS),
    "redis": ("redis", "key", *_LOAD_KEYS),
    "sql": ("sql", "query", *_LOAD_KEYS),
    "http": ("http", *_LOAD_KEYS),
}
_POLICIES = ("adaptive", "lru", "lfu")
_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_PYTHON_POLICY = re.compile(rf"python:{_DOTTED}:[A-Za-z_]\w*")
_PYTHON_SOURCE = re.compile(rf"{_DOTTED}:[A-Za-z_]\w*")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://.*")


# /v1/where/{group}/{key} would shadow a group named "where".
RESERVED_GROUP_NAMES = frozenset({"where"})
MAX_NEAR_CACHE_TTL = 60.0  # seconds: the longest a router may answer a hot key unasked


class _Problem(Exception):
    """A problem at a key path; parse_topology adds the file name."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}" if where else problem)


def load_topology(path: str | os.PathLike[str], base_dir: str | None = None) -> Topology:
    """Read and validate the topology file at ``path`` (relative paths in it resolve in
    its directory, or in ``base_dir``)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(f"{path}: cannot read: {exc}") from None
    return parse_topology_text(text, path, base_dir)


def parse_topology_text(text: str, path: str, base_dir: str | None = None) -> Topology:
    """Validate a topology YAML document; ``path`` names it in errors and, unless
    ``base_dir`` is given, its directory is where relative paths resolve."""
    if len(text) > MAX_YAML_BYTES:
        raise TopologyError(f"{path}: the document is {len(text)} bytes, over the limit of "
                            f"{MAX_YAML_BYTES}")
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        raise TopologyError(f"{path}: {where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: {exc}") from None
    return dataclasses.replace(parse_topology(data, path, base_dir), text=text)


def parse_topology(data: Any, path: str, base_dir: str | None = None) -> Topology:
    """Validate an already-parsed YAML document; ``path`` names it in errors and, unless
    ``base_dir`` is given, its directory is where relative paths resolve."""
    try:
        return _topology(data, path, base_dir)
    except _Problem as exc:
        raise TopologyError(f"{path}: {exc}") from None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping instead of keeping the last,
    and documents that would cost more to load than they say: more than MAX_YAML_ALIASES
    aliases (the "billion laughs" bomb) or nesting deeper than MAX_YAML_DEPTH."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_YAML_ALIASES} aliases (*name); "
                    "a topology needs none", mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

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


def _topology(data: Any, path: str, base_dir: str | None) -> Topology:
    base_dir = os.path.abspath(base_dir) if base_dir else os.path.dirname(os.path.abspath(path))
    top = _mapping(data, "", ("router", "nodes", "groups", "security", "limits"))
    router_block = _mapping(_required(top, "router", ""), "router", _ROUTER_KEYS)
    nodes = _nodes(_required(top, "nodes", ""))
    groups_block = _required(top, "groups", "")
    if not isinstance(groups_block, dict):
        raise _Problem("groups", f"expected a mapping of group names, got {_kind(groups_block)}")
    if len(groups_block) > MAX_GROUPS:
        raise _Problem("groups", f"{len(groups_block)} groups, over the limit of {MAX_GROUPS}")
    groups = {}
    for name, block in groups_block.items():
        _check_name(name, f"groups.{name}", "group name", forbid=":")
        if name in RESERVED_GROUP_NAMES:
            raise _Problem(f"groups.{name}", f"{name!r} is reserved by the HTTP API "
                           f"(/v1/{name}/...); choose another group name")
        groups[name] = _group(name, block, len(nodes))
    router = _router(router_block, groups, base_dir)
    # The ring places max(1, round(vnodes * weight)) points per node (router/cluster/ring.py).
    points = sum(max(1, round(router.vnodes * n.weight)) for n in nodes)
    if points > MAX_RING_POINTS:
        raise _Problem("router.vnodes", f"{router.vnodes} vnodes x the nodes' weights make "
                       f"{points} ring points, over the limit of {MAX_RING_POINTS}")
    security = _security(top.get("security") or {}, base_dir)
    limits = _limits(top.get("limits") or {})
    return Topology(
        router=router,
        nodes=nodes,
        groups=MappingProxyType(groups),
        path=path,
        base_dir=base_dir,
        security=security,
        limits=limits,
    )


def _router(block: dict, groups: Mapping[str, GroupSpec], base_dir: str) -> RouterConfig:
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
    if "workers" in block:
        kwargs["workers"] = _workers(block["workers"])
    if "watch" in block:
        kwargs["watch"] = _bool(block["watch"], "router.watch")
    for key in ("memcache_tls", "http_tls"):
        if block.get(key) is not None:
            kwargs[key] = _tls(block[key], f"router.{key}", base_dir)
    return RouterConfig(**kwargs)


def _workers(value: Any) -> int:
    if value == "auto":
        return max(1, min(os.cpu_count() or 1, AUTO_WORKERS_CAP))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        raise _Problem("router.workers", f"expected auto or a whole number from 1 to "
                       f"{MAX_WORKERS}, got {value!r}")
    return value


def _path(value: Any, where: str, base_dir: str) -> str:
    """A file the topology names: absolute, and there to be read."""
    if not isinstance(value, str) or not value:
        raise _Problem(where, f"expected a file path, got {_kind(value)}")
    path = os.path.join(base_dir, value)
    if not os.path.isfile(path):
        raise _Problem(where, f"no such file: {path}")
    return path


def _tls(block: Any, where: str, base_dir: str) -> TLSFiles:
    block = _mapping(block, where, _TLS_KEYS)
    cert = _path(_required(block, "cert", where), f"{where}.cert", base_dir)
    key = _path(_required(block, "key", where), f"{where}.key", base_dir)
    ca = _path(block["ca"], f"{where}.ca", base_dir) if block.get("ca") is not None else None
    return TLSFiles(cert, key, ca)


def _security(block: Any, base_dir: str) -> SecurityConfig:
    block = _mapping(block, "security", _SECURITY_KEYS)
    kwargs: dict[str, Any] = {}
    tls = [k for k in ("ca", "cert", "key") if block.get(k) is not None]
    if tls and len(tls) != 3:
        missing = ", ".join(k for k in ("ca", "cert", "key") if k not in tls)
        raise _Problem("security", f"mutual TLS with the nodes needs ca, cert and key "
                       f"together; missing {missing}")
    if tls:
        kwargs["node_tls"] = TLSFiles(
            _path(block["cert"], "security.cert", base_dir),
            _path(block["key"], "security.key", base_dir),
            _path(block["ca"], "security.ca", base_dir))
    for key in ("secret_file", "token_file"):
        if block.get(key) is not None:
            kwargs[key] = _path(block[key], f"security.{key}", base_dir)
    if "protect_reads" in block:
        kwargs["protect_reads"] = _bool(block["protect_reads"], "security.protect_reads")
    return SecurityConfig(**kwargs)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _Problem(where, f"expected true or false, got {_kind(value)}")
    return value


def _limits(block: Any) -> LimitsConfig:
    block = _mapping(block, "limits", _LIMITS_KEYS)
    kwargs: dict[str, Any] = {}
    for key in ("max_connections", "reloads_per_minute"):
        if key in block:
            kwargs[key] = _positive_int(block[key], f"limits.{key}")
    if "idle_timeout" in block:
        kwargs["idle_timeout"] = _not_negative(parse_duration, block["idle_timeout"],
                                               "limits.idle_timeout")
    if "command_timeout" in block:
        kwargs["command_timeout"] = _positive(parse_duration, block["command_timeout"],
                                              "limits.command_timeout")
    for key in ("output_buffer", "input_buffer"):
        if key in block:
            kwargs[key] = _positive(parse_size, block[key], f"limits.{key}")
    if "backlog" in block:
        problem = backlog_problem(block["backlog"])
        if problem:
            raise _Problem("limits.backlog", problem)
        kwargs["backlog"] = block["backlog"]
    return LimitsConfig(**kwargs)


def _nodes(items: Any) -> tuple[NodeSpec, ...]:
    if not isinstance(items, list) or not items:
        raise _Problem("nodes", f"expected a list of at least one node, got {_kind(items)}")
    if len(items) > MAX_NODES:
        raise _Problem("nodes", f"{len(items)} nodes, over the limit of {MAX_NODES}")
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
            math.isfinite(weight) and 0 < weight <= MAX_WEIGHT
        ):
            raise _Problem(f"{where}.weight",
                           f"expected a positive number up to {MAX_WEIGHT}, got {weight!r}")
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
    for key in ("ttl", "negative_ttl", "stale_while_revalidate", "stale_if_error"):
        if block.get(key) is not None:
            kwargs[key] = _positive(parse_duration, block[key], f"{where}.{key}")
    if "replicas" in block:
        replicas = _positive_int(block["replicas"], f"{where}.replicas")
        if replicas > node_count:
            raise _Problem(f"{where}.replicas", f"{replicas} replicas but only {node_count} nodes")
        kwargs["replicas"] = replicas
    if "source" in block:
        kwargs["source"] = _source(block["source"], f"{where}.source")
    if block.get("near_cache") is not None:
        kwargs["near_cache"] = _near_cache(block["near_cache"], f"{where}.near_cache")
    for key in ("stale_while_revalidate", "stale_if_error"):
        if key in kwargs and "source" not in kwargs:
            raise _Problem(f"{where}.{key}", "needs a source: a stale value is answered while "
                                              "the source refreshes it")
    return GroupSpec(**kwargs)


def _near_cache(block: Any, where: str) -> NearCacheSpec:
    block = _mapping(block, where, _NEAR_CACHE_KEYS)
    kwargs: dict[str, Any] = {}
    if "max_bytes" in block:
        kwargs["max_bytes"] = _positive(parse_size, block["max_bytes"], f"{where}.max_bytes")
    if "ttl" in block:
        ttl = _positive(parse_duration, block["ttl"], f"{where}.ttl")
        if ttl > MAX_NEAR_CACHE_TTL:
            # The near cache is a bounded-staleness promise: minutes of stale reads are not one.
            raise _Problem(f"{where}.ttl", f"expected at most {MAX_NEAR_CACHE_TTL:g}s, got {ttl:g}s")
        kwargs["ttl"] = ttl
    return NearCacheSpec(**kwargs)


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
    bounds = {key: _positive_int(block[key], f"{where}.{key}")
              for key in ("concurrency", "queue") if key in block}
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
    return SourceSpec(kind, target, MappingProxyType(options), **bounds)


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


def _not_negative(parse, value: Any, where: str) -> Any:
    result = _convert(parse, value, where)
    if result < 0:
        raise _Problem(where, f"must not be negative, got {value!r}")
    return result


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Problem(where, f"expected a positive integer, got {value!r}")
    return value


# Values quoted in errors are cut short: a value reached through aliases can be a
# billion elements that repr() would spell out in full.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring = 2, 4, 4, 80


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    text = _SHORT.repr(value)
    return f"{type(value).__name__} {text if len(text) <= 120 else text[:117] + '...'}"
