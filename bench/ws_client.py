"""A lean WebSocket client on raw asyncio sockets, for the `sockets` scenarios (bench/run.py).

The `websockets` client costs more CPU per frame than the server under test; this
one costs little: the handshake is written by hand, frames it sends are masked
with the all-zero key (RFC 6455 allows any key; XOR with zeros leaves the payload
as is, so there is nothing to mask), and frames it receives are cut out of the
buffer with struct. It only understands what inbox-asgi sends: unfragmented
text frames, pings and close frames. Frames that go out together are written
together (one `transport.write`), as a real client writes an ack with its reply.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Callable
from typing import Any

from client import HOST, basic, close

_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # any 16 bytes in base64: the server's answer is not checked


def frame(text: str) -> bytes:
    """A masked text frame (mask key 0: the payload goes out as is)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x81, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
    return head + b"\0\0\0\0" + payload


def dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


class WsConnection(asyncio.Protocol):
    """One socket to /inbox/ws; `listen(on_frames)`: it gets each read's frames (JSON objects) at once."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        #: Frames that came before `listen` (e.g. with the `ready` frame), handed to it then.
        self.early: list[dict[str, Any]] = []
        self.on_frames: Callable[[list[dict[str, Any]]], None] = self.early.extend

    def listen(self, on_frames: Callable[[list[dict[str, Any]]], None]) -> None:
        """From now on `on_frames` gets each read's frames (first, any that came early)."""
        self.on_frames = on_frames
        if self.early:
            on_frames(self.early)

    @classmethod
    async def open(
        cls, port: int, username: str, password: str = "pw", host: str = HOST, source: str | None = None
    ) -> WsConnection:
        """Connect, upgrade with Basic credentials; returns once the server's `ready` frame is in."""
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            cls, host, port, local_addr=(source, 0) if source else None
        )
        assert connection.transport is not None
        connection.transport.write(
            b"GET /inbox/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + _KEY + b"\r\nSec-WebSocket-Version: 13\r\n"
            b"Authorization: " + basic(username, password) + b"\r\n\r\n"
        )
        await connection.ready
        return connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed before ready"))
        if not self.closed.done():
            self.closed.set_result(1006)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                error = ConnectionError(bytes(buffer[:end]).decode("latin-1"))
                self.ready.set_exception(error)
                return
            del buffer[: end + 4]
            self.upgraded = True
        frames = []
        position, length = 0, len(buffer)
        while length - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            size, start = second & 0x7F, position + 2
            if size == 126:
                if length - position < 4:
                    break
                size, start = struct.unpack_from("!H", buffer, position + 2)[0], position + 4
            elif size == 127:
                if length - position < 10:
                    break
                size, start = struct.unpack_from("!Q", buffer, position + 2)[0], position + 10
            if length < start + size:
                break
            payload = bytes(buffer[start : start + size])
            position = start + size
            opcode = first & 0x0F
            if opcode == 1:
                frames.append(json.loads(payload))
            elif opcode == 9:  # ping: pong with the same payload
                assert self.transport is not None
                self.transport.write(bytes([0x8A, 0x80 | size]) + b"\0\0\0\0" + payload)
            elif opcode == 8:
                code = struct.unpack_from("!H", payload)[0] if size >= 2 else 1005
                if not self.closed.done():
                    self.closed.set_result(code)
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(f"closed with {code}: {payload[2:]!r}"))
        if position:
            del buffer[:position]
        if frames:
            if not self.ready.done() and frames[0].get("type") == "ready":
                self.ready.set_result(frames.pop(0))
            if frames:
                self.on_frames(frames)

    def write(self, *texts: str) -> None:
        """Frames written together, in one write."""
        assert self.transport is not None
        self.transport.write(b"".join(map(frame, texts)))

    def close(self, reset: bool = False) -> None:
        close(self.transport, reset)
