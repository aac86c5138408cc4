"""The router: a stateless proxy that owns the one ring, the singleflight table and the
sources, in front of the storage nodes.

A get's way: `memcache/` (or `http/`) parses it, `dataplane/` routes a batch of plain
gets to the nodes at once, and `cluster/` serves what the batch could not (misses and
read-through via `sources/`, replicas, warm-up, failures). The control plane is
`config/` (the topology and its reloads) and `process/` (one router's wiring and its
workers); `cli/` holds the commands for people.
"""
