"""`ringcache get|set|delete|stats|ring|where|reload|plan`: clients of a router's HTTP port."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from urllib.parse import quote, quote_from_bytes, urlsplit

import yaml

from router.http.admin_token import ENV as TOKEN_ENV, TokenUnavailable, read_token
from router.config.topology import Address
from shared.cli import ArgumentParser
from shared.units import parse_duration

DEFAULT_CONFIG = "topology.yaml"
DEFAULT_ROUTER = "http://127.0.0.1:8080"
TIMEOUT = 30.0  # seconds; a read-through may wait on a slow source


class UsageError(Exception):
    """Bad input found after parsing (a file, the router's verdict): reported as argparse would."""


class RouterError(Exception):
    """The router answered with an error status (``code``) and this message."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class Unreachable(Exception):
    """No HTTP answer from the router: refused, timed out, or not speaking HTTP."""

    def __init__(self, base: str, reason):
        super().__init__(f"cannot reach the router at {base}: {reason}")


def _parser(command: str) -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=f"ringcache {command}")
    parser.add_argument("--router", metavar="URL",
                        help=f"the router's HTTP address (default: router.http of the topology, "
                             f"else {DEFAULT_ROUTER})")
    parser.add_argument("-c", "--config", metavar="PATH",
                        help=f"topology file naming the router (default: ./{DEFAULT_CONFIG})")
    parser.add_argument("--token-file", metavar="PATH",
                        help=f"file holding the router's admin token (default: ${TOKEN_ENV}, "
                             "else security.token_file of the topology)")
    if command in ("get", "set", "delete", "where"):
        parser.add_argument("group", metavar="GROUP")
        parser.add_argument("key", metavar="KEY")
    if command == "set":
        parser.add_argument("value", metavar="VALUE", help="the value, or - to read stdin")
        parser.add_argument("--ttl", metavar="SECONDS", type=_duration,
                            help="expiry: seconds, or a duration like 500ms, 30s, 5m, 1h")
    if command == "ring":
        parser.add_argument("--json", action="store_true", help="print the JSON document")
    if command == "plan":
        parser.add_argument("topology", metavar="NEW_TOPOLOGY",
                            help="the topology file to compare with the router's")
    return parser


def _duration(text: str) -> str:
    """``text`` unchanged once it parses; the router reads it with the same parse_duration."""
    try:
        parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def main(argv: list[str]) -> int:
    """Run one client command; bad input exits with status 2 (SystemExit), as argparse does."""
    command = argv[0]
    parser = _parser(command)
    args = parser.parse_args(argv[1:])
    try:
        base = router_url(args.router, args.config)
        args.token = admin_token(args.token_file, args.router, args.config, os.environ)
        return COMMANDS[command](base, args)
    except UsageError as exc:
        parser.error(str(exc))
    except RouterError as exc:
        hint = ""
        if exc.code == 401:
            hint = f"; pass --token-file, set {TOKEN_ENV}, or name security.token_file in -c FILE"
        print(f"ringcache {command}: {exc} (HTTP {exc.code}{hint})", file=sys.stderr)
        return 1
    except Unreachable as exc:
        print(f"ringcache: {exc}", file=sys.stderr)
        return 1


def router_url(explicit: str | None, config: str | None) -> str:
    """The router's base URL: --router, else router.http of the topology file, else the default."""
    if explicit is not None:
        url = explicit if "://" in explicit else f"http://{explicit}"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--router: expected a URL like {DEFAULT_ROUTER}, got {explicit!r}")
        return url.rstrip("/")
    document = _topology(config)
    if document is None:
        return DEFAULT_ROUTER
    data, path = document
    http = _setting(data, "router", "http")
    if http is None:
        return DEFAULT_ROUTER
    try:
        return f"http://{Address.parse(http)}"
    except ValueError as exc:
        raise UsageError(f"{path}: router.http: {exc}") from None


def admin_token(token_file: str | None, router: str | None, config: str | None,
                environ) -> bytes | None:
    """The admin token to send: --token-file, else $RINGCACHE_ADMIN_TOKEN, else the
    security.token_file of the topology (of -c, or of ./topology.yaml when it also names
    the router: a token is never sent to a --router the file does not describe)."""
    try:
        if token_file is not None:
            return read_token(token_file, environ)
        token = read_token(None, environ)
        if token is not None or (router is not None and config is None):
            return token
        document = _topology(config)
        named = _setting(document[0], "security", "token_file") if document else None
        if not isinstance(named, str):
            return None
        return read_token(os.path.join(os.path.dirname(os.path.abspath(document[1])), named),
                          environ)
    except TokenUnavailable as exc:
        raise UsageError(str(exc)) from None


def _topology(config: str | None) -> tuple[object, str] | None:
    """The topology document and its path, or None when no -c was given and there is no
    ./topology.yaml. Read leniently: `ringcache reload` must still reach the router
    after an edit broke some other part of the file, so the router can say what."""
    path = config or DEFAULT_CONFIG
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        if config is None:
            return None
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    try:
        return yaml.safe_load(text), path
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None


def _setting(data, block: str, key: str):
    section = data.get(block) if isinstance(data, dict) else None
    return section.get(key) if isinstance(section, dict) else None


# -- HTTP ----------------------------------------------------------------------------------

def _call(method: str, base: str, path: str, token: bytes | None,
          body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(base + path, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/octet-stream")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token.decode('latin-1')}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except urllib.error.URLError as exc:
        raise Unreachable(base, exc.reason) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise Unreachable(base, exc) from None


def _error_message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        lines = body.decode("utf-8", "replace").strip().splitlines()
        return lines[0] if lines else "no error message"


def _ok(code: int, body: bytes) -> bytes:
    if code >= 400:
        raise RouterError(code, _error_message(body))
    return body


def _key_path(args) -> str:
    # argv was decoded with surrogateescape: encoding it back gives the bytes typed.
    key = quote_from_bytes(args.key.encode("utf-8", "surrogateescape"), safe="")
    return f"{quote(args.group, safe='')}/{key}"


def _print_json(body: bytes) -> None:
    print(json.dumps(json.loads(body), indent=2))


# -- commands ------------------------------------------------------------------------------

def _get(base: str, args) -> int:
    value = _ok(*_call("GET", base, f"/v1/{_key_path(args)}", args.token))
    sys.stdout.buffer.write(value)
    sys.stdout.buffer.flush()
    return 0


def _set(base: str, args) -> int:
    if args.value == "-":
        value = sys.stdin.buffer.read()
    else:
        value = args.value.encode("utf-8", "surrogateescape")
    query = "" if args.ttl is None else f"?ttl={quote(args.ttl, safe='')}"
    _ok(*_call("PUT", base, f"/v1/{_key_path(args)}{query}", args.token, value))
    return 0


def _delete(base: str, args) -> int:
    _ok(*_call("DELETE", base, f"/v1/{_key_path(args)}", args.token))
    return 0


def _stats(base: str, args) -> int:
    _print_json(_ok(*_call("GET", base, "/v1/stats", args.token)))
    return 0


def _where(base: str, args) -> int:
    _print_json(_ok(*_call("GET", base, f"/v1/where/{_key_path(args)}", args.token)))
    return 0


def _ring(base: str, args) -> int:
    body = _ok(*_call("GET", base, "/v1/ring", args.token))
    if args.json:
        _print_json(body)
    else:
        print(ring_table(json.loads(body)), end="")
    return 0


def ring_table(ring: dict) -> str:
    """The ring as a table a person reads: one line per node with its share and health."""
    rows = [("NAME", "ADDRESS", "WEIGHT", "SHARE", "STATE", "DOWNS", "TIMEOUTS")]
    for node in ring["nodes"]:
        state = node["state"]
        if node.get("down_reason"):
            state += f" ({node['down_reason']})"
        rows.append((node["name"], node["address"], f"{node['weight']:g}",
                     f"{node['share'] * 100:.1f}%", state, str(node.get("marked_down", 0)),
                     str(node.get("timeouts", 0))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"ring {ring['digest']}, {ring['vnodes']} vnodes per unit of weight"]
    warmup = ring.get("warmup") or {}
    if warmup.get("active"):
        lines.append(f"warming up from ring {warmup['previous_digest']}: "
                     f"{warmup['seconds_left']:.0f}s left")
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    workers = ring.get("workers")
    if workers:
        up = sum(w["up"] for w in workers)
        lines.append(f"workers: {up} of {len(workers)} up")
        for w in workers:
            state = "up" if w["up"] else "down"
            same = "" if w["digest"] in (None, ring["digest"]) else f", ring {w['digest']}"
            lines.append(f"  worker {w['index']}: pid {w['pid']}, {state}{same}")
    return "\n".join(lines) + "\n"


def _reload(base: str, args) -> int:
    code, body = _call("POST", base, "/v1/reload", args.token, b"")
    if code == 400:
        print(f"ringcache reload: refused: {_error_message(body)}", file=sys.stderr)
        return 1
    _print_json(_ok(code, body))
    return 0


def _plan(base: str, args) -> int:
    try:
        with open(args.topology, "rb") as f:
            document = f.read()
    except OSError as exc:
        raise UsageError(f"{args.topology}: cannot read: {exc.strerror}") from None
    name = quote(args.topology, safe="")
    code, body = _call("POST", base, f"/v1/plan?name={name}", args.token, document)
    if code == 400:  # the router found the new topology invalid: bad input to this command
        raise UsageError(_error_message(body))
    _print_json(_ok(code, body))
    return 0


COMMANDS = {
    "get": _get,
    "set": _set,
    "delete": _delete,
    "stats": _stats,
    "ring": _ring,
    "where": _where,
    "reload": _reload,
    "plan": _plan,
}
