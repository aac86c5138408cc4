"""`ringcache get|set|delete|stats|ring|where|reload|plan`: clients of a router's HTTP port.

They find the router, its TLS and its admin token in the topology (`-c FILE`, default
./topology.yaml), so a command on a secured cluster needs no more flags than on the demo;
`--router URL` and `--token-file` override. Output is for people (router/cli/tables.py);
`--json` prints the router's JSON for scripts. Bad input is one line and exit status 2;
an unreachable router or its error, one line and exit status 1.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import quote, quote_from_bytes, urlsplit

import yaml

from router.cli import tables
from router.config.topology import Address
from router.http.admin_token import ENV as TOKEN_ENV, TokenUnavailable, read_token
from shared.cli import ArgumentParser
from shared.units import parse_duration

DEFAULT_CONFIG = "topology.yaml"
DEFAULT_ROUTER = "http://127.0.0.1:8080"
TIMEOUT = 5.0  # seconds: a stopped or hung router is an error soon, not a long silence


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
        super().__init__(f"cannot reach the router at {base}: {tables.shorten(reason, 200)}")


@dataclass(frozen=True)
class Target:
    """Where the router is and how to talk to it."""

    base: str  # http(s)://HOST:PORT
    token: bytes | None = None
    context: ssl.SSLContext | None = None  # None: the system's CAs (or SSL_CERT_FILE)
    timeout: float = TIMEOUT


def _parser(command: str) -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=f"ringcache {command}")
    parser.add_argument("--router", metavar="URL",
                        help=f"the router's HTTP address (default: router.http of the topology, "
                             f"else {DEFAULT_ROUTER})")
    parser.add_argument("-c", "--config", metavar="PATH",
                        help=f"topology file naming the router, its TLS and token "
                             f"(default: ./{DEFAULT_CONFIG})")
    parser.add_argument("--token-file", metavar="PATH",
                        help=f"file holding the router's admin token (default: ${TOKEN_ENV}, "
                             "else security.token_file of the topology)")
    parser.add_argument("--timeout", metavar="DURATION", type=_seconds, default=TIMEOUT,
                        help=f"how long to wait for the router (default {TIMEOUT:g}s)")
    parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
    if command in ("get", "set", "delete", "where"):
        parser.add_argument("group", metavar="GROUP")
        parser.add_argument("key", metavar="KEY")
    if command == "get":
        parser.add_argument("--raw", action="store_true",
                            help="write the value's bytes exactly, without a newline")
    if command == "set":
        parser.add_argument("value", metavar="VALUE", help="the value, or - to read stdin")
        parser.add_argument("--ttl", metavar="SECONDS", type=_duration,
                            help="expiry: seconds, or a duration like 500ms, 30s, 5m, 1h")
    if command == "hot":
        parser.add_argument("group", metavar="GROUP", nargs="?",
                            help="one group (default: every group)")
        parser.add_argument("--top", metavar="N", type=_top, default=10,
                            help="keys per group (default 10)")
    if command == "plan":
        parser.add_argument("topology", metavar="NEW_TOPOLOGY",
                            help="the topology file to compare with the router's")
    return parser


def _top(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 200:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 200, got {text!r}")
    return int(text)


def _duration(text: str) -> str:
    """``text`` unchanged once it parses; the router reads it with the same parse_duration."""
    _seconds(text)
    return text


def _seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str]) -> int:
    """Run one client command; bad input exits with status 2 (SystemExit), as argparse does."""
    return run(argv, _parser, COMMANDS)


def run(argv: list[str], make_parser, commands: dict) -> int:
    """``commands[argv[0]](target, args)`` with the arguments ``make_parser(argv[0])``
    reads, the router found, and the errors told as every client command tells them
    (router/cli/backup.py's commands run this way too)."""
    command = argv[0]
    parser = make_parser(command)
    args = parser.parse_args(argv[1:])
    try:
        target = find_router(args.router, args.config, args.token_file, args.timeout, os.environ)
        return commands[command](target, args)
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


# -- finding the router --------------------------------------------------------------------

def find_router(explicit: str | None, config: str | None, token_file: str | None,
                timeout: float, environ) -> Target:
    document = _topology(config)
    base = router_url(explicit, config, document)
    token = admin_token(token_file, explicit, config, environ, document)
    context = _tls_context(document) if base.startswith("https:") else None
    return Target(base, token, context, timeout)


def router_url(explicit: str | None, config: str | None, document=False) -> str:
    """The router's base URL: --router, else router.http of the topology file (https with
    router.http_tls), else the default."""
    if explicit is not None:
        url = explicit if "://" in explicit else f"http://{explicit}"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--router: expected a URL like {DEFAULT_ROUTER}, got {explicit!r}")
        return url.rstrip("/")
    if document is False:
        document = _topology(config)
    if document is None:
        return DEFAULT_ROUTER
    data, path = document
    http = _setting(data, "router", "http")
    if http is None:
        return DEFAULT_ROUTER
    try:
        address = Address.parse(http)
    except ValueError as exc:
        raise UsageError(f"{path}: router.http: {exc}") from None
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address.host, address.host)
    scheme = "https" if isinstance(_setting(data, "router", "http_tls"), dict) else "http"
    return f"{scheme}://{Address(host, address.port)}"


def admin_token(token_file: str | None, router: str | None, config: str | None,
                environ, document=False) -> bytes | None:
    """The admin token to send: --token-file, else $RINGCACHE_ADMIN_TOKEN, else the
    security.token_file of the topology (of -c, or of ./topology.yaml when it also names
    the router: a token is never sent to a --router the file does not describe)."""
    try:
        if token_file is not None:
            return read_token(token_file, environ)
        token = read_token(None, environ)
        if token is not None or (router is not None and config is None):
            return token
        if document is False:
            document = _topology(config)
        named = _setting(document[0], "security", "token_file") if document else None
        if not isinstance(named, str):
            return None
        return read_token(_beside(document[1], named), environ)
    except TokenUnavailable as exc:
        raise UsageError(str(exc)) from None


def _tls_context(document) -> ssl.SSLContext | None:
    """For a router on router.http_tls: trust exactly the certificate the topology gives
    it (so no CA need be installed), and present ringcache certs' client.pem beside the
    http_tls ca when the router asks for client certificates."""
    tls = _setting(document[0], "router", "http_tls") if document else None
    if not isinstance(tls, dict) or not isinstance(tls.get("cert"), str):
        return None
    path = document[1]
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=_beside(path, tls["cert"]))
        if isinstance(tls.get("ca"), str):
            folder = os.path.dirname(_beside(path, tls["ca"]))
            cert, key = os.path.join(folder, "client.pem"), os.path.join(folder, "client.key")
            if os.path.isfile(cert) and os.path.isfile(key):
                context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"{path}: router.http_tls: {exc}") from None
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the router's own certificate
    return context


def _beside(topology_path: str, name: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(topology_path)), os.path.expanduser(name))


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
        raise UsageError(f"{path}: {_yaml_problem(exc)}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: where, and what, without PyYAML's quoted context."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "not valid YAML"
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where}: {problem}"


def _setting(data, block: str, key: str):
    section = data.get(block) if isinstance(data, dict) else None
    return section.get(key) if isinstance(section, dict) else None


# -- HTTP ----------------------------------------------------------------------------------

def _call(method: str, target: Target, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(target.base + path, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/octet-stream")
    if target.token is not None:
        request.add_header("Authorization", f"Bearer {target.token.decode('latin-1')}")
    try:
        with urllib.request.urlopen(request, timeout=target.timeout,
                                    context=target.context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            reason = f"no answer within {target.timeout:g}s (--timeout)"
        raise Unreachable(target.base, reason) from None
    except (TimeoutError, socket.timeout):
        raise Unreachable(target.base, f"no answer within {target.timeout:g}s (--timeout)") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise Unreachable(target.base, exc) from None


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


def _print_json(document) -> None:
    print(json.dumps(document, indent=2))


def _show(body: bytes, args, as_text) -> int:
    document = json.loads(body)
    if args.json:
        _print_json(document)
    else:
        print(as_text(document), end="")
    return 0


# -- commands ------------------------------------------------------------------------------

def _get(target: Target, args) -> int:
    value = _ok(*_call("GET", target, f"/v1/{_key_path(args)}"))
    if args.json:
        try:
            shown = {"value": value.decode("utf-8")}
        except UnicodeDecodeError:
            shown = {"value_base64": base64.b64encode(value).decode()}
        _print_json({"group": args.group, "key": args.key, **shown})
        return 0
    if not args.raw and not value.endswith(b"\n"):
        value += b"\n"  # for a terminal; --raw writes the bytes as stored
    sys.stdout.buffer.write(value)
    sys.stdout.buffer.flush()
    return 0


def _set(target: Target, args) -> int:
    if args.value == "-":
        value = sys.stdin.buffer.read()
    else:
        value = args.value.encode("utf-8", "surrogateescape")
    query = "" if args.ttl is None else f"?ttl={quote(args.ttl, safe='')}"
    _ok(*_call("PUT", target, f"/v1/{_key_path(args)}{query}", value))
    if args.json:
        _print_json({"group": args.group, "key": args.key, "stored": True, "bytes": len(value)})
    return 0


def _delete(target: Target, args) -> int:
    _ok(*_call("DELETE", target, f"/v1/{_key_path(args)}"))
    if args.json:
        _print_json({"group": args.group, "key": args.key, "deleted": True})
    return 0


def _stats(target: Target, args) -> int:
    return _show(_ok(*_call("GET", target, "/v1/stats")), args, tables.stats)


def _where(target: Target, args) -> int:
    return _show(_ok(*_call("GET", target, f"/v1/where/{_key_path(args)}")), args, tables.where)


def _ring(target: Target, args) -> int:
    return _show(_ok(*_call("GET", target, "/v1/ring")), args, tables.ring)


def _hot(target: Target, args) -> int:
    document = json.loads(_ok(*_call("GET", target, f"/v1/hot?top={args.top}")))
    if args.group is not None:
        groups = document["groups"]
        if args.group not in groups:
            raise UsageError(f"no group {args.group!r} (the router has: {', '.join(groups)})")
        document = {"groups": {args.group: groups[args.group]}}
    return _show(json.dumps(document).encode(), args, tables.hot)


def _reload(target: Target, args) -> int:
    code, body = _call("POST", target, "/v1/reload", b"")
    if code == 400:
        if args.json:
            _print_json(json.loads(body))
        print(f"ringcache reload: refused: {_error_message(body)}", file=sys.stderr)
        return 1
    return _show(_ok(code, body), args, tables.reload)


def _plan(target: Target, args) -> int:
    try:
        with open(args.topology, "rb") as f:
            document = f.read()
    except OSError as exc:
        raise UsageError(f"{args.topology}: cannot read: {exc.strerror}") from None
    name = quote(args.topology, safe="")
    code, body = _call("POST", target, f"/v1/plan?name={name}", document)
    if code == 400:  # the router found the new topology invalid: bad input to this command
        raise UsageError(_error_message(body))
    return _show(_ok(code, body), args, tables.plan)


COMMANDS = {
    "get": _get,
    "set": _set,
    "delete": _delete,
    "stats": _stats,
    "ring": _ring,
    "hot": _hot,
    "where": _where,
    "reload": _reload,
    "plan": _plan,
}
