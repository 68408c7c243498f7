"""websocket_protocol in-process: the ASGI side (endings, refusals), flow control both ways, keep-alive."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from inbox_asgi.server import websocket_protocol
from inbox_asgi.server.websocket_frames import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT
from inbox_asgi.server.websocket_protocol import Limits, WebSocketProtocol

from ..support import RecordingTransport, until
from .test_websocket_frames import client_frame

pytestmark = pytest.mark.anyio

App = Any


def open_protocol(app: App, ping: float | None = None) -> tuple[WebSocketProtocol, RecordingTransport]:
    limits = Limits(1000, ping, ping, SimpleNamespace(default_headers=[(b"date", b"today")]))
    scope = {"type": "websocket", "path": "/inbox/ws", "headers": []}
    protocol = WebSocketProtocol(
        app, scope, b"dGhlIHNhbXBsZSBub25jZQ==", limits, asyncio.get_running_loop(), set(), set()
    )
    transport = RecordingTransport()
    protocol.start(transport)
    return protocol, transport


def frames(transport: RecordingTransport) -> list[tuple[int, bytes]]:
    """The server's frames after its 101 (unmasked, short: enough for these tests)."""
    data = b"".join(transport.writes)
    data = data[data.index(b"\r\n\r\n") + 4 :]
    out = []
    while data:
        size = data[1] & 0x7F
        out.append((data[0] & 0x0F, data[2 : 2 + size]))
        data = data[2 + size :]
    return out


async def accepting(scope: Any, receive: Any, send: Any, then: Any) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    await then(receive, send)


async def idle(scope: Any, receive: Any, send: Any) -> None:
    """Accept, then wait for the end."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    await receive()


async def test_the_handshake_answer_carries_the_accept_key_and_default_headers() -> None:
    protocol, transport = open_protocol(idle)
    await until(lambda: transport.writes)
    head = transport.writes[0]
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head  # RFC 6455's example
    assert b"date: today\r\n" in head
    protocol.connection_lost(None)


@pytest.mark.parametrize(("raises", "code"), [(False, 1000), (True, 1011)])
async def test_an_app_that_ends_without_closing_closes_the_socket(raises: bool, code: int) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def end(receive: Any, send: Any) -> None:
            if raises:
                raise RuntimeError("boom")

        await accepting(scope, receive, send, end)

    _, transport = open_protocol(app)
    await until(lambda: transport.closed)
    assert frames(transport) == [(OP_CLOSE, code.to_bytes(2, "big"))]


async def test_a_close_before_accepting_is_a_403() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 4403})

    _, transport = open_protocol(app)
    await until(lambda: transport.closed)
    assert transport.writes[0].startswith(b"HTTP/1.1 403 ")


async def test_no_frame_goes_out_before_the_handshake_is_answered() -> None:
    got: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.extend([await receive(), await receive()])

    protocol, transport = open_protocol(app)
    protocol.data_received(client_frame(OP_PING, b"early") + client_frame(OP_CLOSE, b"\x03\xe8"))
    await until(lambda: len(got) == 2)
    assert got[1] == {"type": "websocket.disconnect", "code": 1000, "reason": ""}
    await until(lambda: transport.closed)
    assert transport.writes == []  # no pong, no close frame: the client left before any answer


async def test_frames_the_app_has_not_read_stop_the_reading_then_all_arrive_in_order() -> None:
    release = asyncio.Event()
    texts: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def read(receive: Any, send: Any) -> None:
            await release.wait()
            while len(texts) < 10:
                texts.append((await receive())["text"])

        await accepting(scope, receive, send, read)

    protocol, transport = open_protocol(app)
    await until(lambda: transport.writes)
    protocol.data_received(b"".join(client_frame(OP_TEXT, b"%d" % i) for i in range(10)))
    assert not transport.reading and len(protocol._events) == 4  # type: ignore[attr-defined]
    release.set()
    await until(lambda: len(texts) == 10)
    assert texts == [str(i) for i in range(10)] and transport.reading
    protocol.connection_lost(None)


async def test_a_client_that_does_not_read_stops_its_pongs_and_the_apps_sends() -> None:
    go, sent = asyncio.Event(), asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def write(receive: Any, send: Any) -> None:
            await go.wait()
            await send({"type": "websocket.send", "text": "x"})
            sent.set()
            await receive()

        await accepting(scope, receive, send, write)

    protocol, transport = open_protocol(app)
    await until(lambda: transport.writes)
    protocol.pause_writing()
    assert not transport.reading
    go.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert not sent.is_set()
    protocol.resume_writing()
    await until(sent.is_set)
    assert transport.reading
    protocol.connection_lost(None)


async def test_keepalive_pings_and_closes_1011_without_a_pong() -> None:
    protocol, transport = open_protocol(idle, ping=0.02)
    await until(lambda: len(transport.writes) > 1 and any(kind == OP_PING for kind, _ in frames(transport)))
    [(_, payload)] = [item for item in frames(transport) if item[0] == OP_PING]
    protocol.data_received(client_frame(OP_PONG, payload))  # answered: the next ping comes
    await until(lambda: len([item for item in frames(transport) if item[0] == OP_PING]) == 2)
    await until(lambda: transport.closed)  # the second is never answered
    assert frames(transport)[-1] == (OP_CLOSE, (1011).to_bytes(2, "big") + b"keepalive ping timeout")


@pytest.mark.parametrize("app_closes", [True, False])
async def test_a_server_stop_leaves_the_socket_to_the_app_for_a_while_then_closes_1012(
    app_closes: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(websocket_protocol, "SHUTDOWN_GRACE", 0.05)
    stop = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def wait(receive: Any, send: Any) -> None:
            await stop.wait()  # the mailbox's shutdown, putting messages back first
            if app_closes:
                await send({"type": "websocket.close", "code": 1001})
            await receive()

        await accepting(scope, receive, send, wait)

    protocol, transport = open_protocol(app)
    await until(lambda: transport.writes)
    protocol.shutdown()
    assert not transport.closed
    stop.set()
    await until(lambda: len(frames(transport)) == 1)
    assert frames(transport) == [(OP_CLOSE, (1001 if app_closes else 1012).to_bytes(2, "big"))]
    if not app_closes:
        assert transport.closed
    protocol.connection_lost(None)
