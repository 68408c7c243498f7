"""WebSocket connections after the upgrade: ASGI's websocket events over RFC 6455 frames.

inbox-asgi's HTTP protocol hands an upgrade straight to `upgrade` with the
request it has already parsed, instead of uvicorn re-serialising the head for
a second parser. Per open socket this keeps one slotted protocol object, a
list of pending events and at most one timer (keep-alive ping or pong
deadline); per frame, a header cut out with a few index operations, the
payload unmasked in C, and one `transport.write`. Measured against uvicorn's
`websockets-sansio` protocol in docs/websocket.md (Performance).

Flow control both ways: while the transport's write buffer is over its high
mark `send` waits; while the app has MAX_PENDING events unread, the socket is
not read. So a client that stops reading, or floods frames, holds at most a
read and a few frames of the server's memory.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from typing import Any
from urllib.parse import unquote

import httptools

from inbox_asgi.server.websocket_frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    ProtocolError,
    close_code,
    close_frame,
    frame,
)

logger = logging.getLogger("uvicorn.error")

#: Events (messages, a disconnect) the app may leave unread before the socket stops being read.
MAX_PENDING = 4
#: Seconds to wait for the client's close frame after sending ours.
CLOSE_TIMEOUT = 10.0
#: Seconds an open socket is left to the app when the server stops (uvicorn waits 2 s for tasks).
SHUTDOWN_GRACE = 1.0
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONNECTING, OPEN, CLOSING, CLOSED = range(4)


class ClientDisconnected(OSError):
    """A send to a socket already closed (the endpoint treats every OSError as the client gone)."""


class Limits:
    """What the sockets of a server share: frame size and keep-alive (uvicorn's ws_* settings),
    and its state, whose default headers (the date) uvicorn renews every second."""

    __slots__ = ("max_size", "ping_interval", "ping_timeout", "server_state")

    def __init__(
        self, max_size: int, ping_interval: float | None, ping_timeout: float | None, server_state: Any
    ) -> None:
        self.max_size = max_size
        self.ping_interval = ping_interval if ping_interval else None
        self.ping_timeout = ping_timeout if ping_timeout else None
        self.server_state = server_state


def refusal(scope: dict[str, Any]) -> bytes | None:
    """The HTTP answer to an upgrade RFC 6455 refuses (None: it may go ahead)."""
    version = key = None
    for name, value in scope["headers"]:
        if name == b"sec-websocket-version":
            version = value
        elif name == b"sec-websocket-key":
            key = value
    if version != b"13":
        return _response(426, b"Upgrade Required", b"sec-websocket-version: 13\r\n")
    try:
        if key is None or len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except (ValueError, binascii.Error):
        return _response(400, b"Bad Request", b"")
    return None


def _response(status: int, phrase: bytes, headers: bytes) -> bytes:
    body = phrase + b"\n"
    return (
        b"HTTP/1.1 %d %s\r\n%scontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, phrase, headers, len(body), body)
    )


class WebSocketProtocol(asyncio.Protocol):
    """One open /inbox/ws connection; `upgrade` builds it from the HTTP request."""

    __slots__ = (
        "_close_timer",
        "_events",
        "_key",
        "_limits",
        "_paused",
        "_ping",
        "_reader",
        "_state",
        "_timer",
        "_waiter",
        "_writable",
        "app",
        "connections",
        "loop",
        "scope",
        "tasks",
        "transport",
    )

    def __init__(
        self,
        app: Any,
        scope: dict[str, Any],
        key: bytes,
        limits: Limits,
        loop: asyncio.AbstractEventLoop,
        connections: set[Any],
        tasks: set[asyncio.Task[None]],
    ) -> None:
        self.app = app
        self.scope = scope
        self._key = key
        self._limits = limits
        self.loop = loop
        self.connections = connections
        self.tasks = tasks
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self._reader = FrameReader(limits.max_size)
        self._state = CONNECTING
        self._events: list[dict[str, Any]] = []
        self._waiter: asyncio.Future[None] | None = None  # `receive` waiting for an event
        self._writable: asyncio.Future[None] | None = None  # while the write buffer is full
        self._paused = False  # not reading: the app has MAX_PENDING events unread
        self._timer: asyncio.TimerHandle | None = None  # next keep-alive ping, or the pong deadline
        self._ping: bytes | None = None  # the ping awaiting its pong
        self._close_timer: asyncio.TimerHandle | None = None

    # -- the connection ------------------------------------------------------------------

    def start(self, transport: asyncio.Transport) -> None:
        """Take over `transport` (already switched to this protocol) and run the app."""
        self.transport = transport
        self.connections.add(self)
        self._events.append({"type": "websocket.connect"})
        task = self.loop.create_task(self.run_asgi())
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = CLOSED
        self.connections.discard(self)
        self._cancel_timers()
        self._push({"type": "websocket.disconnect", "code": 1006})
        writable = self._writable
        if writable is not None and not writable.done():
            writable.set_result(None)  # a send waiting for room finds the socket gone

    def eof_received(self) -> None:
        return None  # the transport closes

    def pause_writing(self) -> None:
        # Nor read while the client does not read: a ping is answered with a pong.
        if self._writable is None:
            self._writable = self.loop.create_future()
            if not self._paused:
                self.transport.pause_reading()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)
        if not self._paused and self._state != CLOSED:
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """uvicorn stopping: an open socket gets SHUTDOWN_GRACE to be closed by the app.

        The mailbox's own shutdown (on the same signal) ends every socket with 1001
        once its unacknowledged messages are back in the inbox, which in Redis mode
        takes a round trip; only a socket still open after that gets 1012.
        """
        if self._state == OPEN:
            self._cancel_timers()
            self._timer = self.loop.call_later(SHUTDOWN_GRACE, self._stop)
            return
        if self._state == CONNECTING:
            self.transport.write(_response(500, b"Internal Server Error", b""))
        self._state = CLOSED
        self.transport.close()

    def _stop(self) -> None:
        if self._state == OPEN:
            self._push({"type": "websocket.disconnect", "code": 1012})
            self.transport.write(close_frame(1012))
        self._state = CLOSED
        self._cancel_timers()
        self.transport.close()

    # -- frames in -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        if not self._paused:
            self._read()

    def _read(self) -> None:
        reader, events = self._reader, self._events
        try:
            while len(events) < MAX_PENDING:
                got = reader.next()
                if got is None:
                    return
                opcode, payload = got
                if opcode == OP_TEXT:
                    if self._state <= OPEN:
                        try:
                            self._push({"type": "websocket.receive", "text": payload.decode()})
                        except UnicodeDecodeError:
                            raise ProtocolError(1007, "text is not UTF-8") from None
                elif opcode == OP_BINARY:
                    if self._state <= OPEN:
                        self._push({"type": "websocket.receive", "bytes": payload})
                elif opcode == OP_PING:
                    if self._state == OPEN:
                        self.transport.write(frame(OP_PONG, payload))
                elif opcode == OP_PONG:
                    self._pong(payload)
                else:
                    self._closed_by_client(payload)
                    return
        except ProtocolError as error:
            self._fail(error.code, error.reason)
            return
        if not self._paused and self._state != CLOSED:
            self._paused = True
            if self._writable is None:
                self.transport.pause_reading()

    def _closed_by_client(self, payload: bytes) -> None:
        code, reason = close_code(payload)
        if self._state <= OPEN:
            self._push({"type": "websocket.disconnect", "code": code, "reason": reason})
        if self._state == OPEN:  # no frame goes out before the handshake's answer
            self.transport.write(close_frame(code) if code != 1005 else frame(OP_CLOSE, b""))
        self._state = CLOSED
        self._cancel_timers()
        self.transport.close()

    def _fail(self, code: int, reason: str) -> None:
        if self._state <= OPEN:
            self._push({"type": "websocket.disconnect", "code": code, "reason": reason})
        if self._state == OPEN:
            self.transport.write(close_frame(code, reason))
        self._state = CLOSED
        self._cancel_timers()
        self.transport.close()

    # -- ASGI ----------------------------------------------------------------------------

    async def run_asgi(self) -> None:
        code = 1000  # the app returned without closing
        try:
            await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            logger.exception("Exception in ASGI application\n")
            code = 1011
        if self._state == CONNECTING:
            if code == 1000:
                logger.error("ASGI callable returned without completing handshake.")
            self.transport.write(_response(500, b"Internal Server Error", b""))
        elif self._state == OPEN:
            self.transport.write(close_frame(code))
        if self._close_timer is None:
            self._state = CLOSED
            self._cancel_timers()
            self.transport.close()

    async def receive(self) -> dict[str, Any]:
        events = self._events
        while not events:
            if self._state == CLOSED:
                return {"type": "websocket.disconnect", "code": 1006}
            waiter = self._waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        event = events.pop(0)
        if self._paused and self._state != CLOSED:
            self._paused = False
            self._read()
            if not self._paused and self._state != CLOSED and self._writable is None:
                self.transport.resume_reading()
        return event

    async def send(self, message: Any) -> None:
        while self._writable is not None and self._state != CLOSED:
            await asyncio.shield(self._writable)
        kind = message["type"]
        state = self._state
        if state == CLOSED:
            raise ClientDisconnected
        if kind == "websocket.send":
            if state != OPEN:
                raise RuntimeError(f"websocket.send while the socket is {_STATES[state]}")
            text = message.get("text")
            if text is not None:
                self.transport.write(frame(OP_TEXT, text.encode()))
            else:
                self.transport.write(frame(OP_BINARY, message["bytes"]))
        elif kind == "websocket.accept" and state == CONNECTING:
            self._accept(message)
        elif kind == "websocket.close" and state == CONNECTING:
            # Refused before the handshake: the client gets a plain 403.
            self.transport.write(_response(403, b"Forbidden", b""))
            self._state = CLOSED
            self._push({"type": "websocket.disconnect", "code": 1006})
            self.transport.close()
        elif kind == "websocket.close" and state == OPEN:
            code = message.get("code") or 1000
            self._push({"type": "websocket.disconnect", "code": code, "reason": message.get("reason") or ""})
            self.transport.write(close_frame(code, message.get("reason") or ""))
            self._state = CLOSING
            self._cancel_timers()
            self._close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.transport.close)
            if self._paused:  # read on until the client's close frame comes back
                self._paused = False
                if self._writable is None:
                    self.transport.resume_reading()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} while the socket is {_STATES[state]}")

    def _accept(self, message: Any) -> None:
        accept = base64.b64encode(hashlib.sha1(self._key + _GUID).digest())
        head = [b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"]
        head.append(b"sec-websocket-accept: %s\r\n" % accept)
        for name, value in (*self._limits.server_state.default_headers, *message.get("headers", ())):
            head.append(b"%s: %s\r\n" % (name, value))
        if message.get("subprotocol"):
            head.append(b"sec-websocket-protocol: %s\r\n" % message["subprotocol"].encode())
        head.append(b"\r\n")
        self.transport.write(b"".join(head))
        self._state = OPEN
        self._key = b""
        self._schedule_ping()

    def _push(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- keep-alive ----------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        interval = self._limits.ping_interval
        if interval is not None:
            self._timer = self.loop.call_later(interval, self._send_ping)

    def _send_ping(self) -> None:
        if self._state != OPEN:
            return
        self._ping = payload = self.loop.time().hex().encode()
        self.transport.write(frame(OP_PING, payload))
        timeout = self._limits.ping_timeout
        if timeout is None:
            self._schedule_ping()
        else:
            self._timer = self.loop.call_later(timeout, self._fail, 1011, "keepalive ping timeout")

    def _pong(self, payload: bytes) -> None:
        if self._ping is None or payload != self._ping:
            return  # unsolicited, or an answer to an earlier ping
        self._ping = None
        if self._limits.ping_timeout is not None and self._timer is not None:
            self._timer.cancel()
            self._schedule_ping()

    def _cancel_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._close_timer is not None and self._state == CLOSED:
            self._close_timer.cancel()
            self._close_timer = None


_STATES = ("connecting", "open", "closing", "closed")


def upgrade(http: Any, scope: dict[str, Any]) -> None:
    """Switch the HTTP protocol `http`'s connection to a WebSocket (or answer 4xx).

    `http` is server/protocol.py's HttpProtocol at the end of the upgrade's head,
    `scope` the HTTP scope of that head.
    """
    config = http.config
    limits = Limits(config.ws_max_size, config.ws_ping_interval, config.ws_ping_timeout, http.server_state)
    transport: asyncio.Transport = http.transport
    refused = refusal(scope)
    try:
        url = httptools.parse_url(http.url)
    except httptools.HttpParserInvalidURLError:
        refused = _response(400, b"Bad Request", b"")
    if scope["method"] != "GET" or scope["http_version"] != "1.1":
        refused = _response(400, b"Bad Request", b"")
    if refused is not None:
        transport.write(refused)
        transport.close()
        return
    raw_path = url.path
    path = raw_path.decode("ascii")
    if "%" in path:
        path = unquote(path)
    key = next(value for name, value in scope["headers"] if name == b"sec-websocket-key")
    subprotocols = [
        token.strip()
        for name, value in scope["headers"]
        if name == b"sec-websocket-protocol"
        for token in value.decode("latin-1").split(",")
    ]
    ws_scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "wss" if scope["scheme"] == "https" else "ws",
        "server": scope["server"],
        "client": scope["client"],
        "root_path": scope["root_path"],
        "path": scope["root_path"] + path,
        "raw_path": scope["root_path"].encode("ascii") + raw_path,
        "query_string": url.query or b"",
        "headers": scope["headers"],
        "subprotocols": subprotocols,
        "state": scope["state"],
        "extensions": {},
    }
    protocol = WebSocketProtocol(http.app, ws_scope, key, limits, http.loop, http.connections, http.tasks)
    transport.set_protocol(protocol)
    protocol.start(transport)
