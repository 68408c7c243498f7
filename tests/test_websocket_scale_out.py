"""/inbox/ws across real `inbox-asgi` processes sharing one Redis, or two nodes of a 3-node Redis Cluster.

A socket is its inbox's reader on whichever process it is open: messages
POSTed to another process reach it, a GET or socket on another process takes
over (4409), and what it was sent but not acknowledged survives the socket, the
connection and the process.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections.abc import Callable

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .redis_support import own_cluster, redis_cluster
from .support import ServerProcess, basic
from .test_scale_out import Store, pair, store, urls
from .test_websocket_server import next_frame, open_socket, read_through_cuts

__all__ = ["own_cluster", "redis_cluster", "store"]

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

Start = Callable[..., ServerProcess]


async def post(http: httpx.AsyncClient, body: bytes, to: str = "r", sender: str = "s") -> None:
    response = await http.post("/inbox", params={"to": to}, headers=basic(sender), content=body)
    assert response.status_code == 200, response.text


async def closed_with(ws: ClientConnection) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    return closed.value.rcvd.code if closed.value.rcvd else 0


async def ack(ws: ClientConnection, message_id: int) -> None:
    await ws.send(json.dumps({"type": "ack", "id": message_id}))


async def test_a_socket_on_one_process_gets_what_posts_to_another_send_and_sends_to_its_gets(
    real_server: Start, store: Store
) -> None:
    a, b = pair(real_server, store)
    async with b.async_client() as via_b:
        ws, generation = await open_socket(a)
        await post(via_b, b"offer")
        await post(via_b, "ünïcode".encode())
        first, second = await next_frame(ws), await next_frame(ws)
        assert (first["body"], first["from"], second["body"]) == ("offer", "s", "ünïcode")
        assert first["id"] < second["id"]
        await ack(ws, second["id"])
        frame = {"type": "send", "ref": 7, "to": "s", "body": "answer", "content_type": "x/y"}
        await ws.send(json.dumps(frame))
        assert await next_frame(ws) == {"type": "sent", "ref": 7}
        got = await via_b.get("/inbox", headers=basic("s"))
        assert (got.status_code, got.content, got.headers["x-from"], got.headers["content-type"]) == (
            200,
            b"answer",
            "r",
            "x/y",
        )
        await ws.close()
        again, same = await open_socket(b)  # the same inbox on the other process
        assert same == generation
        await again.close()


async def test_a_get_on_another_process_supersedes_the_socket_with_4409(
    real_server: Start, store: Store
) -> None:
    a, b = pair(real_server, store)
    async with b.async_client() as via_b:
        ws, _ = await open_socket(a)
        await post(via_b, b"not acknowledged")
        assert (await next_frame(ws))["body"] == "not acknowledged"
        got = await via_b.get("/inbox", headers=basic("r"))
        assert (got.status_code, got.content) == (200, b"not acknowledged")
        assert await closed_with(ws) == 4409
        newer, _ = await open_socket(b)
        older, _ = await open_socket(a)  # and a newer socket anywhere, likewise
        assert await closed_with(newer) == 4409
        await older.close()


async def test_sockets_cut_mid_delivery_on_either_process_lose_and_repeat_nothing_after_dedup(
    real_server: Start, store: Store
) -> None:
    """Connections aborted without a close handshake, after reading some frames and acking some,
    each reconnecting to a process picked at random while POSTs go to both."""
    servers = pair(real_server, store, "-inbox-capacity", "300")
    rng = random.Random(14)
    total = 150

    async def send_all(http: list[httpx.AsyncClient]) -> None:
        for i in range(total):
            await post(http[i % 2], b"%d" % i)

    async with servers[0].async_client() as first, servers[1].async_client() as second:
        claim = await first.post("/inbox?to=nobody", headers=basic("r"))
        assert claim.status_code == 404  # r exists now
        sender = asyncio.create_task(send_all([first, second]))
        bodies = await read_through_cuts(lambda: open_socket(rng.choice(servers)), total, rng, most_frames=24)
        await sender
    assert bodies == [str(i) for i in range(total)]
    for server in servers:
        assert "Traceback" not in server.log()


async def test_a_socket_process_killed_mid_delivery_loses_nothing(real_server: Start, store: Store) -> None:
    """SIGKILL: no close, no put-back by the process; the other process's socket gets it all."""
    a, b = pair(real_server, store)
    async with b.async_client() as via_b:
        ws, _ = await open_socket(a)
        for i in range(6):
            await post(via_b, b"%d" % i)
        frames = [await next_frame(ws) for _ in range(6)]
        await ack(ws, frames[1]["id"])
        await asyncio.sleep(0.2)  # the ack reached Redis
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(10)
        await post(via_b, b"6")
        again, _ = await open_socket(b)
        rest = [await next_frame(again) for _ in range(5)]
        assert [f["body"] for f in rest] == ["2", "3", "4", "5", "6"]
        assert [f["id"] for f in rest[:4]] == [f["id"] for f in frames[2:]]
        await again.close()


async def test_a_server_restart_answers_1001_and_loses_nothing(real_server: Start, store: Store) -> None:
    """SIGTERM: sockets close with 1001, their unacknowledged messages back; a new process reads on."""
    flags = ("-long-polling-timeout", "10", "-cleanup-interval", "30")
    a, b = pair(real_server, store)
    total = 60
    async with b.async_client() as via_b:

        async def send_all() -> None:
            for i in range(total):
                await post(via_b, b"%d" % i)
                await asyncio.sleep(0.005)

        ws, _ = await open_socket(a)  # first: a POST to an inbox not made yet is a 404
        sender = asyncio.create_task(send_all())
        seen: list[int] = []
        bodies: list[str] = []
        while len(bodies) < 10:
            frame = await next_frame(ws)
            seen.append(frame["id"])
            bodies.append(frame["body"])
            if len(bodies) % 3 == 0:
                await ack(ws, frame["id"])
        a.process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if frame["id"] not in seen:
                    seen.append(frame["id"])
                    bodies.append(frame["body"])
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert a.stop() == 0
        restarted = real_server("-redis-url", urls(store)[0], *flags)
        ws, _ = await open_socket(restarted)
        while len(bodies) < total:
            frame = await next_frame(ws)
            if frame["id"] not in seen:
                seen.append(frame["id"])
                bodies.append(frame["body"])
            await ack(ws, frame["id"])
        await sender
        await ws.close()
    assert bodies == [str(i) for i in range(total)]
    assert "Traceback" not in a.log() and "Traceback" not in restarted.log()
