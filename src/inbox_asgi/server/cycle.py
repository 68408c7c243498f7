"""One HTTP request and its response: ASGI's `receive` and `send`, and a whole response in one write.

A `RequestCycle` is what inbox-asgi's protocol (server/protocol.py) makes per
request: the scope, the body as it arrives, and the response's state. `send`
keeps ASGI's contract as uvicorn does (every header checked, Content-Length or
chunked, HEAD without a body, 500 if the app fails before answering).
`write_response` is the endpoint's hot path (scope["extensions"]): a response
the endpoint built from validated parts, head and body in one write.
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
from typing import TYPE_CHECKING, Any

from inbox_asgi.http.extensions import Headers

if TYPE_CHECKING:
    from inbox_asgi.server.protocol import HttpProtocol

logger = logging.getLogger("uvicorn.error")

#: Header names and values `send` refuses (RFC 9110 tokens; no control characters in values).
INVALID_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
INVALID_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
#: Above this many body bytes unread by the app, the connection stops reading.
HIGH_WATER = 65536


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINE = {status: _status_line(status) for status in range(100, 600)}
_INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n"
)


class RequestCycle:
    """A request's ASGI side. The protocol feeds `body` and ends it; the app reads and answers."""

    __slots__ = (
        "body",
        "chunked",
        "delivered",
        "disconnected",
        "expect_continue",
        "keep_alive",
        "more_body",
        "protocol",
        "remaining",
        "response_complete",
        "response_started",
        "scope",
        "transport",
        "waiter",
    )

    def __init__(self, protocol: HttpProtocol, scope: dict[str, Any], keep_alive: bool, expect: bool) -> None:
        self.protocol = protocol
        self.transport = protocol.transport
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_continue = expect
        self.body: bytes | bytearray = b""  # received, not yet read by the app
        self.more_body = True
        self.delivered = False  # the body's last event has been received
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        #: While `receive` waits for the body (or the client's leaving).
        self.waiter: asyncio.Future[None] | None = None
        self.chunked: bool | None = None
        self.remaining = 0  # response body bytes still owed (Content-Length)

    def add_body(self, chunk: bytes) -> int:
        """Keep body bytes the app has not read yet; how many are kept.

        One piece stays as it came. From the second on they are gathered in a
        bytearray: `bytes += bytes` copies everything so far, per piece, and a
        chunked body of one-byte chunks made that quadratic in a read.
        """
        body = self.body
        if not body:
            self.body = chunk
        else:
            if type(body) is bytes:
                body = self.body = bytearray(body)
            body += chunk
        self.wake()
        return len(self.body)

    def wake(self) -> None:
        """Body bytes came, the body ended, or the client left: `receive` may go on."""
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def run(self, app: Any) -> bool:
        """The app on this request, as uvicorn runs it: a failure before answering gets 500.

        False if the task was cancelled (or the process is exiting): its connection's
        task then serves no further request.
        """
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as error:
            logger.error("Exception in ASGI application\n", exc_info=error)
            if not self.response_started:
                self._answer_500()
            else:
                self.transport.close()
            return isinstance(error, Exception)
        else:
            if result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
                self.transport.close()
            elif not self.response_started and not self.disconnected:
                logger.error("ASGI callable returned without starting response.")
                self._answer_500()
            elif not self.response_complete and not self.disconnected:
                logger.error("ASGI callable returned without completing response.")
                self.transport.close()
            return True
        finally:
            self.protocol = None  # type: ignore[assignment]  # nothing more to tell it

    def _answer_500(self) -> None:
        if self.disconnected or self.transport.is_closing():
            return
        self.response_started = self.response_complete = True
        self.transport.write(_INTERNAL_ERROR + self._default_head() + b"\r\nInternal Server Error")
        self.transport.close()
        self._completed()

    # -- ASGI ------------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if self.expect_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.expect_continue = False
        # Once the whole body is read, a receive waits for the client to leave (or the response).
        if not (self.disconnected or self.response_complete) and (
            self.delivered or (self.more_body and not self.body)
        ):
            protocol = self.protocol
            if protocol is not None:
                protocol.resume_reading()
                self.waiter = waiter = protocol.loop.create_future()
                await waiter
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body, self.body = self.body, b""
        self.delivered = not self.more_body
        return {"type": "http.request", "body": bytes(body), "more_body": self.more_body}

    async def send(self, message: dict[str, Any]) -> None:
        protocol = self.protocol
        if protocol is not None and protocol.write_paused and not self.disconnected:
            await protocol.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{kind}'.")
            self._start(message["status"], message.get("headers", ()))
        elif not self.response_complete:
            if kind != "http.response.body":
                raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' sent, after response already completed.")

    def _start(self, status: int, headers: Any) -> None:
        self.response_started = True
        self.expect_continue = False
        content = [STATUS_LINE[status], self._default_head()]
        close = False
        for name, value in headers:
            if INVALID_NAME.search(name):
                raise RuntimeError("Invalid HTTP header name.")
            if INVALID_VALUE.search(value):
                raise RuntimeError("Invalid HTTP header value.")
            name = name.lower()
            if name == b"content-length" and self.chunked is None:
                self.remaining = int(value.decode())
                self.chunked = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.remaining = 0
                self.chunked = True
            elif name == b"connection" and b"close" in [token.strip().lower() for token in value.split(b",")]:
                self.keep_alive = False
                close = True
            content += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not close:
            content.append(b"connection: close\r\n")
        if self.chunked is None and self.scope["method"] != "HEAD" and status not in (204, 304):
            self.chunked = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self.transport.write(b"".join(content))

    def _body(self, body: bytes, more_body: bool) -> None:
        if self.scope["method"] == "HEAD":
            self.remaining = 0
        elif self.chunked:
            chunk = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            self.transport.write(chunk if more_body else chunk + b"0\r\n\r\n")
        else:
            if len(body) > self.remaining:
                raise RuntimeError("Response content longer than Content-Length")
            self.remaining -= len(body)
            self.transport.write(body)
        if not more_body:
            if self.remaining != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            if not self.keep_alive:
                self.transport.close()
            self._completed()

    def _completed(self) -> None:
        self.wake()
        protocol = self.protocol
        if protocol is not None:
            protocol.response_complete(self)

    def _default_head(self) -> bytes:
        protocol = self.protocol
        return protocol.default_head() if protocol is not None else b""

    # -- the endpoint's one write ----------------------------------------------------------

    def write_response(self, status: int, headers: Headers, body: bytes) -> bool:
        """Status line, headers and body in one write, for a response not yet started.

        For the endpoint's own responses, whose headers it built from validated
        parts. False (the caller sends through ASGI) if the response has begun, the
        write buffer is full (ASGI's `send` waits for it) or the method is HEAD.
        """
        protocol = self.protocol
        if self.response_started or protocol is None or protocol.write_paused:
            return False
        if self.scope["method"] == "HEAD":
            return False
        if self.disconnected or self.transport.is_closing():
            # As `send`: nothing to write to. A transport already closing (e.g. by a
            # timer) may have lost its connection without this cycle hearing of it.
            self.disconnected = True
            return True
        self.response_started = self.response_complete = True
        self.expect_continue = False
        content = [STATUS_LINE[status], protocol.default_head()]
        for name, value in headers:
            content += (name, b": ", value, b"\r\n")
        if status != 204:
            content.append(b"content-length: %d\r\n" % len(body))
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        content += (b"\r\n", body)
        self.transport.write(b"".join(content))
        if not self.keep_alive:
            self.transport.close()
        self._completed()
        return True


def write_response(send: Any, status: int, headers: Headers, body: bytes) -> bool:
    """WRITE_RESPONSE: a whole response on `send`'s cycle, if `send` is a cycle's own (not wrapped)."""
    cycle = getattr(send, "__self__", None)
    if type(cycle) is not RequestCycle:
        return False
    return cycle.write_response(status, headers, body)


_default_head: tuple[Headers | None, bytes] = (None, b"")


def joined_default_headers(default_headers: Headers) -> bytes:
    """uvicorn's default headers (the date) change once a second, as a new list: join each once."""
    global _default_head
    seen, joined = _default_head
    if seen is not default_headers:
        joined = b"".join(b"%s: %s\r\n" % header for header in default_headers)
        _default_head = (default_headers, joined)
    return joined
