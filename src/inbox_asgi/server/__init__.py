"""Server glue: uvicorn's protocol with inbox-asgi's limits, the event loop, TLS, process limits.

The only layer that touches uvicorn's private state (`fences` checks it at start-up).
"""
