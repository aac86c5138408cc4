"""The router's HTTP port: the REST API on values, health, metrics and admin, with its
bounds, the admin token and the reload rate limit."""
