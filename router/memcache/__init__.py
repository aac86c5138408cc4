"""memcached's protocols on the router's client port: text, meta and binary.

`text`, `meta` and `binary` are sans-I/O parsers; `server` is the connection (answer
order, back-pressure, limits); `commands` and `meta_commands` carry the commands out on
the cluster; `stats` answers memcached's stats.
"""
