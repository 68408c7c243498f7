"""What inbox-asgi's server offers the endpoint in scope["extensions"], beyond ASGI.

ASGI has no word for "is the client still there?" without awaiting `receive`,
and no single call for a whole response. `inbox_asgi.server` fills these keys
in (each value is merged into the server's own `extensions` dict); under any
other server they are absent and the endpoint does the same through plain ASGI.
Only the keys and the shapes of their values live here, so the HTTP layer
never imports the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Headers = list[tuple[bytes, bytes]]

#: `() -> bool`: whether the client's connection is gone. The endpoint hands a
#: message back to the queue rather than write it into a dead connection
#: (uvicorn drops such writes silently).
CONNECTION_GONE = "inbox_asgi.connection_gone"
#: `() -> Future`: completes when the client's connection closes. A long poll
#: waits on it instead of on `receive`, which would hold an asyncio.Event waiter
#: and two more coroutine frames per waiting reader.
CONNECTION_CLOSED = "inbox_asgi.connection_closed"
#: `ResponseWriter`: a whole response in one write.
WRITE_RESPONSE = "inbox_asgi.write_response"

#: (send, status, headers, body) -> True if written, False to fall back to ASGI `send`.
ResponseWriter = Callable[[Any, int, Headers, bytes], bool]
