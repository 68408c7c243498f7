"""How a process hears the wake-ups of the readers waiting in it.

- One Redis server: one channel per process (``<prefix>:wake:<random>``),
  subscribed once; scripts PUBLISH a wake-up on the channel named in the
  reader's token.
- Redis Cluster: PUBLISH would be broadcast to every node of the cluster, so a
  wake-up's cost would grow with the cluster. Instead each inbox has a shard
  channel in its own slot (``<prefix>:{<tag>}:w``), scripts SPUBLISH there, and
  Redis delivers it only within that slot's node. A process SSUBSCRIBEs to the
  channel of each inbox one of its readers waits on, on that inbox's node, and
  lets the subscription linger a while after the last reader left (peers poll
  again at once, so a subscription usually serves many waits).

A subscription confirmed after a reader registered (or re-established after a
lost connection) may have missed wake-ups: every reader it serves re-checks its
inbox (`recheck`), so none is lost.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from inbox_asgi.mailbox.redis.pipeline import Endpoint, NodeConnection
from inbox_asgi.mailbox.redis.store import Store

logger = logging.getLogger("inbox_asgi.redis")

#: Seconds without a word on a subscription before it is pinged (and dropped if still silent).
PING_EVERY = 5.0
RECONNECT_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0)
#: Seconds an inbox's shard channel stays subscribed after its last local reader left.
LINGER = 30.0

_CONFIRMED = {b"subscribe", b"ssubscribe"}
_MESSAGE = {b"message", b"smessage"}


@dataclass(eq=False)
class _Node:
    """The subscriptions this process holds on one node."""

    endpoint: Endpoint
    channels: set[bytes] = field(default_factory=set)
    confirmed: set[bytes] = field(default_factory=set)
    connection: NodeConnection | None = None
    task: asyncio.Task[None] | None = None


class Subscriptions:
    """Wake-up channels of this process; `dispatch` gets each wake-up, `recheck` the readers to re-check.

    `recheck(None)` means every local reader.
    """

    def __init__(
        self,
        store: Store,
        prefix: str,
        dispatch: Callable[[bytes], None],
        recheck: Callable[[Iterable[bytes] | None], None],
    ) -> None:
        self.store = store
        self.dispatch = dispatch
        self.recheck = recheck
        self.channel = f"{prefix}:wake:{secrets.token_hex(8)}".encode()
        self._process_id = secrets.token_hex(8).encode()
        #: Shard channel -> tokens of the local readers waiting on its inbox.
        self._wanted: dict[bytes, set[bytes]] = {}
        self._idle_since: dict[bytes, float] = {}
        self._nodes: dict[str, _Node] = {}
        self._home: dict[bytes, _Node] = {}
        self._running = False

    @property
    def sharded(self) -> bool:
        return bool(self.store.cluster)

    @property
    def subscribed(self) -> bool:
        """Whether every subscription this process needs is up (for tests and health checks)."""
        if self.store.cluster is None or not self._running:
            return False
        if not self.sharded:
            node = self._nodes.get(self.store.seed.address)
            return node is not None and self.channel in node.confirmed
        return all(node.connection is not None for node in self._nodes.values() if node.channels)

    def token_prefix(self) -> bytes:
        """What reader tokens start with: the process channel and `|`, or (cluster) `|` and this process."""
        return b"|" + self._process_id + b":" if self.sharded else self.channel + b"|"

    # -- a reader's shard channel (cluster) -------------------------------------------------

    def watch(self, channel: bytes, token: bytes) -> None:
        """A local reader waits on this inbox: subscribe its channel unless already."""
        tokens = self._wanted.setdefault(channel, set())
        tokens.add(token)
        self._idle_since.pop(channel, None)
        if channel not in self._home:
            self._subscribe(channel)

    def unwatch(self, channel: bytes, token: bytes) -> None:
        tokens = self._wanted.get(channel)
        if tokens is not None:
            tokens.discard(token)
            if not tokens:
                self._idle_since[channel] = asyncio.get_running_loop().time()

    def sweep(self) -> None:
        """Drop the subscriptions that lingered long enough without a reader."""
        now = asyncio.get_running_loop().time()
        for channel, since in list(self._idle_since.items()):
            if now - since >= LINGER:
                del self._idle_since[channel], self._wanted[channel]
                node = self._home.pop(channel, None)
                if node is not None:
                    node.channels.discard(channel)
                    node.confirmed.discard(channel)
                    if node.connection is not None:
                        node.connection.send((b"SUNSUBSCRIBE", channel))

    def _subscribe(self, channel: bytes) -> None:
        endpoint = self.store.node_for(channel) if self.sharded else self.store.seed
        node = self._nodes.get(endpoint.address)
        if node is None:
            node = self._nodes[endpoint.address] = _Node(endpoint)
        node.channels.add(channel)
        self._home[channel] = node
        if node.connection is not None:
            node.connection.send((b"SSUBSCRIBE" if self.sharded else b"SUBSCRIBE", channel))
        elif self._running and node.task is None:
            node.task = asyncio.ensure_future(self._serve(node))

    # -- connections ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep every subscription up until cancelled."""
        delays = iter(RECONNECT_DELAYS)
        while True:
            try:
                await self.store.ready()
                break
            except RedisError:
                await asyncio.sleep(next(delays, RECONNECT_DELAYS[-1]))
        self._running = True
        if not self.sharded:
            self._subscribe(self.channel)
        for node in self._nodes.values():
            if node.task is None:
                node.task = asyncio.ensure_future(self._serve(node))
        try:
            await asyncio.Event().wait()
        finally:
            self._running = False
            for node in self._nodes.values():
                if node.task is not None:
                    node.task.cancel()
                if node.connection is not None:
                    node.connection.close()

    async def _serve(self, node: Endpoint | _Node) -> None:
        """One node's subscriber connection, re-established (and its channels re-homed) when lost."""
        assert isinstance(node, _Node)
        failures = 0
        try:
            while node.channels:
                try:
                    connection = await self.store.subscriber(
                        node.endpoint, lambda reply: self._on_push(node, reply)
                    )
                except RedisError:
                    await asyncio.sleep(RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)])
                    failures += 1
                    await self._rehome(node)
                    continue
                node.connection = connection
                command = b"SSUBSCRIBE" if self.sharded else b"SUBSCRIBE"
                for channel in node.channels:
                    connection.send((command, channel))
                await self._keep_alive(connection)
                node.connection = None
                node.confirmed.clear()
                if failures == 0:
                    logger.warning("Redis subscription on %s lost; reconnecting", node.endpoint.address)
                failures = 1
                await self._rehome(node)
        finally:
            node.task = None
            if node.connection is not None:
                node.connection.close()
                node.connection = None

    async def _rehome(self, node: _Node) -> None:
        """After a lost node: reload the slot map, and move channels whose slot another node serves now."""
        if not self.sharded:
            return
        await self.store.refresh()
        for channel in list(node.channels):
            if self.store.node_for(channel).address != node.endpoint.address:
                node.channels.discard(channel)
                del self._home[channel]
                self._subscribe(channel)

    async def _keep_alive(self, connection: NodeConnection) -> None:
        loop = asyncio.get_running_loop()
        while not connection.closed:
            try:
                await asyncio.wait_for(connection.lost(), PING_EVERY)
            except TimeoutError:
                silent = loop.time() - connection.last_heard
                if silent >= 2 * PING_EVERY:
                    connection.close()
                elif silent >= PING_EVERY:
                    connection.send((b"PING",))

    def _on_push(self, node: _Node, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 3:
            return  # a PONG
        kind, channel, data = reply[0], reply[1], reply[2]
        if kind in _MESSAGE:
            self.dispatch(data)
        elif kind in _CONFIRMED:
            if channel not in node.channels:
                return
            first = not node.confirmed
            node.confirmed.add(channel)
            if first and not self.sharded:
                logger.info("Redis subscription on %s", channel.decode())
            # Wake-ups published before this confirmation were not heard: re-check.
            self.recheck(None if channel == self.channel else list(self._wanted.get(channel, ())))
        elif kind == b"sunsubscribe" and channel in node.channels and node.connection is not None:
            node.connection.close()  # Redis moved the slot away: re-home everything on this node
