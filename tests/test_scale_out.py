"""Several real `inbox-asgi` processes (and workers) sharing one private Redis act as one server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest

from .redis_support import RedisServer
from .support import ServerProcess, basic, run_cli

pytestmark = pytest.mark.anyio

Start = Callable[..., ServerProcess]


def pair(real_server: Start, redis: RedisServer, *flags: str) -> tuple[ServerProcess, ServerProcess]:
    """Two processes on different ports, one Redis (emptied first)."""
    redis.flush()
    shared = ("-redis-url", redis.url, "-long-polling-timeout", "10", *flags)
    return real_server(*shared), real_server(*shared)


async def post(client: httpx.AsyncClient, sender: str, to: str, body: bytes = b"") -> httpx.Response:
    return await client.post("/inbox", params={"to": to}, headers=basic(sender), content=body)


async def get(client: httpx.AsyncClient, user: str) -> httpx.Response:
    return await client.get("/inbox", headers=basic(user))


async def wait_for_reader(server: ServerProcess, client: httpx.AsyncClient, count: int = 1) -> None:
    """Until `server` reports `count` waiting readers (its /metrics gauge)."""
    with anyio.fail_after(5):
        while True:
            text = (await client.get(f"{server.base_url}/metrics")).text
            line = next(x for x in text.splitlines() if x.startswith("inbox_waiting_readers "))
            if float(line.split()[1]) == count:
                return
            await anyio.sleep(0.01)


async def test_message_posted_via_one_process_reaches_a_reader_waiting_on_another(
    real_server: Start, redis_server: RedisServer
) -> None:
    a, b = pair(real_server, redis_server, "-metrics")
    async with a.async_client() as via_a, b.async_client() as via_b, anyio.create_task_group() as tasks:
        result: list[httpx.Response] = []

        async def read() -> None:
            result.append(await get(via_b, "r"))

        tasks.start_soon(read)
        await wait_for_reader(b, via_b)
        with anyio.fail_after(1):
            assert (await post(via_a, "s", "r", b"offer")).status_code == 200
            while not result:
                await anyio.sleep(0.005)
    assert (result[0].status_code, result[0].content, result[0].headers["x-from"]) == (200, b"offer", "s")


async def test_newest_reader_wins_across_processes(real_server: Start, redis_server: RedisServer) -> None:
    a, b = pair(real_server, redis_server, "-metrics")
    async with a.async_client() as via_a, b.async_client() as via_b, anyio.create_task_group() as tasks:
        results: dict[str, httpx.Response] = {}

        async def read(label: str, client: httpx.AsyncClient) -> None:
            results[label] = await get(client, "r")

        tasks.start_soon(read, "old", via_a)
        await wait_for_reader(a, via_a)
        tasks.start_soon(read, "new", via_b)
        with anyio.fail_after(2):
            while "old" not in results:
                await anyio.sleep(0.005)
        assert results["old"].status_code == 204
        await wait_for_reader(b, via_b)
        await wait_for_reader(a, via_a, 0)
        assert (await post(via_a, "s", "r", b"for the new one")).status_code == 200
    assert (results["new"].status_code, results["new"].content) == (200, b"for the new one")


async def test_passwords_capacity_and_expiry_are_shared(real_server: Start, redis_server: RedisServer) -> None:
    a, b = pair(real_server, redis_server, "-inbox-capacity", "2", "-inbox-timeout", "1", "-long-polling=false")
    async with a.async_client() as via_a, b.async_client() as via_b:
        assert (await get(via_a, "r")).status_code == 204
        wrong = await via_b.get("/inbox", headers=basic("r", "not the password"))
        assert wrong.status_code == 401
        assert (await post(via_a, "s", "r", b"1")).status_code == 200
        assert (await post(via_b, "s", "r", b"2")).status_code == 200
        full = await post(via_a, "s", "r", b"3")
        assert full.status_code == 503 and full.headers["retry-after"]
        assert (await get(via_b, "r")).content == b"1"
        assert (await get(via_a, "r")).content == b"2"
        # Unread for a second, r expires on both processes; the name is free again.
        with anyio.fail_after(5):
            while (await post(via_b, "s", "r", b"probe")).status_code != 404:
                await anyio.sleep(0.05)
        assert (await post(via_a, "s", "r")).status_code == 404
        assert (await via_b.get("/inbox", headers=basic("r", "a new password"))).status_code == 204


async def test_workers_share_one_state(real_server: Start, redis_server: RedisServer) -> None:
    """Each request on a new connection lands on either worker; every message still arrives."""
    redis_server.flush()
    server = real_server("-workers", "2", "-redis-url", redis_server.url, "-long-polling-timeout", "10")
    pairs = 20
    received: dict[int, httpx.Response] = {}

    async def exchange(i: int) -> None:
        # No keep-alive: every request opens its own connection, so the kernel spreads them.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with server.async_client(limits=limits) as reader, server.async_client(limits=limits) as sender:
            assert (await post(reader, f"r{i}", "nobody")).status_code == 404  # creates r{i}
            async with anyio.create_task_group() as tasks:

                async def read() -> None:
                    received[i] = await get(reader, f"r{i}")

                tasks.start_soon(read)
                with anyio.fail_after(10):
                    while True:  # until the reader waits, wherever it landed: then a send wakes it
                        response = await post(sender, f"s{i}", f"r{i}", b"%d" % i)
                        assert response.status_code == 200
                        if i in received or await _delivered(sender, i, received):
                            break

    async with anyio.create_task_group() as tasks:
        for i in range(pairs):
            tasks.start_soon(exchange, i)
    assert sorted(received) == list(range(pairs))
    assert all(r.status_code == 200 and r.content == b"%d" % i for i, r in received.items())


async def _delivered(sender: httpx.AsyncClient, i: int, received: dict[int, httpx.Response]) -> bool:
    with anyio.move_on_after(0.5):
        while i not in received:
            await anyio.sleep(0.005)
    return i in received


async def test_redis_restart_503_then_resumes_and_loses_nothing_accepted(
    real_server: Start, own_redis: RedisServer
) -> None:
    shared = ("-redis-url", own_redis.url, "-inbox-capacity", "100000")
    a = real_server(*shared, "-long-polling-timeout", "30")
    b = real_server(*shared, "-long-polling=false")  # drains without waiting
    accepted: list[bytes] = []
    statuses: set[int] = set()
    stop_sending = anyio.Event()

    async def sender(client: httpx.AsyncClient, label: str) -> None:
        n = 0
        while not stop_sending.is_set():
            body = f"{label}-{n}".encode()
            n += 1
            response = await post(client, label, "r", body)
            statuses.add(response.status_code)
            if response.status_code == 200:
                accepted.append(body)
            else:
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"]
                assert "unavailable" in response.text
                await anyio.sleep(0.01)  # pacing while Redis is down, not synchronisation

    async def accepted_grows_by(count: int) -> None:
        target = len(accepted) + count
        with anyio.fail_after(10):
            while len(accepted) < target:
                await anyio.sleep(0.005)

    async with a.async_client() as via_a, b.async_client() as via_b:
        assert (await post(via_a, "r", "nobody")).status_code == 404  # creates r without waiting
        assert (await post(via_a, "w", "nobody")).status_code == 404  # and w
        long_poll: list[httpx.Response] = []
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sender, via_a, "a")
            tasks.start_soon(sender, via_b, "b")

            async def read_w() -> None:
                long_poll.append(await get(via_a, "w"))

            tasks.start_soon(read_w)
            await accepted_grows_by(50)

            own_redis.stop(save=True)  # Redis goes away mid-traffic (its data kept on disk)
            with anyio.fail_after(10):
                while 503 not in statuses:
                    await anyio.sleep(0.005)
                refused = await get(via_b, "r")
            assert refused.status_code == 503 and refused.headers["retry-after"]

            own_redis.start()  # back on the same port: every process resumes by itself
            await accepted_grows_by(50)
            stop_sending.set()
            # The long poll that spanned the outage kept waiting, and a message still wakes it.
            assert not long_poll
            assert (await post(via_b, "s", "w", b"after the outage")).status_code == 200
            with anyio.fail_after(5):
                while not long_poll:
                    await anyio.sleep(0.005)
            assert (long_poll[0].status_code, long_poll[0].content) == (200, b"after the outage")

        received: list[bytes] = []
        with anyio.fail_after(20):
            while (response := await get(via_b, "r")).status_code == 200:
                received.append(response.content)
        assert response.status_code == 204
    assert statuses == {200, 503}
    assert len(received) == len(set(received)), "a message was delivered twice"
    missing = set(accepted) - set(received)
    assert not missing, f"{len(missing)} accepted messages lost, e.g. {sorted(missing)[:5]}"
    for server in (a, b):
        assert "Traceback" not in server.log(), server.log()


def test_unreachable_redis_at_start_is_exit_2(tmp_path: Path) -> None:
    result = run_cli(["-https=false", "-redis-url", "redis://127.0.0.1:1/0", "-workers", "2"], cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot use Redis at redis://127.0.0.1:1/0" in result.stderr
    assert "Traceback" not in result.stderr
