"""The cluster as the router sees it: the ring, the nodes, and a key's way to them.

`router.Router` holds the topology and swaps it on reload; `reads` and `writes` are a
key's slow path (owner, replicas, warm-up, read-through); `nodeclient` is the batching
connection to one storage node; `singleflight` and `loads` bound the source loads.
"""
