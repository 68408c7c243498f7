"""The event loop inbox-asgi runs on: uvloop, TLS handshakes bounded, accepting eagerly.

uvloop gives a TLS handshake 60 s by default, during which a silent client holds
a connection and its TLS state (~50 KiB): -header-timeout bounds it instead,
like the head that follows it. The timeout is read from INBOX_* variables, as
each `-workers` process creates its own loop before anything else.

libuv accepts one new connection per turn of the event loop, so that processes
sharing a listening socket take turns. Under load a turn takes milliseconds:
when 200 peers connect to a busy server at once, the last one waits 200 turns,
half a second, before its first request is even read. Go's server and
asyncio's own loop accept every waiting connection at once; this loop makes
uvloop do the same by watching each listening socket a second time, through a
duplicate descriptor, and accepting until the queue is empty. Only for a single
process (see cli): with `-workers` processes sharing a socket, libuv's turn-taking
spreads connections better.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import uvloop

from inbox_asgi.config import Settings

logger = logging.getLogger("inbox_asgi")

#: Connections accepted per readiness event at most, so a flood cannot hold the loop.
ACCEPT_BATCH = 256
#: After running out of descriptors (or memory), leave accepting to libuv for a moment:
#: its own accept copes with that, and retrying on every turn would spin.
RESOURCE_PAUSE = 0.1
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class EagerAcceptServer(asyncio.AbstractServer):
    """uvloop's server plus a reader that drains each listening socket's queue.

    Connections it accepts go through `connect_accepted_socket`, TLS included,
    and so reach the very protocol factory the server uses.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        server: asyncio.AbstractServer,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        ssl: Any,
        handshake_timeout: float | None = None,
    ) -> None:
        self._loop = loop
        self._server = server
        self._protocol_factory = protocol_factory
        # uvloop refuses a handshake timeout without TLS.
        self._tls: dict[str, Any] = {"ssl": ssl}
        if ssl is not None and handshake_timeout is not None:
            self._tls["ssl_handshake_timeout"] = handshake_timeout
        self._connecting: set[asyncio.Task[Any]] = set()
        self._listeners: list[socket.socket] = []
        for listening in getattr(server, "sockets", ()):
            if listening.type != socket.SOCK_STREAM:
                continue
            listener = socket.socket(fileno=os.dup(listening.fileno()))
            listener.setblocking(False)
            self._listeners.append(listener)
        if server.is_serving():
            self._watch_all()

    @property
    def sockets(self) -> Any:
        return getattr(self._server, "sockets", ())

    def close(self) -> None:
        for listener in self._listeners:
            self._loop.remove_reader(listener.fileno())
            listener.close()
        self._listeners = []
        self._server.close()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._server.is_serving()

    async def start_serving(self) -> None:
        await self._server.start_serving()
        self._watch_all()

    async def serve_forever(self) -> None:
        await self._server.serve_forever()

    def _watch_all(self) -> None:
        for listener in self._listeners:
            self._watch(listener)

    def _watch(self, listener: socket.socket) -> None:
        if listener.fileno() != -1:
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                connection, _ = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as error:
                if error.errno in _OUT_OF_RESOURCES:
                    self._loop.remove_reader(listener.fileno())
                    self._loop.call_later(RESOURCE_PAUSE, self._watch, listener)
                else:
                    logger.warning("accept failed: %s", error)
                return
            connection.setblocking(False)
            if connection.family in (socket.AF_INET, socket.AF_INET6):
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self._loop.create_task(
                self._loop.connect_accepted_socket(self._protocol_factory, connection, **self._tls)
            )
            self._connecting.add(task)
            task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[Any]) -> None:
        self._connecting.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # A peer gone before it was set up, or a failed TLS handshake: as with
            # uvloop's own accept path, nothing for anyone but a debugger.
            logger.debug("connection not set up: %r", error)


class InboxLoop(uvloop.Loop):
    """uvloop whose TLS servers give a handshake `handshake_timeout` seconds, not 60."""

    #: Set after construction: uvloop.Loop takes no constructor arguments.
    handshake_timeout: float | None = None

    async def create_server(  # type: ignore[override]
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], *args: Any, **kwargs: Any
    ) -> asyncio.AbstractServer:
        if kwargs.get("ssl") is not None and kwargs.get("ssl_handshake_timeout") is None:
            kwargs["ssl_handshake_timeout"] = self.handshake_timeout
        return await super().create_server(protocol_factory, *args, **kwargs)


class EagerAcceptLoop(InboxLoop):
    """InboxLoop that also drains each listening socket's queue in one turn (one process only)."""

    async def create_server(  # type: ignore[override]
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], *args: Any, **kwargs: Any
    ) -> asyncio.AbstractServer:
        server = await super().create_server(protocol_factory, *args, **kwargs)
        ssl = kwargs.get("ssl")
        timeout = kwargs.get("ssl_handshake_timeout", self.handshake_timeout)
        return EagerAcceptServer(self, server, protocol_factory, ssl, timeout)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvicorn's `loop` factory for one process (`loop="inbox_asgi.server.eventloop:new_event_loop"`)."""
    loop = EagerAcceptLoop()
    loop.handshake_timeout = Settings.from_env().header_timeout
    return loop


def new_worker_loop() -> asyncio.AbstractEventLoop:
    """uvicorn's `loop` factory for `-workers` processes: no eager accept (see above)."""
    loop = InboxLoop()
    loop.handshake_timeout = Settings.from_env().header_timeout
    return loop
