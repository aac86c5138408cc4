"""A node's data dir: snapshots of its groups, the journal of what changed since, and the
start that brings both back (docs/snapshot.md). The file format is shared/snapshot.py's."""
