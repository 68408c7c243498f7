"""ASGI middleware around /inbox: access log, rate limit, metrics, and who the client is."""
