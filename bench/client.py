"""A tiny HTTP/1.1 client on raw asyncio sockets, for the scenarios wrk cannot drive.

httpx costs more CPU per request than the server under test and a lot of
memory per connection; this client costs little of either, so one process can
hold 20k waiting GETs or drive ping-pong without being the bottleneck. It only
understands what inbox-asgi answers: keep-alive responses with Content-Length.
Requests may be pipelined; responses come back in order.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import struct
from collections import deque
from dataclasses import dataclass

HOST = "127.0.0.1"


def basic(username: str, password: str = "pw") -> bytes:
    return b"Basic " + base64.b64encode(f"{username}:{password}".encode())


def build(
    method: str, target: str, username: str, body: bytes = b"", content_type: bytes | None = None
) -> bytes:
    """A complete raw request authenticated as `username`."""
    head = [
        f"{method} {target} HTTP/1.1".encode(),
        b"Host: 127.0.0.1",
        b"Authorization: " + basic(username),
    ]
    if method == "POST":
        head.append(b"Content-Length: %d" % len(body))
        if content_type:
            head.append(b"Content-Type: " + content_type)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


class Connection(asyncio.Protocol):
    """One keep-alive connection; `request` and `pipeline` await responses in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending: deque[asyncio.Future[Response]] = deque()
        self.lost: Exception | None = None

    @classmethod
    async def open(cls, port: int, host: str = HOST, source: str | None = None) -> Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            cls, host, port, local_addr=(source, 0) if source else None
        )
        return connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("connection closed by the server")
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(self.lost)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.pending:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).split(b"\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            future = self.pending.popleft()
            if not future.done():
                future.set_result(Response(int(lines[0].split()[1]), headers, body))

    def send(self, raw: bytes) -> asyncio.Future[Response]:
        """Write one request; the future resolves with its response."""
        if self.lost is not None or self.transport is None:
            raise ConnectionError("connection is closed") from self.lost
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        self.transport.write(raw)
        return future

    async def request(self, raw: bytes) -> Response:
        return await self.send(raw)

    async def pipeline(self, requests: list[bytes]) -> list[Response]:
        """Write many requests at once and wait for all their responses."""
        if self.transport is None:
            raise ConnectionError("connection is not open")
        futures = []
        loop = asyncio.get_running_loop()
        for _ in requests:
            future: asyncio.Future[Response] = loop.create_future()
            self.pending.append(future)
            futures.append(future)
        self.transport.write(b"".join(requests))
        return list(await asyncio.gather(*futures))

    def close(self, reset: bool = False) -> None:
        close(self.transport, reset)


def close(transport: asyncio.Transport | None, reset: bool = False) -> None:
    """Close; `reset` sends RST instead of FIN, so no TIME_WAIT eats local ports."""
    if transport is None:
        return
    if reset:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.close()


async def run_all(port: int, requests: list[bytes], connections: int = 8, batch: int = 200) -> list[Response]:
    """Send many independent requests fast: pipelined batches over a few connections."""
    pool = [await Connection.open(port) for _ in range(connections)]
    chunks = [requests[i : i + batch] for i in range(0, len(requests), batch)]
    results: list[list[Response]] = [[] for _ in chunks]

    async def worker(index: int) -> None:
        for number in range(index, len(chunks), connections):
            results[number] = await pool[index].pipeline(chunks[number])

    await asyncio.gather(*(worker(i) for i in range(connections)))
    for connection in pool:
        connection.close()
    return [response for chunk in results for response in chunk]
