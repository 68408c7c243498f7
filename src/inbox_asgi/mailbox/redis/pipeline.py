"""One connection to one Redis node, auto-pipelined: the commands of one event-loop turn go out in one write.

Why not redis-py's client: it spends tens of microseconds of Python per
command (pool checkout, packing, parsing, release) and one `write` plus one
`read` system call per command on both sides, which is most of the CPU a
request costs in Redis mode. Here every request of a loop turn shares one
write, replies are parsed by hiredis, and Redis reads them in one go. Replies
come back in order, so each is matched to the oldest pending future.

A command that fails in Redis resolves to its exception (it is not raised), as
in a pipeline; a connection that breaks or stays silent past the timeout fails
every pending command with `ConnectionError`/`TimeoutError` (they may or may
not have run: callers never retry those).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import hiredis
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    NoScriptError,
    OutOfMemoryError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = bytes | str | int | float
#: Called with every reply of a subscriber connection (subscribe confirmations, messages, pongs).
PushHandler = Callable[[Any], None]

_ERRORS: dict[str, type[ResponseError]] = {
    "NOSCRIPT": NoScriptError,
    "OOM": OutOfMemoryError,
    "MOVED": MovedError,
    "ASK": AskError,
    "CLUSTERDOWN": ClusterDownError,
    "TRYAGAIN": TryAgainError,
}


def classify(error: ResponseError) -> ResponseError:
    """The redis-py exception for an error reply (by its first word)."""
    text = str(error)
    kind = _ERRORS.get(text.split(" ", 1)[0])
    if kind is None:
        return error
    if kind in (MovedError, AskError):
        return kind(text.split(" ", 1)[1])
    return kind(text)


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: address, credentials, database, TLS and timeouts."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: ssl.SSLContext | None = None
    timeout: float = 2.0
    connect_timeout: float = 2.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def at(self, host: str, port: int) -> Endpoint:
        """The same settings for another node of a cluster (no database there)."""
        return Endpoint(
            host, port, self.username, self.password, 0, self.tls, self.timeout, self.connect_timeout
        )


class NodeConnection(asyncio.Protocol):
    """A connected node: `call` for replies in order, or (subscriber) every reply to `on_push`."""

    def __init__(self, endpoint: Endpoint, on_push: PushHandler | None = None) -> None:
        self.endpoint = endpoint
        self.on_push = on_push
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.last_heard = self.loop.time()
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._out: list[bytes] = []
        self._flushing = False
        self._waiting_since = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._lost: asyncio.Future[None] = self.loop.create_future()
        #: Called once when the connection is lost or closed.
        self.on_lost: Callable[[], None] | None = None

    @classmethod
    async def open(cls, endpoint: Endpoint, on_push: PushHandler | None = None) -> NodeConnection:
        """Connect, authenticate and select the database, within the connect timeout."""
        self = cls(endpoint, on_push)
        try:
            async with asyncio.timeout(endpoint.connect_timeout):
                await self.loop.create_connection(
                    lambda: self,
                    endpoint.host,
                    endpoint.port,
                    ssl=endpoint.tls,
                    server_hostname=endpoint.host if endpoint.tls else None,
                )
                handshake: list[Sequence[Arg]] = []
                if endpoint.password is not None:
                    user = () if endpoint.username is None else (endpoint.username,)
                    handshake.append(("AUTH", *user, endpoint.password))
                if endpoint.db:
                    handshake.append(("SELECT", endpoint.db))
                push, self.on_push = self.on_push, None  # handshake replies come in order
                for reply in await asyncio.gather(*(self.call(command) for command in handshake)):
                    if isinstance(reply, ResponseError):
                        raise AuthenticationError(str(reply))
                self.on_push = push
        except (OSError, TimeoutError) as error:
            self.close()
            raise ConnectionError(f"cannot connect to Redis at {endpoint.address}: {error}") from None
        except BaseException:
            self.close()
            raise
        return self

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        period = max(0.05, self.endpoint.timeout / 4)
        self._watchdog = self.loop.call_later(period, self._watch, period)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        self.last_heard = self._waiting_since = self.loop.time()
        pending, push = self._pending, self.on_push
        try:
            while (reply := self._reader.gets()) is not False:
                if isinstance(reply, ResponseError):
                    reply = classify(reply)
                if push is not None:
                    push(reply)
                    continue
                future = pending.popleft()
                if not future.done():
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as error:  # cannot happen with a real Redis
            self._fail(ConnectionError(f"Redis protocol error: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection to Redis at {self.endpoint.address} lost"))

    # -- commands ----------------------------------------------------------------------------

    def call(self, args: Sequence[Arg]) -> asyncio.Future[Any]:
        """Send one command (in this loop turn's write); the future resolves to its reply."""
        future: asyncio.Future[Any] = self.loop.create_future()
        if self.closed:
            future.set_result(ConnectionError(f"connection to Redis at {self.endpoint.address} lost"))
            return future
        if not self._pending:
            self._waiting_since = self.loop.time()
        self._pending.append(future)
        self.send(args)
        return future

    def send(self, args: Sequence[Arg]) -> None:
        """Send one command without waiting for its reply (subscriber connections)."""
        self._out.append(hiredis.pack_command(tuple(args)))  # type: ignore[arg-type]
        if not self._flushing:
            self._flushing = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        if self.transport is not None and not self.closed:
            self.transport.write(b"".join(self._out))
        self._out.clear()

    async def lost(self) -> None:
        """Returns when the connection is gone."""
        await asyncio.shield(self._lost)

    def close(self) -> None:
        self._fail(ConnectionError(f"connection to Redis at {self.endpoint.address} closed"))

    def _watch(self, period: float) -> None:
        """Fail everything pending when Redis has been silent past the timeout (a stalled server)."""
        if self.closed:
            return
        if self._pending and self.loop.time() - self._waiting_since > self.endpoint.timeout:
            self._fail(RedisTimeoutError(f"Redis at {self.endpoint.address} did not answer in time"))
            return
        self._watchdog = self.loop.call_later(period, self._watch, period)

    def _fail(self, error: RedisError) -> None:
        if self.closed:
            return
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.transport is not None:
            self.transport.abort()
        pending, self._pending = self._pending, collections.deque()
        for future in pending:
            if not future.done():
                future.set_result(error)
        if not self._lost.done():
            self._lost.set_result(None)
        if self.on_lost is not None:
            self.on_lost()
