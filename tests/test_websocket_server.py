"""/inbox/ws on a real `inbox-asgi` over TLS, with the `websockets` client: what only a real server shows.

The upgrade through inbox-asgi's own HTTP protocol, sockets cut without a
close handshake in the middle of a delivery, and SIGTERM answering 1001.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from inbox_asgi.client import InboxClient
from inbox_asgi.http.websocket import frame_limit

from .redis_support import RedisServer
from .support import ServerProcess, UpgradeStrippingProxy, basic, memory_bytes

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def ws_url(server: ServerProcess) -> str:
    return server.base_url.replace("https://", "wss://").replace("http://", "ws://") + "/inbox/ws"


def context(server: ServerProcess) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=server.ca_path)


async def open_socket(server: ServerProcess, user: str = "r") -> tuple[ClientConnection, int]:
    ws = await connect(ws_url(server), ssl=context(server), additional_headers=basic(user))
    frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert frame["type"] == "ready"
    return ws, int(frame["inbox"])


async def next_frame(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return frame


async def post_all(client: httpx.AsyncClient, bodies: list[bytes]) -> None:
    for body in bodies:
        response = await client.post("/inbox?to=r", content=body, headers=basic("s"))
        assert response.status_code == 200


async def test_delivery_over_tls_and_1001_with_nothing_lost_on_sigterm(
    real_server: Callable[..., ServerProcess],
) -> None:
    server = real_server()
    async with server.async_client() as client:
        ws, _ = await open_socket(server)
        await post_all(client, [b"one", b"two"])
        first, second = await next_frame(ws), await next_frame(ws)
        assert (first["body"], second["body"]) == ("one", "two") and first["id"] < second["id"]
        await ws.send(json.dumps({"type": "ack", "id": first["id"]}))
        await ws.send(json.dumps({"type": "send", "ref": 1, "to": "s", "body": "reply"}))
        assert await next_frame(ws) == {"type": "sent", "ref": 1}
        response = await client.get("/inbox", headers=basic("s"))
        assert (response.status_code, response.content, response.headers["x-from"]) == (200, b"reply", "r")
        server.process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert server.stop() == 0
    assert "Traceback" not in server.log()


async def read_through_cuts(
    opening: Callable[[], Awaitable[tuple[ClientConnection, int]]],
    total: int,
    rng: random.Random,
    most_frames: int,
) -> list[str]:
    """Read `total` messages through sockets each aborted (no close frame) after 1 to
    `most_frames` frames, acking 30% of them; the bodies in arrival order after dedup by id,
    all on one generation."""
    seen: set[int] = set()
    bodies: list[str] = []
    generation = None
    while len(bodies) < total:
        ws, current = await opening()
        assert generation in (None, current)
        generation = current
        try:
            for _ in range(rng.randrange(1, most_frames + 1)):
                frame = await next_frame(ws)
                if frame["id"] not in seen:  # the client's dedup
                    seen.add(frame["id"])
                    bodies.append(frame["body"])
                if rng.random() < 0.3:
                    await ws.send(json.dumps({"type": "ack", "id": frame["id"]}))
                if len(bodies) == total:
                    break
        finally:
            ws.transport.abort()  # no close frame: as if the network went away
    return bodies


async def test_sockets_cut_mid_delivery_lose_nothing_and_repeat_nothing_after_dedup(
    real_server: Callable[..., ServerProcess],
) -> None:
    """Connections aborted without a close handshake, after reading some frames and acking some."""
    server = real_server("-inbox-capacity", "200")
    rng = random.Random(14)
    total = 120
    async with server.async_client() as client:
        claim = await client.post("/inbox?to=nobody", headers=basic("r"))
        assert claim.status_code == 404  # r exists now
        sender = asyncio.create_task(post_all(client, [b"%d" % i for i in range(total)]))
        bodies = await read_through_cuts(lambda: open_socket(server), total, rng, most_frames=19)
        await sender
    assert bodies == [str(i) for i in range(total)]
    assert "Traceback" not in server.log()


async def test_the_python_client_reads_over_a_socket_and_drops_repeats_after_a_cut(
    real_server: Callable[..., ServerProcess],
) -> None:
    server = real_server()
    reader = InboxClient(server.base_url, "r", "pw", verify=str(server.ca_path), transport="websocket")
    sender = InboxClient(server.base_url, "s", "pw", verify=str(server.ca_path))
    async with reader, sender:
        assert await reader.receive(timeout=0.2) is None  # opens the inbox
        await sender.send("r", b"\xffraw", content_type="application/octet-stream")
        await sender.send("r", "text")
        first = await reader.receive(timeout=10)
        assert first is not None
        assert (first.sender, first.data, first.content_type) == ("s", b"\xffraw", "application/octet-stream")
        assert reader._ws is not None
        reader._ws.transport.abort()  # cut with "text" perhaps in flight, and the ack of the first
        await sender.send("r", "after the cut")
        texts = [(await reader.receive(timeout=10)) for _ in range(2)]
        assert [m.data if m else None for m in texts] == [b"text", b"after the cut"]
        assert await reader.receive(timeout=0.2) is None


async def test_auto_uses_the_socket_on_both_backends(
    real_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    redis_server.flush()
    for flags in ((), ("-redis-url", redis_server.url)):
        server = real_server(*flags, "-long-polling-timeout", "1")
        reader = InboxClient(server.base_url, "r", "pw", verify=str(server.ca_path), transport="auto")
        sender = InboxClient(server.base_url, "s", "pw", verify=str(server.ca_path))
        async with reader, sender:
            assert await reader.receive(timeout=0.3) is None
            await sender.send("r", "hello")
            message = await reader.receive(timeout=10)
            assert message is not None and message.data == b"hello"
            assert (reader.transport, reader._ws is not None) == ("auto", True)


async def test_auto_falls_back_to_long_polls_behind_a_proxy_without_upgrades(
    real_server: Callable[..., ServerProcess],
) -> None:
    server = real_server("-long-polling-timeout", "1", tls=False)
    proxy = UpgradeStrippingProxy(server.address[1])
    await proxy.start()
    try:
        url = f"http://127.0.0.1:{proxy.port}"
        reader = InboxClient(url, "r", "pw", transport="auto")
        sender = InboxClient(url, "s", "pw")
        async with reader, sender:
            assert await reader.receive(timeout=0.3) is None
            await sender.send("r", "hello")
            message = await reader.receive(timeout=10)
            assert message is not None and message.data == b"hello"
            assert (reader.transport, reader._ws is not None) == ("long-polling", False)
        assert proxy.upgrades_refused >= 1
    finally:
        await proxy.stop()


async def test_an_open_socket_outlives_the_header_timeout_that_closes_a_silent_one(
    real_server: Callable[..., ServerProcess],
) -> None:
    """The upgrade disarms the head timer of inbox-asgi's protocol; `auth` has -header-timeout."""
    server = real_server("-header-timeout", "1")
    ws, _ = await open_socket(server)
    silent = await connect(ws_url(server), ssl=context(server))
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(silent.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
    # `ws` opened first: a head timer of its own would have fired before this 4408.
    await ws.send(json.dumps({"type": "send", "ref": "late", "to": "r", "body": "still here"}))
    assert await next_frame(ws) == {"type": "sent", "ref": "late"}
    assert (await next_frame(ws))["body"] == "still here"
    await ws.close()


async def test_no_compression_and_oversized_frames_refused_before_they_are_buffered(
    real_server: Callable[..., ServerProcess],
) -> None:
    """Per-message deflate would keep zlib state per socket; a frame over the limit is cut at the limit."""
    server = real_server("-max-body-size", "1024")
    options: dict[str, Any] = {"compression": "deflate", "max_size": None}
    ws = await connect(ws_url(server), ssl=context(server), additional_headers=basic("r"), **options)
    try:
        assert ws.response is not None
        assert "sec-websocket-extensions" not in ws.response.headers  # deflate offered, not taken
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
        await ws.send("x" * (frame_limit(1024) + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    finally:
        await ws.close()


def peak_rss_mib(server: ServerProcess) -> float:
    return memory_bytes(server.process.pid, "VmHWM") / 2**20


async def test_huge_frames_are_cut_at_the_limit_not_buffered(
    real_server: Callable[..., ServerProcess],
) -> None:
    """8 sockets each sending a 12 MiB frame: uvicorn alone would buffer each whole (its limit is 16 MiB)."""
    server = real_server()
    before = peak_rss_mib(server)
    sockets = [(await open_socket(server, f"big{i}"))[0] for i in range(8)]
    frame = "x" * (12 * 1024 * 1024)

    async def push(ws: ClientConnection) -> int:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.send(frame)
            await asyncio.wait_for(ws.recv(), 20)
        return closed.value.rcvd.code if closed.value.rcvd else 0

    codes = await asyncio.gather(*(push(ws) for ws in sockets))
    assert set(codes) <= {1009, 0}  # 0: the server closed while the client was still writing
    grown = peak_rss_mib(server) - before
    assert grown < 40, f"peak RSS grew {grown:.0f} MiB"


async def test_a_socket_that_never_acks_holds_no_bytes_outside_max_queued_bytes(
    real_server: Callable[..., ServerProcess],
) -> None:
    """Over the wire: with a socket reader that reads but never acks, the store fills at the same
    -max-queued-bytes as with nobody reading; its window (32 messages) is no room beyond it."""
    body = b"x" * 10_000
    cap = 6 * (len(body) + 1 + 200)  # six messages from "s", overhead included
    server = real_server("-max-queued-bytes", str(cap), "-inbox-capacity", "100")
    ws, _ = await open_socket(server)
    try:
        async with server.async_client() as client:
            statuses = []
            for _ in range(40):
                response = await client.post("/inbox?to=r", content=body, headers=basic("s"))
                statuses.append(response.status_code)
        frames = [await next_frame(ws) for _ in range(statuses.count(200))]  # read, never acked
        assert statuses.count(200) == 6, statuses
        assert set(statuses[6:]) == {503}
        assert [frame["body"] for frame in frames] == [body.decode()] * 6
    finally:
        await ws.close()


def rss_mib(server: ServerProcess) -> float:
    return memory_bytes(server.process.pid) / 2**20


async def test_an_open_socket_does_not_hold_its_upgrades_head(
    real_server: Callable[..., ServerProcess],
) -> None:
    """Sockets upgraded with 200 KB heads, kept open: a second batch of 60 (12 MB of heads)
    reuses what the first batch's heads were freed from, so the server does not grow by it.

    Over plain TCP: over TLS each connection also keeps uvloop's SSL read buffer
    (up to 256 KiB, as much of it resident as the largest read touched).
    """
    server = real_server(tls=False)
    padding = {"X-Padding": "p" * 200_000}
    sockets = []

    async def open_batch(batch: int) -> None:
        for number in range(60):
            headers = {**basic(f"big{batch}-{number}"), **padding}
            ws = await connect(ws_url(server), additional_headers=headers)
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
            sockets.append(ws)

    await open_batch(1)
    before = rss_mib(server)
    await open_batch(2)
    grown = rss_mib(server) - before
    assert grown < 5, f"RSS grew {grown:.1f} MiB for 60 more open sockets (12 MB of heads)"
    async with server.async_client() as client:  # and they all still work
        response = await client.post("/inbox?to=big1-0", content=b"hello", headers=basic("s"))
        assert response.status_code == 200
        assert (await next_frame(sockets[0]))["body"] == "hello"
    for ws in sockets:
        await ws.close()
