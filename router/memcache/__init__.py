"""memcached's protocols on the router's client port: text, meta and binary.

`connection` is one client connection (the first byte picks text or binary, back-pressure,
bounds) and `order` the order its answers go out in; `server` is the listener. `text`,
`meta` and `binary` are sans-I/O parsers; `text_commands`, `binary_commands` and
`meta_commands` carry their commands out on the cluster (every text get through the data
plane), `commands` holds what the three share, `keys` memcached's key rules, and `stats`
answers memcached's stats.
"""
