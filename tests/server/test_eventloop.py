"""The eager-accepting uvloop: every queued connection is taken in one loop turn."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import ClassVar

import pytest

from inbox_asgi.server.eventloop import EagerAcceptServer, new_event_loop

BURST = 100


class Echo(asyncio.Protocol):
    made: ClassVar[list[Echo]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        Echo.made.append(self)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


def run(main: Callable[[], Awaitable[None]]) -> None:
    Echo.made = []
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())


def burst_of_connections(port: int, count: int) -> list[socket.socket]:
    """Connections the kernel has completed and queued, none of them accepted yet."""
    clients = []
    for _ in range(count):
        client = socket.socket()
        client.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            client.connect(("127.0.0.1", port))
        clients.append(client)
    return clients


def test_a_burst_is_accepted_within_a_few_loop_turns() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=1024)
        assert isinstance(server, EagerAcceptServer)
        port = server.sockets[0].getsockname()[1]
        clients = burst_of_connections(port, BURST)
        turns = 0
        while len(Echo.made) < BURST and turns < 1000:
            await asyncio.sleep(0)
            turns += 1
        # libuv alone accepts one per turn: a hundred turns at least.
        assert len(Echo.made) == BURST and turns < 10, (len(Echo.made), turns)
        for client in clients:
            client.close()
        server.close()
        await server.wait_closed()

    run(main)


def test_connections_accepted_eagerly_speak_tls(tls_files: tuple[str, str, str]) -> None:
    cert, key, ca = tls_files
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=ca)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]

        async def echo(n: int) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context)
            writer.write(b"ping %d" % n)
            answer = await reader.readexactly(len(b"ping %d" % n))
            writer.close()
            return answer

        answers = await asyncio.gather(*(echo(n) for n in range(20)))
        assert answers == [b"ping %d" % n for n in range(20)]
        server.close()
        await server.wait_closed()

    run(main)


def test_close_stops_accepting() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        assert server.is_serving()
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)

    run(main)
