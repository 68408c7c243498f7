"""uvicorn's httptools protocol as inbox-asgi runs it.

It adds the limits uvicorn lacks: uvicorn (httptools) accepts request heads of
any size and waits forever for a head or body that trickles in; both let one
client pin memory or connections. It keeps per-connection state small, since a
waiting reader is a connection. And it offers the endpoint, through
scope["extensions"], what ASGI has no word for: whether the client is gone, and
the hot-path reads and writes of `cycle_io`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from inbox_asgi.http.extensions import COMPLETE_BODY, CONNECTION_CLOSED, CONNECTION_GONE, WRITE_RESPONSE
from inbox_asgi.server.cycle_io import complete_body, write_response

_TOO_LARGE = b"request head too large\n"
_TOO_SLOW = b"request body not received in time\n"


class HeadTooLarge(Exception):
    pass


class _ConnectionState:
    """What the limits track per connection, in one slotted object.

    Kept off the protocol's instance dict on purpose: uvicorn's protocol already
    has 28 attributes, and CPython shares attribute keys between instances only
    up to 30; past that every connection's dict grows by ~1.5 KiB.
    """

    __slots__ = ("closed", "extensions", "head_size", "head_too_large", "in_body", "in_head", "lost", "timer")

    def __init__(self, extensions: dict[str, Any]) -> None:
        self.extensions = extensions
        self.head_size = 0
        self.in_head = False
        self.in_body = False
        self.head_too_large = False
        self.timer: asyncio.TimerHandle | None = None
        self.lost = False
        self.closed: asyncio.Future[None] | None = None


class _Pipeline(list[Any]):
    """uvicorn's queue of pipelined requests, as a list: it is nearly always empty,
    and an empty deque costs ~760 bytes where an empty list costs 56."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


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
    """Counts head bytes as httptools reports them, and times heads and bodies that trickle in.

    Both run for every request, so they stay cheap: a request that arrives whole
    in one read (nearly all of them) never arms a timer; only a head or body
    still incomplete after a read does, and it is disarmed when that part
    completes. A head past `head_timeout` closes the connection; a body past
    `body_timeout` gets 408 (unless a response has started) and a close. These
    limits live here, below ASGI, so they cost an app nothing: servers other
    than `inbox-asgi` (e.g. `uvicorn inbox_asgi:app`) run without them.
    """

    max_head_size = 1048576
    head_timeout = 10.0
    body_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._state = _ConnectionState(
            {
                CONNECTION_GONE: self._connection_gone,
                CONNECTION_CLOSED: self._closed,
                WRITE_RESPONSE: write_response,
                COMPLETE_BODY: complete_body,
            }
        )
        self.pipeline = _Pipeline()  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _lean(self.flow._is_writable_event)
        self._arm_head_timer()  # the first head must come in time too

    def connection_lost(self, exc: Exception | None) -> None:
        state = self._state
        state.lost = True
        self._disarm_timer()
        if state.closed is not None and not state.closed.done():
            state.closed.set_result(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self._state
        if state.timer is None:
            if state.in_head:
                self._arm_head_timer()
            elif state.in_body:
                state.timer = self.loop.call_later(self.body_timeout, self._body_timed_out)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = self._state.extensions
        self._state.head_size = 0
        self._state.in_head = True

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        HttpToolsProtocol.on_url(self, url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        HttpToolsProtocol.on_header(self, name, value)

    def on_headers_complete(self) -> None:
        state = self._state
        state.in_head = False
        state.in_body = True  # until on_message_complete, in this read or a later one
        if state.timer is not None:
            self._disarm_timer()
        super().on_headers_complete()
        if self.cycle is not None:
            _lean(self.cycle.message_event)

    def on_message_complete(self) -> None:
        state = self._state
        state.in_body = False
        if state.timer is not None:
            self._disarm_timer()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._state.head_too_large:
            super().send_400_response(msg)
            return
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TOO_LARGE), _TOO_LARGE)
        )
        self.transport.close()

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

    def _head_timed_out(self) -> None:
        self._state.timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _body_timed_out(self) -> None:
        self._state.timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_started:
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TOO_SLOW), _TOO_SLOW)
            )
        self.transport.close()  # the app's receive() now says http.disconnect


_CONFIGURED: dict[str, type[LimitedHttpToolsProtocol]] = {}
_PREFIX = "LimitedHttpToolsProtocol_"


def limited_protocol(
    max_head_size: int, head_timeout: float, body_timeout: float = 10.0
) -> type[LimitedHttpToolsProtocol]:
    """A protocol class carrying the configured limits (uvicorn instantiates it itself).

    The class is named after its limits and importable by that name (see
    `__getattr__`), because `--workers N` pickles uvicorn's config, classes
    included, into the spawned worker processes.
    """
    name = f"{_PREFIX}{max_head_size}_{round(head_timeout * 1000)}_{round(body_timeout * 1000)}"
    if name not in _CONFIGURED:
        _CONFIGURED[name] = type(
            name,
            (LimitedHttpToolsProtocol,),
            {
                "max_head_size": max_head_size,
                "head_timeout": head_timeout,
                "body_timeout": body_timeout,
                "__module__": __name__,
            },
        )
    return _CONFIGURED[name]


def __getattr__(name: str) -> type[LimitedHttpToolsProtocol]:
    """Rebuild a configured class from its name, when a worker process unpickles it."""
    if name.startswith(_PREFIX):
        numbers = name[len(_PREFIX) :].split("_")
        if len(numbers) == 3 and all(number.isdigit() for number in numbers):
            size, head_ms, body_ms = map(int, numbers)
            return limited_protocol(size, head_ms / 1000, body_ms / 1000)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
