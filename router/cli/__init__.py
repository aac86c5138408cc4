"""Commands for people: `ringcache up` (the standalone mode) and the clients of a
router's HTTP port (`get`, `set`, `stats`, `ring`, ...)."""
