"""The image's HEALTHCHECK: a router answers GET /healthz, a node accepts a TCP connection.

One image serves every role, so the check reads the role and its address from the
command line of the ringcache process in this container.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request

import yaml

WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def ringcache_process() -> tuple[str, list[str]]:
    """(pid, arguments after `ringcache`) of the ringcache process in this container."""
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode() for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        # `python /opt/ringcache/bin/ringcache ROLE ...`, or the script itself first.
        for i, arg in enumerate(argv[:2]):
            if os.path.basename(arg) == "ringcache":
                return pid, argv[i + 1:]
    raise SystemExit("no ringcache process in this container")


def option(args: list[str], names: tuple[str, ...], default: str | None = None) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in args."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return default


def split_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    return WILDCARDS.get(host, host), int(port)


def check_node(args: list[str]) -> None:
    host, port = split_address(option(args, ("--listen",)) or "")
    with socket.create_connection((host, port), timeout=2):
        pass


def check_router(pid: str, args: list[str]) -> None:
    path = option(args, ("-c", "--config"), "topology.yaml")
    with open(os.path.join(f"/proc/{pid}/cwd", path)) as f:
        topology = yaml.safe_load(f) or {}
    host, port = split_address((topology.get("router") or {}).get("http", "127.0.0.1:8080"))
    host = f"[{host}]" if ":" in host else host
    with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=2) as reply:
        if reply.status != 200:
            raise OSError(f"/healthz answered {reply.status}")


def main() -> int:
    pid, args = ringcache_process()
    role = args[0] if args else ""
    try:
        if role == "node":
            check_node(args)
        elif role in ("router", "up"):
            check_router(pid, args)
        else:
            print(f"nothing to check for `ringcache {role}`")
            return 0
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
