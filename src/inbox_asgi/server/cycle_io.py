"""One write per response, straight on uvicorn's request cycle, for the endpoint's hot path.

ASGI makes a response two `send` calls (uvicorn writes the head, then the body,
checking every header against two regular expressions). For the responses the
endpoint builds itself, `write_response` does the same bookkeeping on uvicorn's
`RequestResponseCycle` directly: measured alone (bench/golf.py), it buys 17 % of
pairs req/s. It checks that it was given uvicorn's own bound `send` (not one
wrapped by middleware) and declines otherwise, so the caller falls back to ASGI.
inbox-asgi's protocol hands it to the endpoint in scope["extensions"], unless
`fences` finds that the installed uvicorn lacks a name it uses.

(A request body already all in was also taken from the cycle without an ASGI
`receive`; measured alone it bought nothing (-4.9 % to +2.1 % pairs req/s,
0.05 KiB per reader) and was removed.)
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http import httptools_impl

from inbox_asgi.http.extensions import Headers

# Looked up softly: a uvicorn without them must not fail this import (fences then
# keeps these paths switched off).
STATUS_LINE: dict[int, bytes] = getattr(httptools_impl, "STATUS_LINE", {})
RequestResponseCycle: Any = getattr(httptools_impl, "RequestResponseCycle", None)


def write_response(send: Any, status: int, headers: Headers, body: bytes) -> bool:
    """Status line, headers and body in one write, for a response not yet started.

    uvicorn writes the head on `http.response.start` and the body on the next
    `send`: two writes, two TCP segments, and each header checked against two
    regular expressions. For the endpoint's own responses, whose headers it built
    from validated parts, this does the same bookkeeping in one write. It works
    only on uvicorn's own `send`, with no access log to write and no backpressure
    to wait for; otherwise it returns False and the caller sends through ASGI.
    """
    cycle: Any = getattr(send, "__self__", None)
    if (
        type(cycle) is not RequestResponseCycle
        or cycle.response_started
        or cycle.access_log
        or cycle.flow.write_paused
        or cycle.scope["method"] == "HEAD"
    ):
        return False
    if cycle.disconnected or cycle.transport.is_closing():
        # As uvicorn's send: nothing to write to. A transport already closing (e.g. by
        # a timer) may have lost its connection without this cycle hearing of it.
        cycle.disconnected = True
        return True
    cycle.response_started = cycle.response_complete = True
    cycle.waiting_for_100_continue = False
    content = [STATUS_LINE[status], _joined(cycle.default_headers)]
    for name, value in headers:
        content += (name, b": ", value, b"\r\n")
    if status != 204:
        content.append(b"content-length: %d\r\n" % len(body))
    if not cycle.keep_alive:
        content.append(b"connection: close\r\n")
    content += (b"\r\n", body)
    cycle.transport.write(b"".join(content))
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True


_default_head: tuple[Headers | None, bytes] = (None, b"")


def _joined(default_headers: Headers) -> bytes:
    """uvicorn's default headers (the date) change once a second, as a new list: join each once."""
    global _default_head
    seen, joined = _default_head
    if seen is not default_headers:
        joined = b"".join(b"%s: %s\r\n" % header for header in default_headers)
        _default_head = (default_headers, joined)
    return joined
