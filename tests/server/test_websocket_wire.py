"""/inbox/ws byte by byte against a real `inbox-asgi`: what RFC 6455 and SPEC section 9 require.

The regression harness for the server's WebSocket protocol. The tests speak raw
frames over plain TCP (client frames masked, server frames parsed and checked:
unmasked, no reserved bits, minimal length encoding). They cover the handshake,
fragmentation with a ping in the middle, the extended payload lengths, the close
codes of protocol errors, the close handshake, redelivery after a cut, and
bounded memory for a client that stops reading. One test goes over TLS with the
`websockets` client. Nothing asserts details that only today's implementation has.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from inbox_asgi.http.websocket import frame_limit

from ..support import ServerProcess, basic, memory_bytes

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

Start = Callable[..., ServerProcess]
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1 = 0x40
MiB = 1024 * 1024


# -- frames ---------------------------------------------------------------------------


@dataclass
class Frame:
    fin: bool
    opcode: int
    payload: bytes

    def json(self) -> dict[str, Any]:
        assert (self.fin, self.opcode) == (True, TEXT), f"not a whole text frame: {self}"
        value: dict[str, Any] = json.loads(self.payload)
        return value

    def close_code(self) -> int:
        """The status code of a close frame (its reason must be UTF-8, RFC 6455 5.5.1)."""
        assert self.opcode == CLOSE, f"not a close frame: {self}"
        assert len(self.payload) >= 2, f"close frame without a status code: {self}"
        self.payload[2:].decode()
        code: int = struct.unpack("!H", self.payload[:2])[0]
        return code


def masked(payload: bytes, key: bytes) -> bytes:
    size = len(payload)
    stream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big")


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    """A client frame: minimal length encoding, masked with a random key unless `mask=False`."""
    first = (0x80 if fin else 0) | rsv | opcode
    bit = 0x80 if mask else 0
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", first, bit | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, bit | 127, size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + masked(payload, key)


def text(value: dict[str, Any]) -> bytes:
    return frame(TEXT, json.dumps(value, ensure_ascii=False).encode())


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return frame(CLOSE, struct.pack("!H", code) + reason)


# -- a raw client -----------------------------------------------------------------------


class RawSocket:
    """A non-blocking TCP socket read through `loop.sock_recv`: bytes the server sent
    before a reset are still read (a StreamReader raises the reset first)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.buffer = bytearray()
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, server: ServerProcess, receive_buffer: int | None = None) -> RawSocket:
        sock = socket.socket()
        if receive_buffer is not None:  # before connecting, so the window stays that small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, server.address), 10)
        return cls(sock)

    async def send(self, data: bytes) -> None:
        await asyncio.wait_for(self.loop.sock_sendall(self.sock, data), 10)

    async def _fill(self, size: int, deadline: float) -> None:
        while len(self.buffer) < size:
            chunk = await asyncio.wait_for(
                self.loop.sock_recv(self.sock, 1 << 16), deadline - time.monotonic()
            )
            if not chunk:
                raise EOFError(f"connection closed with {bytes(self.buffer[:100])!r} buffered")
            self.buffer += chunk

    async def read_exactly(self, size: int, timeout: float = 10.0) -> bytes:
        await self._fill(size, time.monotonic() + timeout)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def read_head(self, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            await self._fill(len(self.buffer) + 1, deadline)
        return await self.read_exactly(end + 4)

    async def read_frame(self, timeout: float = 10.0) -> Frame:
        """One server frame, checked against RFC 6455 5.1, 5.2 and 5.5."""
        deadline = time.monotonic() + timeout
        first, second = await self.read_exactly(2, timeout)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.read_exactly(2, deadline - time.monotonic()))
            assert size >= 126, "length not in its minimal encoding"
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.read_exactly(8, deadline - time.monotonic()))
            assert 1 << 16 <= size < 1 << 63, "length not in its minimal encoding"
        result = Frame(
            bool(first & 0x80), first & 0x0F, await self.read_exactly(size, deadline - time.monotonic())
        )
        assert not second & 0x80, "a server frame is masked"
        assert not first & 0x70, "reserved bits set without an extension"
        if result.opcode >= CLOSE:
            assert result.fin and size <= 125, f"bad control frame {result}"
        return result

    async def next_frame(self, timeout: float = 10.0) -> Frame:
        """The next frame that is not a ping (the server may ping any time: SPEC 9)."""
        while (received := await self.read_frame(timeout)).opcode == PING:
            pass
        return received

    async def read_message(self, timeout: float = 10.0) -> dict[str, Any]:
        return (await self.next_frame(timeout)).json()

    async def read_close_code(self, timeout: float = 10.0) -> int:
        return (await self.next_frame(timeout)).close_code()

    async def read_to_eof(self, timeout: float = 5.0) -> bytes:
        """Whatever arrives until the server closes TCP (a reset counts as closed)."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(EOFError, ConnectionResetError):
            await self._fill(len(self.buffer) + (1 << 30), deadline)
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def close(self) -> None:
        self.sock.close()

    def reset(self) -> None:
        """Cut the connection with a TCP reset."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


@dataclass
class Head:
    status: int
    headers: dict[str, str]


def upgrade_request(
    server: ServerProcess, key: str | None, *, version: str = "13", user: str | None = "r"
) -> bytes:
    host, port = server.address
    lines = [
        "GET /inbox/ws HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Version: {version}",
    ]
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if user is not None:
        lines.append(f"Authorization: {basic(user)['Authorization']}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def upgrade(raw: RawSocket, request: bytes) -> Head:
    await raw.send(request)
    status_line, *lines = (await raw.read_head()).decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return Head(int(status_line.split()[1]), headers)


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def accept_value(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


async def open_ws(server: ServerProcess, user: str = "r", receive_buffer: int | None = None) -> RawSocket:
    """A raw socket upgraded and authenticated as `user`, its `ready` frame read."""
    raw = await RawSocket.open(server, receive_buffer)
    head = await upgrade(raw, upgrade_request(server, new_key(), user=user))
    assert head.status == 101, head
    ready = await raw.read_message()
    assert ready["type"] == "ready" and isinstance(ready["inbox"], int), ready
    return raw


async def create_inbox(client: httpx.AsyncClient, user: str) -> None:
    """A POST creates its sender's inbox even when it fails (SPEC 2): here 404, no such recipient."""
    response = await client.post("/inbox?to=nobody-at-all", content=b"", headers=basic(user))
    assert response.status_code == 404


async def get_message(client: httpx.AsyncClient, user: str) -> tuple[str, bytes]:
    response = await client.get("/inbox", headers=basic(user))
    assert response.status_code == 200, response
    return response.headers["x-from"], response.content


async def post(client: httpx.AsyncClient, sender: str, recipient: str, body: bytes) -> None:
    response = await client.post(f"/inbox?to={recipient}", content=body, headers=basic(sender))
    assert response.status_code == 200, response


# -- 1. handshake -----------------------------------------------------------------------


async def test_handshake_answers_101_with_the_accept_key(real_server: Start) -> None:
    server = real_server(tls=False)
    raw = await RawSocket.open(server)
    key = new_key()
    head = await upgrade(raw, upgrade_request(server, key))
    assert head.status == 101
    assert head.headers.get("upgrade", "").lower() == "websocket"
    assert "upgrade" in head.headers.get("connection", "").lower()
    assert head.headers.get("sec-websocket-accept") == accept_value(key)
    assert (await raw.read_message())["type"] == "ready"
    raw.close()


async def test_handshake_refuses_another_version_and_a_missing_key(real_server: Start) -> None:
    server = real_server(tls=False)
    refused = {
        "version 8": upgrade_request(server, new_key(), version="8"),
        "no key": upgrade_request(server, None),
    }
    heads = {}
    for case, request in refused.items():
        raw = await RawSocket.open(server)
        heads[case] = await upgrade(raw, request)
        raw.close()
    assert all(400 <= head.status < 500 for head in heads.values()), heads  # RFC 4.4 suggests 426


# -- 2. fragmentation and control frames in between -----------------------------------------


async def test_fragments_with_a_ping_between_them_are_one_message(real_server: Start) -> None:
    server = real_server(tls=False)
    async with server.async_client() as client:
        await create_inbox(client, "s")
        raw = await open_ws(server)
        body = "héllo wörld ✓"
        payload = json.dumps({"type": "send", "ref": 1, "to": "s", "body": body}, ensure_ascii=False).encode()
        # Cut inside "é" and inside "✓": the message is UTF-8 as a whole, not fragment by fragment.
        cut1, cut2 = payload.index(b"\xc3\xa9") + 1, payload.index("✓".encode()) + 2
        await raw.send(
            frame(TEXT, payload[:cut1], fin=False)
            + frame(PING, b"are you there?")
            + frame(CONT, payload[cut1:cut2], fin=False)
            + frame(CONT, payload[cut2:])
        )
        answers = [await raw.next_frame(), await raw.next_frame()]
        pongs = [answer for answer in answers if answer.opcode == PONG]
        assert [pong.payload for pong in pongs] == [b"are you there?"], answers
        assert [answer.json() for answer in answers if answer.opcode != PONG] == [{"type": "sent", "ref": 1}]
        assert await get_message(client, "s") == ("r", body.encode())
        raw.close()


# -- 3. extended payload lengths ----------------------------------------------------------


async def test_16_and_64_bit_payload_lengths_both_ways(real_server: Start) -> None:
    server = real_server("-max-body-size", "100000", tls=False)
    async with server.async_client() as client:
        raw = await open_ws(server)
        # Server to client: message frames over 125 and over 65535 bytes.
        bodies = [b"m" * 300, b"M" * 90_000]
        for posted in bodies:
            await post(client, "s", "r", posted)
        received = [await raw.next_frame() for _ in bodies]
        assert 125 < len(received[0].payload) < 1 << 16 <= len(received[1].payload)
        messages = [answer.json() for answer in received]
        assert [(m["from"], m["body"].encode()) for m in messages] == [("s", b) for b in bodies]
        await raw.send(text({"type": "ack", "id": messages[-1]["id"]}))
        # Client to server: send frames over 125 (16-bit length) and over 65535 bytes (64-bit).
        sent = ["x" * 200, "y" * 70_000]
        for ref, body in enumerate(sent):
            request = text({"type": "send", "ref": ref, "to": "s", "body": body})
            assert len(request) > (125 if ref == 0 else 65535)
            await raw.send(request)
            assert await raw.read_message() == {"type": "sent", "ref": ref}
        assert [await get_message(client, "s") for _ in sent] == [("r", b.encode()) for b in sent]
        raw.close()


# -- 4. protocol errors -------------------------------------------------------------------


SMALL_BODY = 1024
LIMIT = frame_limit(SMALL_BODY)
VALID = b'{"type":"send","ref":1,"to":"r","body":"x"}'


def send_of_size(size: int) -> bytes:
    """A well-formed `send` frame's payload of exactly `size` bytes."""
    start, end = b'{"type":"send","ref":1,"to":"r","body":"', b'"}'
    return start + b"x" * (size - len(start) - len(end)) + end


PROTOCOL_ERRORS: dict[str, tuple[bytes, int]] = {
    "unmasked frame": (frame(TEXT, VALID, mask=False), 1002),
    "RSV1 without an extension": (frame(TEXT, VALID, rsv=RSV1), 1002),
    "opcode 3": (frame(3, VALID), 1002),
    "ping of 126 bytes": (frame(PING, b"p" * 126), 1002),
    "fragmented ping": (frame(PING, b"p", fin=False), 1002),
    "continuation with no message": (frame(CONT, VALID), 1002),
    "new message inside a fragmented one": (frame(TEXT, VALID[:5], fin=False) + frame(TEXT, VALID), 1002),
    "invalid UTF-8": (frame(TEXT, VALID.replace(b'"x"', b'"\xc3\x28"')), 1007),
    "frame over the limit": (frame(TEXT, send_of_size(LIMIT + 1)), 1009),
    "fragments over the limit": (
        frame(TEXT, send_of_size(LIMIT)[: LIMIT // 2], fin=False)
        + frame(CONT, send_of_size(LIMIT)[LIMIT // 2 :] + b" " * 2, fin=False)
        + frame(CONT, b" "),
        1009,
    ),
}


async def test_protocol_errors_close_with_the_rfc_code_then_tcp(real_server: Start) -> None:
    server = real_server("-max-body-size", str(SMALL_BODY), tls=False)
    assert len(send_of_size(LIMIT)) == LIMIT

    async def outcome(case: str, data: bytes) -> tuple[int, bytes] | str:
        raw = await open_ws(server, user=case.replace(" ", "-"))  # one inbox each: none supersedes another
        try:
            await raw.send(data)
            return await raw.read_close_code(), await raw.read_to_eof(timeout=5)
        except (OSError, EOFError, TimeoutError) as error:
            return repr(error)
        finally:
            raw.close()

    results = await asyncio.gather(*(outcome(case, data) for case, (data, _) in PROTOCOL_ERRORS.items()))
    # b"": nothing after the close frame, and TCP closed within 5 s.
    expected = {case: (code, b"") for case, (_, code) in PROTOCOL_ERRORS.items()}
    assert dict(zip(PROTOCOL_ERRORS, results, strict=True)) == expected


# -- 5. close handshake ---------------------------------------------------------------------


async def test_close_handshake_both_ways(real_server: Start) -> None:
    server = real_server(tls=False)
    # The client closes: the server answers 1000 and closes TCP.
    raw = await open_ws(server)
    await raw.send(close_frame(1000, b"bye"))
    assert await raw.read_close_code() == 1000
    assert await raw.read_to_eof() == b""
    raw.close()
    # The server closes (a binary frame is not a JSON text frame: SPEC 9's 4400); the client
    # answers, and the server closes TCP.
    raw = await open_ws(server)
    await raw.send(frame(BINARY, VALID))
    assert await raw.read_close_code() == 4400
    await raw.send(close_frame(4400))
    assert await raw.read_to_eof() == b""
    raw.close()


# -- 7. nothing lost ----------------------------------------------------------------------


async def test_a_message_read_but_not_acked_comes_again_after_a_cut(real_server: Start) -> None:
    server = real_server(tls=False)
    async with server.async_client() as client:
        raw = await open_ws(server)
        await post(client, "s", "r", b"keep me")
        first = await raw.read_message()
        assert (first["type"], first["body"]) == ("message", "keep me")
        raw.close()  # FIN, no close frame
        raw = await open_ws(server)
        assert await raw.read_message() == first
        raw.reset()  # RST, no close frame
        raw = await open_ws(server)
        assert await raw.read_message() == first
        await raw.send(text({"type": "ack", "id": first["id"]}))
        await raw.send(text({"type": "send", "ref": "after ack", "to": "s", "body": ""}))
        assert await raw.read_message() == {"type": "sent", "ref": "after ack"}  # the ack was read
        raw.reset()
        await post(client, "s", "r", b"next")
        raw = await open_ws(server)
        after = await raw.read_message()
        assert (after["body"], after["id"] > first["id"]) == ("next", True)  # the acked one is gone
        raw.close()


# -- 8. over TLS with a real client --------------------------------------------------------


async def test_round_trip_over_tls_with_the_websockets_client(real_server: Start) -> None:
    server = real_server()
    url = server.base_url.replace("https://", "wss://") + "/inbox/ws"
    tls = ssl.create_default_context(cafile=server.ca_path)
    async with server.async_client() as client:
        await create_inbox(client, "s")
        async with connect(url, ssl=tls, additional_headers=basic("r")) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
            await ws.send(json.dumps({"type": "send", "ref": 7, "to": "s", "body": "to s"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "sent", "ref": 7}
            await post(client, "s", "r", b"to r")
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert (message["type"], message["from"], message["body"]) == ("message", "s", "to r")
            await ws.send(json.dumps({"type": "ack", "id": message["id"]}))
        assert await get_message(client, "s") == ("r", b"to s")
        await post(client, "s", "r", b"second")
        async with connect(url, ssl=tls, additional_headers=basic("r")) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["body"] == "second"  # acked: not again


# -- 9. a client that stops reading ----------------------------------------------------------


def rss_mib(server: ServerProcess) -> float:
    return memory_bytes(server.process.pid) / 2**20


async def write_until_stalled(raw: RawSocket, data: bytes, stall: float = 1.0) -> int:
    """Write `data` until the server takes nothing for `stall` seconds, or closes; bytes written."""
    written, chunk = 0, 1 << 16
    while written < len(data):
        try:
            await asyncio.wait_for(raw.loop.sock_sendall(raw.sock, data[written : written + chunk]), stall)
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            break
        written += chunk
    return min(written, len(data))


async def flood_a_client_that_never_reads(server: ServerProcess, request: bytes) -> None:
    """64 MiB of `request` frames, each answered by the server, from a client that reads
    nothing (and a 16 KiB receive window): the server must stop reading from it or drop
    it, not buffer its answers; another client's round trip works meanwhile."""
    flood = request * (64 * MiB // len(request))
    silent = await open_ws(server, "silent", receive_buffer=16 * 1024)
    other = None
    try:
        before = rss_mib(server)
        written = await write_until_stalled(silent, flood)
        grown = rss_mib(server) - before
        other = await open_ws(server, "other")
        await other.send(text({"type": "send", "ref": 1, "to": "other", "body": "still here"}))
        answers = [await other.read_message(), await other.read_message()]
        assert {"type": "sent", "ref": 1} in answers
        assert [answer["body"] for answer in answers if answer["type"] == "message"] == ["still here"]
        grown = max(grown, rss_mib(server) - before)
        print(f"wrote {written / MiB:.1f} of {len(flood) / MiB:.0f} MiB, server RSS grew {grown:.1f} MiB")
        assert grown < 30, (
            f"RSS grew {grown:.1f} MiB while a client that reads nothing wrote {written / MiB:.1f} MiB"
        )
    finally:
        silent.close()
        if other is not None:
            other.close()


async def test_a_client_that_never_reads_its_answers_costs_bounded_memory(real_server: Start) -> None:
    """Each `send` has an 8 KB ref, echoed in its answer: an `error` 404, as there is no such recipient."""
    server = real_server(tls=False)
    await flood_a_client_that_never_reads(
        server, text({"type": "send", "ref": "r" * 8000, "to": "nobody-at-all", "body": ""})
    )


async def test_a_client_that_never_reads_its_pongs_costs_bounded_memory(real_server: Start) -> None:
    """Pings of 125 bytes: RFC 6455 5.5.3 lets a server answer only the latest of pings not yet answered."""
    server = real_server(tls=False)
    await flood_a_client_that_never_reads(server, frame(PING, b"p" * 125))
