"""What the router and the storage node both use: the wire schema, framing, units."""
