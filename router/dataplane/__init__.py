"""The get hot path: a client read's gets routed, sent and answered a batch at a time.

`getrun` parses and routes a buffer of gets in one call (compiled `_getrun`, or its
pure twin `getrun_py`), or gets whose keys the text parser read itself; `serve` sends one
GET_MANY per node and renders the answers, handing misses and failures to the cluster's
slow path.
"""
