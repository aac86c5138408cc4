"""Where a router's topology comes from -- a file or an etcd key -- read through one parse.

An origin has two jobs: ``read()`` answers the current document as a validated Topology
(raising TopologyError when it cannot), and ``watch(reactor, on_change)`` calls
``on_change()`` when there may be a new one. The router does the rest the same way for
both: Router.reload() reads the origin, then validates, plans and swaps (or refuses and
keeps the old ring). A file is read on every reload and watched by its stat; an etcd key
is watched (router/config/etcd_origin.py) and read is its latest revision.

Relative paths in a document (TLS files, secret and token files, ``sqlite:///rel.db``,
the directory ``python:`` sources import from) resolve against the Reader's base_dir:
``--base-dir`` when given, else the file's own directory, else -- for a document that is
no file, as in etcd -- the router's working directory.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from router.config.topology import Address, Topology, load_topology, parse_topology_text
from router.config.watch import FileWatch


@dataclass(frozen=True, slots=True)
class Reader:
    """How this router turns a document into its Topology: the one parse (topology.py),
    where relative paths resolve, and the listen addresses its command line overrides
    (``--memcache``, ``--http``: one document for routers on many hosts and ports)."""

    base_dir: str | None = None
    memcache: Address | None = None
    http: Address | None = None

    def parse(self, text: str, name: str, revision: int | None = None) -> Topology:
        """The document ``text`` (no file: relative paths resolve in base_dir, else here)."""
        topology = parse_topology_text(text, name, self.base_dir or os.getcwd())
        return self._overridden(dataclasses.replace(topology, revision=revision))

    def load(self, path: str) -> Topology:
        """The topology file at ``path`` (relative paths resolve beside it, or in base_dir)."""
        return self._overridden(load_topology(path, self.base_dir))

    def _overridden(self, topology: Topology) -> Topology:
        changes = {k: v for k, v in (("memcache", self.memcache), ("http", self.http))
                   if v is not None}
        if not changes:
            return topology
        return dataclasses.replace(topology, router=dataclasses.replace(topology.router, **changes))

    def flags(self, base_dir: str) -> list[str]:
        """The command-line flags that give a worker process this same reader, with
        ``base_dir`` (the one the control's topology resolved in)."""
        out = ["--base-dir", base_dir]
        for flag, address in (("--memcache", self.memcache), ("--http", self.http)):
            if address is not None:
                out += [flag, str(address)]
        return out


class FileOrigin:
    """topology.yaml: read again on every reload, and watched by polling its stat."""

    kind = "file"

    def __init__(self, path: str, reader: Reader = Reader()):
        self.path = self.name = path
        self.reader = reader
        self._watch: FileWatch | None = None

    def read(self) -> Topology:
        return self.reader.load(self.path)

    def watch(self, reactor, on_change) -> None:
        self._watch = FileWatch(self.path, on_change, reactor)
        self._watch.start()

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()

    def status(self) -> dict:
        return {"origin": "file"}
