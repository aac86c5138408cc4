#!/usr/bin/env python3
"""memcached 1.6.18's own test suite (its source's t/*.t, Perl) against a real memcached
and against the router, file by file, side by side.

The suite comes from Debian bookworm's source package (``apt-get source memcached``, with
a deb-src list of its own under bench/build/, so the machine's apt config is left alone).
Its MemcachedTest.pm talks to an already running server when T_MEMD_USE_DAEMON=host:port
is set; each file gets a fresh server (memcached, or a router and one node), because the
files count items and stats from an empty cache. A file passes when perl exits 0 with
its plan met; assertions are the TAP ``ok`` lines.

    .venv/bin/python bench/memcached_suite.py               # every file, both servers
    .venv/bin/python bench/memcached_suite.py binary.t -v   # one file, failures shown
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import BUILD, Servers, RingcacheCluster, free_port  # noqa: E402

VERSION = "1.6.18"
SUITE = BUILD / f"memcached-{VERSION}"
APT = BUILD / "apt"
SOURCES = Path("/etc/apt/sources.list.d")
FILE_TIMEOUT = 120


def deb_src() -> str:
    """A deb-src list of the archive this machine's own bookworm packages come from (its
    apt sources), so that the source package is fetched from wherever they are."""
    for path in sorted(SOURCES.glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                name, colon, value = line.partition(":")
                if colon and not line.startswith("#"):
                    fields[name.strip()] = value.strip()
            if "deb" in fields.get("Types", "").split() and "bookworm" in fields.get("Suites", "").split():
                return (f"Types: deb-src\nURIs: {fields['URIs']}\nSuites: bookworm\n"
                        f"Components: {fields.get('Components', 'main')}\n"
                        + (f"Signed-By: {fields['Signed-By']}\n" if "Signed-By" in fields else ""))
    raise SystemExit(f"no Debian bookworm archive in {SOURCES}/*.sources: memcached's source "
                     "package cannot be fetched")


def fetch_suite() -> Path:
    """bench/build/memcached-1.6.18 with t/, from Debian's source package (once)."""
    if (SUITE / "t" / "lib" / "MemcachedTest.pm").exists():
        return SUITE
    (APT / "parts").mkdir(parents=True, exist_ok=True)
    (APT / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (APT / "parts" / "bookworm-src.sources").write_text(deb_src())
    options = ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={APT}/parts",
               "-o", f"Dir::State::Lists={APT}/lists", "-o", "Debug::NoDropPrivs=1"]
    subprocess.run(["apt-get", *options, "update", "-qq"], check=True)
    subprocess.run(["apt-get", *options, "source", "--download-only", "memcached"],
                   cwd=APT, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["tar", "xf", str(APT / f"memcached_{VERSION}.orig.tar.xz"), "-C", str(BUILD)],
                   check=True)
    # The files ask "memcached-debug -h" what the build supports (sasl, tls, extstore...).
    (SUITE / "memcached-debug").symlink_to(shutil.which("memcached") or "/usr/bin/memcached")
    return SUITE


class Memcached(Servers):
    """memcached as Debian's package runs it (/etc/memcached.conf: -m 64, -c 1024), on
    loopback without UDP."""

    name = "memcached"

    def _start(self) -> int:
        port = free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self._spawn(["memcached", *user, "-l", "127.0.0.1", "-p", str(port), "-U", "0",
                     "-m", "64", "-c", "1024"], port)
        return port


class Router(RingcacheCluster):
    """A router and one node configured as that memcached: 1,024 connections, 64 MiB."""

    def _topology(self):
        port, topology = super()._topology()
        text = topology.read_text().replace("max_bytes: 512MiB", "max_bytes: 64MiB")
        topology.write_text(text + "limits:\n  max_connections: 1024\n")
        return port, topology


def run_file(suite: Path, name: str, port: int) -> dict:
    """One .t file against 127.0.0.1:port: its exit status, ok and not-ok assertions."""
    env = {**os.environ, "T_MEMD_USE_DAEMON": f"127.0.0.1:{port}"}
    try:
        done = subprocess.run(["perl", f"t/{name}"], cwd=suite, env=env, capture_output=True,
                              text=True, errors="replace", timeout=FILE_TIMEOUT)
        out, rc = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as timeout:
        out = ((timeout.stdout or b"") + (timeout.stderr or b"")).decode(errors="replace")
        rc = "timeout"
    oks = len(re.findall(r"^ok \d+", out, re.M))
    fails = re.findall(r"^not ok \d+.*(?:\n#.*)*", out, re.M)
    return {"passed": rc == 0, "rc": rc, "ok": oks, "not_ok": len(fails), "failures": fails,
            "tail": out[-1500:]}


def against(server_class, suite: Path, name: str) -> dict:
    with server_class() as server:
        return run_file(suite, name, server.port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="t/*.t names (default: every file)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the router's failures")
    parser.add_argument("--router-only", action="store_true")
    parser.add_argument("-j", "--jobs", type=int, default=4,
                        help="files run at once (each against servers of its own)")
    args = parser.parse_args()
    suite = fetch_suite()
    names = args.files or sorted(p.name for p in (suite / "t").glob("*.t"))
    totals = {"memcached": [0, 0], "router": [0, 0]}
    # Over the files memcached passes: their assertions, and the router's in them.
    kept = {"memcached": 0, "router": 0}
    lost = []  # files memcached passes and the router does not
    asserting = [0, 0]  # files memcached passes that assert anything (the others skip all)

    def both(name):
        theirs = None if args.router_only else against(Memcached, suite, name)
        return theirs, against(Router, suite, name)

    print(f"{'file':28} {'memcached':>16} {'router':>16}")
    pool = ThreadPoolExecutor(args.jobs)
    for name, (theirs, ours) in zip(names, pool.map(both, names)):
        for who, r in (("memcached", theirs), ("router", ours)):
            if r is not None:
                totals[who][0] += r["passed"]
                totals[who][1] += r["ok"]

        def cell(r):
            return "-" if r is None else f"{'pass' if r['passed'] else 'FAIL'} {r['ok']:>6} ok"
        if theirs and theirs["passed"]:
            kept["memcached"] += theirs["ok"]
            kept["router"] += min(ours["ok"], theirs["ok"])
            if theirs["ok"]:
                asserting[0] += 1
                asserting[1] += ours["passed"]
            if not ours["passed"]:
                lost.append(name)
        mark = "  <--" if theirs and theirs["passed"] and not ours["passed"] else ""
        print(f"{name:28} {cell(theirs):>16} {cell(ours):>16}{mark}", flush=True)
        if args.verbose and not ours["passed"]:
            for failure in ours["failures"][:20]:
                print("    " + failure.replace("\n", "\n    "))
            if not ours["failures"]:
                print("    " + ours["tail"].replace("\n", "\n    "))
    print(f"{'files passed':28} {totals['memcached'][0]:>16} {totals['router'][0]:>16}")
    print(f"{'assertions passed':28} {totals['memcached'][1]:>16} {totals['router'][1]:>16}")
    if not args.router_only:
        share = kept["router"] / kept["memcached"] if kept["memcached"] else 0.0
        print(f"in the {totals['memcached'][0]} files memcached passes: the router passes "
              f"{totals['memcached'][0] - len(lost)}, and {kept['router']} of their "
              f"{kept['memcached']} assertions ({share:.2%}); not: {' '.join(lost) or '-'}")
        print(f"of those that assert anything (the rest skip every test on this build): "
              f"{asserting[1]} of {asserting[0]}")


if __name__ == "__main__":
    main()
