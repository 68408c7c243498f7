"""inbox-asgi's HTTP/1.1 protocol: httptools underneath, ASGI above, the limits in between.

uvicorn runs it as its `http` protocol class (same constructor, same server
state). It replaced a subclass of uvicorn's httptools protocol, for the limits
uvicorn lacks and for cost: a long-poll round trip is four requests, and the
subclass paid for two layers of every parser callback, an asyncio.Event, a
flow-control object and a 20-attribute cycle per request (measured in
docs/performance.md, the long-poll ping-pong).

The limits, all below ASGI so they cost an app nothing: a request head is
bounded in bytes and header lines (431) and must arrive within `head_timeout`
(else the connection closes); a body must arrive within `body_timeout` (408);
bytes a client pipelines behind a request in flight are held unparsed, up to
HOLD_LIMIT, then the connection stops reading. A request whole in one read arms
no timer and buffers nothing.

What ASGI has no word for goes to the endpoint in scope["extensions"]: whether
the client is gone, a future that completes when it leaves, and a whole
response in one write (`cycle.write_response`).

The limits come from Settings, once per process: `configure` in-process (the
CLI, tests), else `Settings.from_env()` on the first connection, which is how
`-workers` processes (spawned, handed the settings as INBOX_* variables) get them.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from typing import Any, ClassVar

import httptools

from inbox_asgi.config import Settings
from inbox_asgi.http.extensions import CONNECTION_CLOSED, CONNECTION_GONE, WRITE_RESPONSE
from inbox_asgi.server.cycle import (
    HIGH_WATER,
    STATUS_LINE,
    RequestCycle,
    joined_default_headers,
    write_response,
)
from inbox_asgi.server.websocket_protocol import upgrade

__all__ = ["CONNECTION_GONE", "HttpProtocol"]

logger = logging.getLogger("uvicorn.error")

_TOO_LARGE = b"request head too large\n"
_TOO_SLOW = b"request body not received in time\n"
_INVALID = b"Invalid HTTP request received."
_ASGI = {"version": "3.0", "spec_version": "2.3"}

# Where the parser is, per connection. Everything at or above HEAD takes the slow path.
IDLE = 0  # between requests, nothing in flight
BODY = 1  # a head parsed, its body (if any) not yet complete
HEAD = 2  # a head begun and not complete
WAITING = 3  # a request parsed whose response is not complete: later bytes are held
UPGRADED = 4  # handed to the WebSocket protocol

#: Reads up to this size are parsed in one go; larger ones piece by piece, so that
#: parsing stops within this many bytes of a request that has to wait behind one in
#: flight (a tiny request is 18 bytes: ~100 of them at most, not a read's ~14,000).
PIECE = 2048
#: Bytes held behind a request in flight before the connection stops reading.
HOLD_LIMIT = 65536
#: A head line arriving in pieces is handed to the parser in pieces of at least this
#: size: httptools joins the pieces of a header value by copying, per piece.
COALESCE = 16384


class HeadTooLarge(Exception):
    pass


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: bytes to requests (bounded, timed), requests to ASGI tasks.

    Slotted: a waiting reader is a connection, and tens of thousands wait at once.
    """

    __slots__ = (
        "__weakref__",  # tests check that a closed connection is freed
        "app",
        "app_state",
        "body_pause",
        "client",
        "closed",
        "config",
        "connections",
        "cycle",
        "drained",
        "expect",
        "extensions",
        "head_raw",
        "head_size",
        "head_too_large",
        "header_count",
        "headers",
        "held",
        "hold_pause",
        "idle_since",
        "keep_alive",
        "loop",
        "lost",
        "next_request",
        "parser",
        "phase",
        "queued",
        "ready",
        "scheme",
        "server",
        "server_state",
        "serving",
        "tasks",
        "timer",
        "transport",
        "upgrading",
        "url",
        "write_paused",
    )

    max_head_size: ClassVar[int] = 1048576
    max_header_count: ClassVar[int] = 100
    head_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 10.0
    configured: ClassVar[bool] = False

    @classmethod
    def configure(cls, settings: Settings) -> None:
        """Take the limits from `settings` (for every connection of this process)."""
        this = HttpProtocol  # class attributes live here, whatever subclass is asked
        this.max_head_size = settings.max_header_size
        this.max_header_count = settings.max_header_count
        this.head_timeout = settings.header_timeout
        this.body_timeout = settings.body_timeout
        this.configured = True

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not self.configured:  # the first connection of a worker process
            self.configure(Settings.from_env())
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.app_state = app_state
        self.parser = httptools.HttpRequestParser(self)
        # Answer a request even if bytes follow its "Connection: close" (uvicorn does too).
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.extensions: dict[str, Any] = {
            CONNECTION_GONE: self._connection_gone,
            CONNECTION_CLOSED: self._closed,
            WRITE_RESPONSE: write_response,
        }
        self.cycle: RequestCycle | None = None
        #: Requests parsed in one read behind the one in flight (rare: a pipelined batch).
        self.queued: list[RequestCycle] | None = None
        #: The connection's task (see _start): running a request; the one it runs next;
        #: while it waits for a request, the future that hands it one.
        self.serving = False
        self.ready: RequestCycle | None = None
        self.next_request: asyncio.Future[RequestCycle | None] | None = None
        self.phase = IDLE
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect = False
        #: The scope of a WebSocket upgrade request, between its head and the handover.
        self.upgrading: dict[str, Any] | None = None
        self.head_size = 0  # head bytes parsed (URL and complete header lines)
        self.head_raw = 0  # head bytes received while the head was incomplete (see data_received)
        self.header_count = 0
        self.head_too_large = False
        self.held: bytearray | None = None  # bytes received, not yet parsed (HEAD or WAITING only)
        self.hold_pause = self.body_pause = False
        self.write_paused = False
        self.drained: asyncio.Future[None] | None = None
        #: A head's or a body's deadline, while one is incomplete.
        self.timer: asyncio.TimerHandle | None = None
        #: The keep-alive timeout: armed once, moved on only when it fires (see _idle).
        self.keep_alive: asyncio.TimerHandle | None = None
        self.idle_since = 0.0
        self.lost = False
        self.closed: asyncio.Future[None] | None = None

    # -- connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.connections.add(self)
        self.transport = transport
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        self.scheme = "https" if transport.get_extra_info("sslcontext") else "http"
        self._arm(self.head_timeout, self._head_timed_out)  # the first head must come in time too

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.lost = True
        self.held = None
        self._disarm()
        closed = self.closed
        if closed is not None and not closed.done():
            closed.set_result(None)
        self._tell_gone()
        self.resume_writing()
        if exc is None:
            self.transport.close()
        self._let_go()

    def _let_go(self) -> None:
        """Break this connection's reference cycles, so reference counting frees it now.

        The protocol holds its parser and cycle, and they hold it: without this a
        closed connection, request head included (up to -max-header-size), waits
        for the collector. A request still running keeps what it uses.
        """
        self.cycle = self.queued = self.ready = None
        waiting, self.next_request = self.next_request, None
        if waiting is not None and not waiting.done():
            waiting.set_result(None)  # the connection's task ends
        self.extensions = {}
        self.parser = None  # type: ignore[assignment]
        if self.keep_alive is not None:
            self.keep_alive.cancel()
            self.keep_alive = None

    def eof_received(self) -> None:
        pass

    def shutdown(self) -> None:
        """The server stops: close an idle connection now, a busy one after its response."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.transport.close()
        else:
            cycle.keep_alive = False

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drained = self.drained
        if drained is not None:
            self.drained = None
            if not drained.done():
                drained.set_result(None)

    async def drain(self) -> None:
        """Until the transport's write buffer is below its low mark (or the connection is gone)."""
        if self.write_paused and not self.lost:
            if self.drained is None:
                self.drained = self.loop.create_future()
            await asyncio.shield(self.drained)

    def resume_reading(self) -> None:
        """The app reads the body: go on reading, unless held pipelined bytes stop it."""
        if self.body_pause:
            self.body_pause = False
            if not self.hold_pause:
                self.transport.resume_reading()

    # -- bytes in ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase >= HEAD:
            if phase == WAITING:
                self._hold(data)
            elif phase == HEAD:
                self._head_data(data)
            return
        self._feed(data, phase)

    def _parse(self, data: bytes | memoryview, phase: int) -> None:
        """Feed `data` to the parser, then time (and size) whatever request is left incomplete."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
            return
        except httptools.HttpParserError:
            self._refuse()
            return
        now = self.phase
        if now == HEAD:
            if phase == IDLE:
                # The head began with these bytes and has not ended: all of them are head.
                self.head_raw = len(data)
                if self.head_raw > self.max_head_size:
                    self._refuse_head()
                    return
            if self.timer is None:
                self._arm(self.head_timeout, self._head_timed_out)
        elif now == BODY and self.timer is None:
            self._arm(self.body_timeout, self._body_timed_out)

    def _parse_pieces(self, data: bytes) -> None:
        """Parse a large read a piece at a time, and hold what follows a request that must wait.

        A piece runs to the end of the next head (every head ends with CRLF CRLF:
        httptools accepts no bare LF), then to the end of the body its head
        declared. A body of unknown length (chunked), and CRLFs between requests,
        go PIECE bytes at a time: parsing never runs more than PIECE bytes past a
        complete request, and a read costs a parser call per request or per PIECE
        bytes, not one per CRLF CRLF an attacker can pack into it.
        """
        view = memoryview(data)
        start, size = 0, len(data)
        body: int | None = None  # what is left of a body whose length the head declared
        previous = -1  # the phase the previous piece began in
        while True:
            phase = self.phase
            if phase == BODY:
                stop = start + (body or PIECE)
            elif phase == IDLE and previous == IDLE:
                stop = start + PIECE  # the last piece began no request: blank lines
            else:
                end = data.find(b"\r\n\r\n", start)
                stop = size if end == -1 else end + 4
            stop = min(stop, size)
            self._parse(view[start:stop], phase)
            now = self.phase
            body = self._declared_length() if now == BODY and phase != BODY else None
            previous, start = phase, stop
            if start >= size or now == UPGRADED or self.transport.is_closing():
                return  # (what follows an upgrade request in its read is dropped)
            if now == WAITING:
                self._hold(data[start:])
                return

    def _declared_length(self) -> int | None:
        """The Content-Length of the head just parsed (None if chunked); httptools checked it."""
        for name, value in self.headers:
            if name == b"content-length":
                return int(value) if value.isdigit() and len(value) < 19 else None
        return None

    def _hold(self, data: bytes) -> None:
        """Keep bytes that came behind a request in flight; stop reading past HOLD_LIMIT.

        Reading goes on below the limit, so a waiting reader's disconnect is still seen.
        """
        if self.held is None:
            self.held = bytearray(data)
        else:
            self.held += data
        if len(self.held) > HOLD_LIMIT:
            # Again on every overflow: the app's receive() may have resumed reading.
            self.hold_pause = True
            self.transport.pause_reading()

    def _head_data(self, data: bytes) -> None:
        """Bytes for a head still incomplete: counted raw, and gathered while no line ends.

        Bytes without a line end all belong to the line in progress, which httptools
        reports only once it ends: they count against max_head_size here, as they
        arrive. Lines that end are counted by on_url/on_header.
        """
        line_ends = b"\n" in data
        if not line_ends:
            self.head_raw += len(data)
            if self.head_raw > self.max_head_size:
                self._refuse_head()
                return
        held = self.held
        if held is not None:
            held += data
        if not line_ends and len(held if held is not None else data) < COALESCE:
            if held is None:
                self.held = bytearray(data)
            return
        self.held = None
        self._feed(bytes(held) if held is not None else data, HEAD)

    def _feed(self, data: bytes, phase: int) -> None:
        """Bytes for the parser (a read, or bytes held until now): in one go, or in pieces."""
        if len(data) > PIECE:
            self._parse_pieces(data)
        else:
            self._parse(data, phase)

    # -- parser callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.phase = HEAD
        self.head_size = self.head_raw = self.header_count = 0
        self.url = b""
        self.headers = []
        self.expect = False
        self.upgrading = None

    def on_url(self, url: bytes) -> None:
        self.head_size += len(url)
        if self.head_size > self.max_head_size:
            self.head_too_large = True
            raise HeadTooLarge  # httptools turns this into HttpParserCallbackError
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        self.head_size += len(name) + len(value) + 4
        if self.header_count > self.max_header_count or self.head_size > self.max_head_size:
            self.head_too_large = True
            raise HeadTooLarge  # before httptools parses the rest of a head of 150,000 lines
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.phase = BODY  # until on_message_complete, in this read or a later one
        if self.timer is not None:
            self._disarm()
        parser = self.parser
        http_version = parser.get_http_version()
        method = parser.get_method().decode("ascii")
        root_path = self.config.root_path
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": http_version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": method,
            "root_path": root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
            "extensions": self.extensions,
        }
        if parser.should_upgrade() and self._websocket_requested():
            self.upgrading = scope  # the parser raises HttpParserUpgrade after this head
            return
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = root_path + path
        scope["raw_path"] = root_path.encode("ascii") + raw_path if root_path else raw_path
        scope["query_string"] = url.query or b""
        cycle = RequestCycle(self, scope, http_version != "1.0" and parser.should_keep_alive(), self.expect)
        ahead = self.cycle
        self.cycle = cycle
        if ahead is None or ahead.response_complete:
            self._start(cycle)
        else:  # pipelined in the same read as the one in flight: waits its turn
            if self.queued is None:
                self.queued = []
            self.queued.append(cycle)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is None or self.upgrading is not None or cycle.response_complete:
            return
        if cycle.add_body(body) > HIGH_WATER and not self.body_pause:
            self.body_pause = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.timer is not None:
            self._disarm()
        cycle = self.cycle
        if cycle is None or self.upgrading is not None:
            return
        if not cycle.response_complete:
            cycle.more_body = False
            cycle.wake()
            self.phase = WAITING
        else:  # answered before its body was all in (e.g. 404)
            self._idle()

    def response_complete(self, cycle: RequestCycle) -> None:
        """A cycle's response is written: start the next request, or wait for one."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.resume_reading()  # reading paused for a body (read whole, or not at all) goes on
        queued = self.queued
        if queued:
            self._start(queued.pop(0))
            return
        if self.phase == WAITING and cycle is self.cycle:
            self.phase = IDLE
            held = self.held
            if held is not None:
                # What the client sent meanwhile: the next request(s).
                self.held = None
                if self.hold_pause:
                    self.hold_pause = False
                    if not self.body_pause:
                        self.transport.resume_reading()
                self._feed(bytes(held), IDLE)
            if self.phase == IDLE:
                self._idle()

    def _idle(self) -> None:
        """Between requests: the connection may stay open for `timeout_keep_alive` seconds.

        The keep-alive timer is not armed and cancelled per request (a timer
        handle each, 3 % of a long-poll round trip's CPU): it is armed once, and
        when it fires it closes the connection only if it has been idle long
        enough, else it is armed again for the rest.
        """
        self.phase = IDLE
        self.idle_since = self.loop.time()
        # Nothing of the last request stays with an idle connection: its head may be
        # up to -max-header-size, for up to -keep-alive-timeout.
        self.cycle = None
        self.url = b""
        self.headers = []
        if self.keep_alive is None and not self.transport.is_closing():
            self.keep_alive = self.loop.call_later(self.config.timeout_keep_alive, self._keep_alive_check)

    def _keep_alive_check(self) -> None:
        self.keep_alive = None
        if self.transport.is_closing():
            return
        wait = self.config.timeout_keep_alive
        if self.phase == IDLE:
            wait = self.idle_since + wait - self.loop.time()
            if wait <= 0:
                self.transport.close()
                return
        # Busy (a request's own deadlines apply) or idle for less: look again later.
        self.keep_alive = self.loop.call_later(wait, self._keep_alive_check)

    def _start(self, cycle: RequestCycle) -> None:
        """Run `cycle` in this connection's task, starting the task if there is none.

        One task per connection, not per request: a long-poll round trip is four
        requests, and a task each (its creation, its registration in asyncio's
        weak set of tasks, its done-callbacks) cost 7 % of the server's CPU. The
        requests of a connection therefore share one context (contextvars set by
        one request are seen by the next on that connection).
        """
        if self.serving:  # the task is finishing the request ahead: it takes this one next
            self.ready = cycle
            return
        self.serving = True
        waiting = self.next_request
        if waiting is not None:  # the task waits for this connection's next request
            self.next_request = None
            waiting.set_result(cycle)
            return
        task = self.loop.create_task(self._serve(cycle))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(self, cycle: RequestCycle | None) -> None:
        """This connection's task: its requests one after another, until it closes."""
        app = self.app
        while cycle is not None and await cycle.run(app):
            self.serving = False
            cycle, self.ready = self.ready, None
            if cycle is None and not self._connection_gone():
                self.next_request = waiting = self.loop.create_future()
                cycle = await waiting  # None: the connection closed
                self.serving = True
        self.serving = False

    # -- upgrades and refusals -----------------------------------------------------------

    def _websocket_requested(self) -> bool:
        upgrade_to = None
        connection: list[bytes] = []
        for name, value in self.headers:
            if name == b"connection":
                connection = [token.lower().strip() for token in value.split(b",")]
            elif name == b"upgrade":
                upgrade_to = value.lower()
        return b"upgrade" in connection and upgrade_to == b"websocket"

    def _upgrade(self) -> None:
        scope = self.upgrading
        if scope is None:  # another protocol (h2c...): answered as plain HTTP, as uvicorn does
            logger.warning("Unsupported upgrade request.")
            return
        self.phase = UPGRADED
        self.upgrading = None
        self.connections.discard(self)
        self._disarm()
        upgrade(self, scope)
        # The WebSocket protocol has the transport now; this one is never told of a close.
        self._let_go()

    def _refuse(self) -> None:
        if self.head_too_large:
            self._refuse_head()
            return
        logger.warning("Invalid HTTP request received.")
        self._answer_and_close(400, b"text/plain; charset=utf-8", _INVALID)

    def _refuse_head(self) -> None:
        self.head_too_large = True
        self.held = None
        self._answer_and_close(431, b"text/plain; charset=utf-8", _TOO_LARGE)

    def _answer_and_close(self, status: int, content_type: bytes, body: bytes) -> None:
        self.transport.write(
            STATUS_LINE[status]
            + self.default_head()
            + b"content-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (content_type, len(body), body)
        )
        self._close()

    def default_head(self) -> bytes:
        """uvicorn's default headers (the date), as head lines."""
        return joined_default_headers(self.server_state.default_headers)

    # -- extensions ----------------------------------------------------------------------

    def _connection_gone(self) -> bool:
        return self.lost or self.transport.is_closing()

    def _closed(self) -> asyncio.Future[None]:
        """A future that completes when the connection closes (one request waits at a time)."""
        future = self.loop.create_future()
        if self.lost:
            future.set_result(None)
        else:
            self.closed = future
        return future

    # -- timers --------------------------------------------------------------------------

    def _arm(self, seconds: float, then: Any) -> None:
        self._disarm()
        self.timer = self.loop.call_later(seconds, then)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _tell_gone(self) -> None:
        """Tell every request not yet answered that its client is gone."""
        for cycle in (self.cycle, *(self.queued or ())):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.wake()

    def _close(self) -> None:
        """Close the connection, telling every request still running that its client is gone.

        The protocol learns of a close only in connection_lost, a loop turn later; an
        answer written in between would go to a closed transport.
        """
        self._tell_gone()
        self.transport.close()

    def _head_timed_out(self) -> None:
        self.timer = None
        if not self.transport.is_closing():
            self._close()

    def _body_timed_out(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TOO_SLOW), _TOO_SLOW)
            )
        self._close()  # the app's receive() now says http.disconnect


def _address(address: Any) -> tuple[str, int] | None:
    if isinstance(address, (list, tuple)) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None
