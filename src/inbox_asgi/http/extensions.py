"""What inbox-asgi's server offers the endpoint in scope["extensions"], beyond ASGI.

ASGI has no word for "is the client still there?" without awaiting `receive`.
`inbox_asgi.server` fills these keys in (merged into the server's own
`extensions` dict); under any other server they are absent and the endpoint
learns of a disconnect through `receive`. Only the keys and the shapes of their
values live here, so the HTTP layer never imports the server.
"""

from __future__ import annotations

#: `() -> bool`: whether the client's connection is gone. The endpoint hands a
#: message back to the queue rather than write it into a dead connection
#: (uvicorn drops such writes silently).
CONNECTION_GONE = "inbox_asgi.connection_gone"
#: `() -> Future`: completes when the client's connection closes. A long poll
#: waits on it instead of on `receive`, which would hold an asyncio.Event waiter
#: and two more coroutine frames per waiting reader.
CONNECTION_CLOSED = "inbox_asgi.connection_closed"
