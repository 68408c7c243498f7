"""uvicorn's httptools protocol as inbox-asgi runs it.

It adds the limits uvicorn lacks. uvicorn (httptools) accepts request heads of
any size and any number of header lines, waits forever for a head or body that
trickles in, and parses every request a client pipelines as soon as it
arrives; each lets one client pin memory, connections or the event loop. It
keeps per-connection state small, since a waiting reader is a connection. And
it offers the endpoint, through scope["extensions"], what ASGI has no word
for: whether the client is gone, and the hot-path reads and writes of
`cycle_io`.

The limits come from Settings, once per process: `configure` in-process (the
CLI, tests), else `Settings.from_env()` on the first connection, which is how
`-workers` processes (spawned, handed the settings as INBOX_* variables) get them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from inbox_asgi.config import Settings
from inbox_asgi.http.extensions import CONNECTION_CLOSED, CONNECTION_GONE, WRITE_RESPONSE
from inbox_asgi.server.cycle_io import write_response
from inbox_asgi.server.fences import FastPaths, probe
from inbox_asgi.server.websocket_protocol import upgrade

__all__ = ["CONNECTION_GONE", "LimitedHttpToolsProtocol"]

_TOO_LARGE = b"request head too large\n"
_TOO_SLOW = b"request body not received in time\n"

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


class _ConnectionState:
    """What the limits track per connection, in one slotted object.

    Kept off the protocol's instance dict on purpose: uvicorn's protocol already
    has 28 attributes, and CPython shares attribute keys between instances only
    up to 30; past that every connection's dict grows by ~1.5 KiB.
    """

    __slots__ = (
        "ahead",
        "buffer",
        "closed",
        "extensions",
        "head_raw",
        "head_size",
        "head_too_large",
        "header_count",
        "lost",
        "paused",
        "phase",
        "timer",
    )

    def __init__(self, extensions: dict[str, Any]) -> None:
        self.extensions = extensions
        self.phase = IDLE
        self.head_size = 0  # head bytes parsed (URL and complete header lines)
        self.head_raw = 0  # head bytes received while the head was incomplete (see data_received)
        self.header_count = 0
        self.head_too_large = False
        self.buffer: bytearray | None = None  # bytes received, not yet parsed (HEAD or WAITING only)
        self.paused = False
        self.ahead: Any = None  # the cycle in flight while a pipelined one waits behind it
        self.timer: asyncio.TimerHandle | None = None
        self.lost = False
        self.closed: asyncio.Future[None] | None = None


class _Pipeline(list[Any]):
    """uvicorn's queue of pipelined requests, as a list: it is nearly always empty,
    and an empty deque costs ~760 bytes where an empty list costs 56."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)

    def popleft(self) -> Any:
        return self.pop(0)


def _lean(event: asyncio.Event) -> None:
    """Keep an Event's waiters in a list rather than a deque (~700 bytes less while empty).

    uvicorn makes two Events per connection (flow control, and one per request);
    with tens of thousands of waiting readers the empty deques add up to more than
    the rest of a request's state. asyncio.Event only appends, removes and iterates
    its waiters, which a list does as well; if that ever changes shape, this does nothing.
    """
    waiters = getattr(event, "_waiters", None)
    if type(waiters) is deque and not waiters:
        event._waiters = []  # type: ignore[assignment]


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's protocol with bounded heads, timed heads and bodies, and bounded pipelining.

    All of it runs for every request, so the path of a request that arrives whole
    in one read stays a few attribute checks: no timer is armed, nothing is
    buffered. Only a head or body still incomplete after a read arms a timer
    (disarmed when that part completes): a head past `head_timeout` closes the
    connection, a body past `body_timeout` gets 408 (unless a response has
    started) and a close. Bytes that arrive while a request is in flight are
    held, not parsed, until its response completes (up to HOLD_LIMIT, then the
    connection stops reading). These limits live here, below ASGI, so they cost
    an app nothing: servers other than `inbox-asgi` (e.g. `uvicorn inbox_asgi:app`)
    run without them.
    """

    max_head_size: ClassVar[int] = 1048576
    max_header_count: ClassVar[int] = 100
    head_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 10.0
    #: What `fences` found usable in this process; None until configured.
    fast_paths: ClassVar[FastPaths | None] = None
    _cycle_extensions: ClassVar[dict[str, Any]] = {}
    _hold_pipelined: ClassVar[bool] = False
    _lean_events: ClassVar[bool] = False
    _lean_pipeline: ClassVar[bool] = False
    _own_websocket: ClassVar[bool] = False

    @classmethod
    def configure(cls, settings: Settings) -> None:
        """Take the limits from `settings`, and check uvicorn's internals for the fast paths."""
        this = LimitedHttpToolsProtocol  # class attributes live here, whatever subclass is asked
        this.max_head_size = settings.max_header_size
        this.max_header_count = settings.max_header_count
        this.head_timeout = settings.header_timeout
        this.body_timeout = settings.body_timeout
        this.fast_paths = paths = probe()
        this._cycle_extensions = (
            {WRITE_RESPONSE: write_response} if paths.one_write else {}
        )
        this._hold_pipelined = paths.hold_pipelined
        this._lean_events = paths.lean_events
        this._lean_pipeline = paths.lean_pipeline
        this._own_websocket = paths.own_websocket

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.fast_paths is None:  # the first connection of a worker process
            self.configure(Settings.from_env())
        self._state = _ConnectionState(
            {
                CONNECTION_GONE: self._connection_gone,
                CONNECTION_CLOSED: self._closed,
                **self._cycle_extensions,
            }
        )
        if self._lean_pipeline:
            self.pipeline = _Pipeline()  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._lean_events:
            _lean(self.flow._is_writable_event)
        self._arm_head_timer()  # the first head must come in time too

    def connection_lost(self, exc: Exception | None) -> None:
        state = self._state
        state.lost = True
        state.buffer = None
        self._disarm_timer()
        if state.closed is not None and not state.closed.done():
            state.closed.set_result(None)
        ahead = state.ahead
        if ahead is not None and not ahead.response_complete:
            # uvicorn tells only its newest cycle (the pipelined one) that the client left.
            ahead.disconnected = True
            ahead.message_event.set()
        super().connection_lost(exc)
        self._let_go()

    def _let_go(self) -> None:
        """Break this connection's reference cycles, so reference counting frees it now.

        The protocol holds its scope and cycle, and they hold the protocol (the
        extensions' bound methods, the cycle's on_response): without this a closed
        connection, request head included (up to -max-header-size), waits for the
        collector. A request still running keeps what it uses: its cycle and scope
        reach the protocol, the protocol no longer reaches them.
        """
        state = self._state
        state.ahead = None
        state.extensions = {}
        self.cycle = self.scope = None  # type: ignore[assignment]
        self.pipeline.clear()

    # -- bytes in ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        state = self._state
        phase = state.phase
        if phase >= HEAD:
            if phase == WAITING:
                self._hold(data)
            elif phase == HEAD:
                self._head_data(data)
            return
        if len(data) > PIECE:
            self._parse_pieces(data)
        else:
            self._parse(data, phase)

    def _parse(self, data: bytes | memoryview, phase: int) -> None:
        """Feed `data` to the parser, then time (and size) whatever request is left incomplete."""
        super().data_received(data)  # type: ignore[arg-type]
        state = self._state
        now = state.phase
        if now == HEAD:
            if phase == IDLE:
                # The head began with these bytes and has not ended: all of them are head.
                state.head_raw = len(data)
                if state.head_raw > self.max_head_size:
                    self._refuse_head()
                    return
            if state.timer is None:
                self._arm_head_timer()
        elif now == BODY and state.timer is None:
            state.timer = self.loop.call_later(self.body_timeout, self._body_timed_out)

    def _parse_pieces(self, data: bytes) -> None:
        """Parse a large read a piece at a time, and hold what follows a request that must wait.

        A piece runs to the end of the next head (every head ends with CRLF CRLF:
        httptools accepts no bare LF), then to the end of the body its head
        declared. A body of unknown length (chunked), and CRLFs between requests,
        go PIECE bytes at a time: parsing never runs more than PIECE bytes past a
        complete request, and a read costs a parser call per request or per PIECE
        bytes, not one per CRLF CRLF an attacker can pack into it.
        """
        state = self._state
        view = memoryview(data)
        start, size = 0, len(data)
        body: int | None = None  # what is left of a body whose length the head declared
        previous = -1  # the phase the previous piece began in
        while True:
            phase = state.phase
            if phase == BODY:
                stop = start + (body or PIECE)
            elif phase == IDLE and previous == IDLE:
                stop = start + PIECE  # the last piece began no request: blank lines
            else:
                end = data.find(b"\r\n\r\n", start)
                stop = size if end == -1 else end + 4
            stop = min(stop, size)
            self._parse(view[start:stop], phase)
            now = state.phase
            body = self._declared_length() if now == BODY and phase != BODY else None
            previous, start = phase, stop
            if start >= size or now == UPGRADED or self.transport.is_closing():
                return  # (uvicorn too drops what follows an upgrade request in its read)
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
        state = self._state
        if state.buffer is None:
            state.buffer = bytearray(data)
        else:
            state.buffer += data
        if len(state.buffer) > HOLD_LIMIT:
            # Again on every overflow: uvicorn's own flow control may have resumed reading.
            state.paused = True
            self.transport.pause_reading()

    def _head_data(self, data: bytes) -> None:
        """Bytes for a head still incomplete: counted raw, and gathered while no line ends.

        Bytes without a line end all belong to the line in progress, which httptools
        reports only once it ends: they count against max_head_size here, as they
        arrive. Lines that end are counted by on_url/on_header.
        """
        state = self._state
        line_ends = b"\n" in data
        if not line_ends:
            state.head_raw += len(data)
            if state.head_raw > self.max_head_size:
                self._refuse_head()
                return
        held = state.buffer
        if held is not None:
            held += data
        if not line_ends and len(held if held is not None else data) < COALESCE:
            if held is None:
                state.buffer = bytearray(data)
            return
        state.buffer = None
        self._feed(bytes(held) if held is not None else data, HEAD)

    def _feed(self, data: bytes, phase: int) -> None:
        if len(data) > PIECE:
            self._parse_pieces(data)
        else:
            self._parse(data, phase)

    def _refuse_head(self) -> None:
        self._state.head_too_large = True
        self._state.buffer = None
        self.send_400_response("")

    # -- parser callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        state = self._state
        state.phase = HEAD
        state.head_size = state.head_raw = state.header_count = 0
        extensions = self.scope.get("extensions")
        if extensions is None:
            self.scope["extensions"] = state.extensions
        else:
            extensions.update(state.extensions)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        HttpToolsProtocol.on_url(self, url)

    def on_header(self, name: bytes, value: bytes) -> None:
        state = self._state
        state.header_count += 1
        state.head_size += len(name) + len(value) + 4  # _count, inline: this runs per header
        if state.header_count > self.max_header_count or state.head_size > self.max_head_size:
            state.head_too_large = True
            raise HeadTooLarge  # before httptools parses the rest of a head of 150,000 lines
        HttpToolsProtocol.on_header(self, name, value)

    def on_headers_complete(self) -> None:
        state = self._state
        state.phase = BODY  # until on_message_complete, in this read or a later one
        if state.timer is not None:
            self._disarm_timer()
        ahead = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not ahead:  # a new request (not a WebSocket upgrade)
            if self._lean_events:
                _lean(cycle.message_event)
            if ahead is not None and self._hold_pipelined and not ahead.response_complete:
                state.ahead = ahead

    def on_message_complete(self) -> None:
        state = self._state
        if state.timer is not None:
            self._disarm_timer()
        super().on_message_complete()
        cycle = self.cycle
        pending = cycle is not None and not cycle.response_complete
        state.phase = WAITING if pending and self._hold_pipelined else IDLE

    def on_response_complete(self) -> None:
        super().on_response_complete()
        state = self._state
        state.ahead = None
        if state.phase == WAITING and self.cycle.response_complete:
            state.phase = IDLE
            held = state.buffer
            if held is not None and not self.transport.is_closing():
                # What the client sent meanwhile: the next request(s).
                state.buffer = None
                if state.paused:
                    state.paused = False
                    self.transport.resume_reading()
                self._feed(bytes(held), IDLE)

    def handle_websocket_upgrade(self) -> None:
        self._state.phase = UPGRADED
        if self._own_websocket:
            self.connections.discard(self)
            upgrade(self)
        else:
            super().handle_websocket_upgrade()
        # The WebSocket protocol has the transport now; this one is never told of a close.
        self._disarm_timer()
        self._let_go()
        self.parser = None  # type: ignore[assignment]  # it holds this protocol, as uvicorn's close drops it

    def send_400_response(self, msg: str) -> None:
        if not self._state.head_too_large:
            super().send_400_response(msg)
            return
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TOO_LARGE), _TOO_LARGE)
        )
        self._close()

    # -- extensions ----------------------------------------------------------------------

    def _connection_gone(self) -> bool:
        return self._state.lost or self.transport.is_closing()

    def _closed(self) -> asyncio.Future[None]:
        """A future that completes when the connection closes (one request waits at a time)."""
        future = self.loop.create_future()
        if self._state.lost:
            future.set_result(None)
        else:
            self._state.closed = future
        return future

    # -- limits --------------------------------------------------------------------------

    def _count(self, size: int) -> None:
        state = self._state
        state.head_size += size
        if state.head_size > self.max_head_size:
            state.head_too_large = True
            raise HeadTooLarge  # httptools turns this into HttpParserCallbackError

    def _arm_head_timer(self) -> None:
        if self._state.timer is None:
            self._state.timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm_timer(self) -> None:
        if self._state.timer is not None:
            self._state.timer.cancel()
            self._state.timer = None

    def _close(self) -> None:
        """Close the connection, telling every request still running that its client is gone.

        uvicorn learns of a close only in connection_lost, a loop turn later; an
        answer written in between would go to a closed transport (uvloop raises,
        and uvicorn would log the traceback as an application error).
        """
        for cycle in (self.cycle, self._state.ahead):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        self.transport.close()

    def _head_timed_out(self) -> None:
        self._state.timer = None
        if not self.transport.is_closing():
            self._close()

    def _body_timed_out(self) -> None:
        self._state.timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not getattr(self.cycle, "response_started", True):
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TOO_SLOW), _TOO_SLOW)
            )
        self._close()  # the app's receive() now says http.disconnect
