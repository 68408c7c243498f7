"""Where each command goes: one Redis server, or the node of a Redis Cluster that owns its slot.

Found out on the first connection (no flag): a node with cluster support
answers CLUSTER SLOTS, a standalone server refuses it. In a cluster each
command is routed by the hash slot of its first key to that slot's primary,
through one auto-pipelined connection per node (`pipeline.NodeConnection`).
A MOVED reply (the slot moved: the command did not run) reloads the slot map
and sends the command once more; a node that cannot be reached fails only the
commands for its slots (503 for those requests), and is tried again on the
next command for it. NOSCRIPT (a node restarted or flushed) loads the scripts
on that node and runs the command again: it did not run either.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from redis.asyncio.connection import parse_url
from redis.crc import key_slot
from redis.exceptions import ConnectionError, MovedError, NoScriptError, RedisError, ResponseError

from inbox_asgi.mailbox.redis.pipeline import Arg, Endpoint, NodeConnection, PushHandler

#: Seconds any one Redis command may take before the request gets 503.
SOCKET_TIMEOUT = 2.0
SLOTS = 16384

#: A command and the key that decides its slot.
Command = tuple[bytes, Sequence[Arg]]


def endpoint_from_url(url: str) -> Endpoint:
    """redis:// or rediss:// (TLS), with user, password, database and the timeouts of the URL's query."""
    options = parse_url(url)  # ValueError for a URL that is not Redis's
    tls = None
    if urlsplit(url).scheme == "rediss":
        query = {key: values[-1] for key, values in parse_qs(urlsplit(url).query).items()}
        tls = ssl.create_default_context(cafile=query.get("ssl_ca_certs"))
        if query.get("ssl_certfile"):
            tls.load_cert_chain(query["ssl_certfile"], query.get("ssl_keyfile"))
        if query.get("ssl_cert_reqs", "required").lower() in ("none", "optional"):
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        elif query.get("ssl_check_hostname", "true").lower() in ("false", "0", "no"):
            tls.check_hostname = False
    timeout = float(str(options.get("socket_timeout") or SOCKET_TIMEOUT))
    return Endpoint(
        host=str(options.get("host", "localhost")),
        port=int(options.get("port", 6379)),
        username=options.get("username"),
        password=options.get("password"),
        db=int(options.get("db") or 0),
        tls=tls,
        timeout=timeout,
        connect_timeout=float(str(options.get("socket_connect_timeout") or timeout)),
    )


class Store:
    """Runs commands on the right node, many per write; replies (or their errors) in order, never raised."""

    def __init__(self, endpoint: Endpoint, scripts: Sequence[bytes] = ()) -> None:
        self.seed = endpoint
        self.scripts = tuple(scripts)
        #: None until the first connection tells.
        self.cluster: bool | None = None
        self._slots: list[Endpoint] = []
        self._nodes: dict[str, NodeConnection] = {}
        self._connecting: dict[str, asyncio.Future[NodeConnection]] = {}
        self._topology: asyncio.Future[None] | None = None
        #: Bumped whenever a connection is lost: what a process knew of Redis's data may be stale.
        self.generation = 0

    @classmethod
    def from_url(cls, url: str, scripts: Sequence[bytes] = ()) -> Store:
        return cls(endpoint_from_url(url), scripts)

    # -- running commands ----------------------------------------------------------------------

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Each command's reply, or the exception it failed with (nothing is raised)."""
        try:
            await self.ready()
        except RedisError as error:
            return [error] * len(commands)
        replies = await self._route(commands)
        redo = [i for i, reply in enumerate(replies) if isinstance(reply, MovedError | NoScriptError)]
        if redo:  # neither ran: a slot moved, or a node lost its scripts
            if any(isinstance(replies[i], MovedError) for i in redo):
                await self._refresh()
            for i, reply in zip(redo, await self._route([commands[i] for i in redo]), strict=True):
                replies[i] = reply
        return replies

    async def ready(self) -> None:
        """Connected at least once (so the mode is known); raises RedisError otherwise."""
        if self.cluster is None:
            await self._refresh()

    def node_for(self, key: bytes) -> Endpoint:
        return self._slots[key_slot(key)] if self.cluster else self.seed

    async def _route(self, commands: Sequence[Command]) -> list[Any]:
        futures: list[asyncio.Future[Any]] = []
        for key, args in commands:
            node = self._slots[key_slot(key)] if self.cluster else self.seed
            connection = self._nodes.get(node.address)
            if connection is None or connection.closed:
                try:
                    connection = await self._connect(node)
                except RedisError as error:
                    failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                    failed.set_result(error)
                    futures.append(failed)
                    continue
            futures.append(connection.call(args))
        replies = list(await asyncio.gather(*futures)) if len(futures) > 1 else [await futures[0]]
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                node = self._slots[key_slot(commands[i][0])] if self.cluster else self.seed
                await self._load_scripts(node)
        return replies

    async def _connect(self, node: Endpoint) -> NodeConnection:
        """The node's connection, opened once however many requests ask at the same time."""
        pending = self._connecting.get(node.address)
        if pending is None:
            pending = asyncio.ensure_future(NodeConnection.open(node))
            self._connecting[node.address] = pending
            pending.add_done_callback(lambda _: self._connecting.pop(node.address, None))
        connection = await asyncio.shield(pending)
        if self._nodes.get(node.address) is not connection:
            self._nodes[node.address] = connection
            connection.on_lost = self._on_lost
        return connection

    def _on_lost(self) -> None:
        self.generation += 1

    async def _load_scripts(self, node: Endpoint) -> None:
        connection = self._nodes.get(node.address)
        if connection is not None and not connection.closed:
            await asyncio.gather(*(connection.call((b"SCRIPT", b"LOAD", source)) for source in self.scripts))

    # -- the slot map ---------------------------------------------------------------------------

    async def _refresh(self) -> None:
        """Learn the mode and (cluster) the slot map; one request does it for all that ask meanwhile."""
        if self._topology is None:
            self._topology = asyncio.ensure_future(self._load_topology())
        topology = self._topology
        try:
            await asyncio.shield(topology)
        finally:
            if self._topology is topology:
                self._topology = None

    async def _load_topology(self) -> None:
        candidates = [self.seed, *{node.address: node for node in self._slots}.values()]
        error: RedisError = ConnectionError(f"cannot reach Redis at {self.seed.address}")
        for node in candidates:
            try:
                connection = await self._connect(node)
            except RedisError as failure:
                error = failure
                continue
            reply = await connection.call((b"CLUSTER", b"SLOTS"))
            if isinstance(reply, ResponseError) and "cluster support disabled" in str(reply):
                self.cluster = False
                return
            if isinstance(reply, RedisError):
                error = reply
                continue
            slots: list[Endpoint | None] = [None] * SLOTS
            for first, last, primary, *_ in reply:
                host = primary[0].decode() or node.host
                target = self.seed.at(host, int(primary[1]))
                slots[first : last + 1] = [target] * (last - first + 1)
            # A slot no node serves: send its commands to the seed, which answers with an error.
            self._slots = [slot or self.seed for slot in slots]
            self.cluster = True
            return
        raise error

    # -- subscriber connections (pub/sub) -------------------------------------------------------

    async def subscriber(self, node: Endpoint, on_push: PushHandler) -> NodeConnection:
        """A connection of its own for pub/sub on `node`: every reply goes to `on_push`."""
        return await NodeConnection.open(node, on_push)

    async def refresh(self) -> None:
        """Reload the slot map (after a node was lost); errors are left to the next command."""
        with contextlib.suppress(RedisError):
            await self._refresh()

    async def aclose(self) -> None:
        for connection in self._nodes.values():
            connection.close()
        self._nodes.clear()
