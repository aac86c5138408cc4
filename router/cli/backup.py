"""`ringcache backup FILE [--group G]`, `ringcache restore FILE [--group G]` and
`ringcache keys GROUP [--prefix P] [--limit N]`: every entry through the router's HTTP port
(router/http/transfer.py), streamed both ways, in the snapshot file format
(docs/snapshot.md). On a terminal a progress bar shows entries, bytes, rate and time
left; otherwise one summary line is printed when done."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlencode

from router.cli.client import (RouterError, Target, Unreachable, UsageError, _error_message,
                               _seconds, run)
from router.http.admin_token import ENV as TOKEN_ENV
from shared.cli import ArgumentParser
from shared.snapshot import Reader, SnapshotError

CHUNK = 1 << 20
TIMEOUT = 300.0  # seconds without a byte: a restore answers only once it is done


def _parser(command: str) -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=f"ringcache {command}")
    parser.set_defaults(command=command)
    parser.add_argument("--router", metavar="URL", help="the router's HTTP address "
                        "(default: router.http of the topology)")
    parser.add_argument("-c", "--config", metavar="PATH", help="topology file naming the router")
    parser.add_argument("--token-file", metavar="PATH",
                        help=f"file holding the router's admin token (default: ${TOKEN_ENV})")
    parser.add_argument("--timeout", metavar="DURATION", type=_seconds, default=TIMEOUT,
                        help=f"how long the router may be silent (default {TIMEOUT:g}s: a "
                             f"restore answers once it is done)")
    if command == "keys":
        parser.add_argument("group", metavar="GROUP")
        parser.add_argument("--prefix", default="", help="only the keys that start with this")
        parser.add_argument("--limit", type=_count, metavar="N", help="at most N keys")
    else:
        parser.add_argument("file", metavar="FILE")
        parser.add_argument("--group", metavar="G", help="this group only")
    return parser


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(text)


def main(argv: list[str]) -> int:
    return run(argv, _parser, COMMANDS)


def _told(command):
    """A command whose broken file or stream is told in one line (exit 1)."""
    def told(target: Target, args) -> int:
        try:
            return command(target, args)
        except SnapshotError as exc:
            print(f"ringcache {args.command}: {exc}", file=sys.stderr)
            return 1
    return told


def _open(method: str, target: Target, path: str, body=None, length: int | None = None):
    """The router's answer, open to be read as it streams."""
    request = urllib.request.Request(target.base + path, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/octet-stream")
        request.add_header("Content-Length", str(length))
    if target.token is not None:
        request.add_header("Authorization", f"Bearer {target.token.decode('latin-1')}")
    try:
        return urllib.request.urlopen(request, timeout=target.timeout, context=target.context)
    except urllib.error.HTTPError as exc:
        with exc:
            raise RouterError(exc.code, _error_message(exc.read())) from None
    except urllib.error.URLError as exc:
        raise Unreachable(target.base, exc.reason) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise Unreachable(target.base, exc) from None


def _query(**params) -> str:
    given = {k: v for k, v in params.items() if v is not None}
    return ("?" + urlencode(given)) if given else ""


class Progress:
    """A tqdm bar of entries on a terminal (its postfix the bytes), else a line at the end."""

    def __init__(self, what: str, total: int | None):
        self.what = what
        self.entries = self.bytes = 0
        self.started = time.monotonic()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total or None, unit=" entries", unit_scale=True,
                            desc=what, file=sys.stderr, dynamic_ncols=True)

    def add(self, entries: int = 0, nbytes: int = 0) -> None:
        self.entries += entries
        self.bytes += nbytes
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.bytes / 1e6:.1f} MB", refresh=False)
            self.bar.update(entries)

    def done(self, line: str) -> None:
        if self.bar is not None:
            self.bar.close()
        seconds = time.monotonic() - self.started
        print(f"{self.what}: {line} in {seconds:.1f} s", file=sys.stderr)


class _Tee:
    """A response's read that also writes what it reads to a file and counts it."""

    def __init__(self, response, out, progress: Progress):
        self.response, self.out, self.progress = response, out, progress

    def read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            try:
                chunk = self.response.read(n - len(data))
            except (http.client.IncompleteRead, OSError) as exc:
                raise SnapshotError(f"the router's answer broke off ({exc}): see its log") from None
            if not chunk:
                break
            data += chunk
        self.out.write(data)
        self.progress.add(nbytes=len(data))
        return data


def _backup(target: Target, args) -> int:
    response = _open("GET", target, f"/v1/backup{_query(group=args.group)}")
    total = int(response.headers.get("X-Ringcache-Entries") or 0)
    progress = Progress("backup", total)
    temporary = args.file + ".tmp"
    try:
        with response, open(temporary, "wb") as out:
            reader = Reader(_Tee(response, out, progress).read)
            for _, n in reader.entry_blocks(decode=False):  # checked as it arrives
                progress.add(entries=n)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, args.file)
    except OSError as exc:
        raise UsageError(f"{args.file}: cannot write: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    progress.done(f"{progress.entries:,} entries, {progress.bytes / 1e6:.1f} MB to {args.file}")
    return 0


class _Upload:
    """A file read for an upload, counted for the progress bar."""

    def __init__(self, file, progress: Progress):
        self.file, self.progress = file, progress

    def read(self, n: int = CHUNK) -> bytes:
        data = self.file.read(max(n, CHUNK))
        self.progress.add(nbytes=len(data))
        return data


def _restore(target: Target, args) -> int:
    try:
        size = os.path.getsize(args.file)
        with open(args.file, "rb") as f:  # whole and valid, or nothing is sent
            reader = Reader(f.read)
            entries = sum(n for _, n in reader.entry_blocks(decode=False))
            names = [g.name for g in reader.header.groups]
    except OSError as exc:
        raise UsageError(f"{args.file}: cannot read: {exc.strerror or exc}") from None
    except SnapshotError as exc:
        raise UsageError(f"{args.file}: {exc}") from None
    if args.group is not None and args.group not in names:
        raise UsageError(f"--group {args.group}: the file has no such group (it has "
                         f"{', '.join(names) or 'none'})")
    progress = Progress("restore", entries)
    with open(args.file, "rb") as f:
        upload = _Upload(f, progress)
        response = _open("POST", target, f"/v1/restore{_query(group=args.group)}",
                         body=upload, length=size)
        with response:
            summary = json.loads(response.read())
    progress.add(entries=entries - progress.entries)
    skipped = summary.get("skipped_groups") or {}
    note = "".join(f"; group {g} is not in the topology: {n:,} skipped" for g, n in skipped.items())
    progress.done(f"{summary['entries']:,} entries read, {summary['stored']:,} stored "
                  f"({summary['expired']:,} expired){note}")
    return 0


def _keys(target: Target, args) -> int:
    query = _query(group=args.group, prefix=args.prefix or None,
                   limit=None if args.limit is None else str(args.limit))
    response = _open("GET", target, f"/v1/keys{query}")
    out = sys.stdout.buffer
    with response:
        try:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                out.flush()
        except (http.client.IncompleteRead, OSError) as exc:
            print(f"ringcache keys: the router's answer broke off ({exc})", file=sys.stderr)
            return 1
    return 0


COMMANDS = {"backup": _told(_backup), "restore": _told(_restore), "keys": _keys}
