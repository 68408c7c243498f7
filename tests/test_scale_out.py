"""Several real `inbox-asgi` processes (and workers) sharing one private Redis, or a 3-node
Redis Cluster (each process attached to a different node), act as one server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import anyio
import httpx
import pytest

from .redis_support import RedisCluster, RedisServer, own_cluster, redis_cluster, until
from .support import ServerProcess, basic, run_cli

__all__ = ["own_cluster", "redis_cluster"]

pytestmark = pytest.mark.anyio

Start = Callable[..., ServerProcess]
#: Longer than any long poll in this module, so only fail_after decides when a test is stuck.
CLIENT_TIMEOUT = 60


class Store(Protocol):
    def flush(self) -> None: ...


def urls(store: Store) -> tuple[str, str]:
    """Where the two processes of a pair attach: the one Redis, or two different cluster nodes."""
    if isinstance(store, RedisCluster):
        return tuple(f"redis://127.0.0.1:{node.port}/0" for node in store.nodes[:2])  # type: ignore[return-value]
    assert isinstance(store, RedisServer)
    return store.url, store.url


@pytest.fixture(params=["redis", "cluster"])
def store(request: pytest.FixtureRequest) -> Store:
    """One Redis server, or the session's 3-node Redis Cluster."""
    found: Store = request.getfixturevalue("redis_server" if request.param == "redis" else "redis_cluster")
    return found


def pair(real_server: Start, redis: Store, *flags: str) -> tuple[ServerProcess, ServerProcess]:
    """Two processes on different ports, one Redis or two nodes of a cluster (emptied first).

    A long cleanup interval keeps the TTL refresh (which also re-checks waiting
    readers) from hiding a lost wake-up.
    """
    redis.flush()
    shared = ("-long-polling-timeout", "10", "-cleanup-interval", "30", *flags)
    first, second = urls(redis)
    return real_server("-redis-url", first, *shared), real_server("-redis-url", second, *shared)


def client(server: ServerProcess, **options: object) -> httpx.AsyncClient:
    return server.async_client(timeout=CLIENT_TIMEOUT, **options)


async def post(http: httpx.AsyncClient, sender: str, to: str, body: bytes = b"") -> httpx.Response:
    return await http.post("/inbox", params={"to": to}, headers=basic(sender), content=body)


async def get(http: httpx.AsyncClient, user: str, password: str = "secret") -> httpx.Response:
    return await http.get("/inbox", headers=basic(user, password))


async def waiting_readers(http: httpx.AsyncClient) -> float:
    """The server's own gauge (it needs -metrics)."""
    text = (await http.get("/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("inbox_waiting_readers "))
    return float(line.split()[1])


async def readers_are(http: httpx.AsyncClient, count: int) -> None:
    async def check() -> bool:
        return await waiting_readers(http) == count

    await until(check)


async def test_message_posted_via_one_process_reaches_a_reader_waiting_on_another(
    real_server: Start, store: Store
) -> None:
    a, b = pair(real_server, store, "-metrics")
    async with client(a) as via_a, client(b) as via_b, anyio.create_task_group() as tasks:
        result: list[httpx.Response] = []

        async def read() -> None:
            result.append(await get(via_b, "r"))

        tasks.start_soon(read)
        await readers_are(via_b, 1)
        assert (await post(via_a, "s", "r", b"offer")).status_code == 200
        await until(lambda: result, within=1)
    assert (result[0].status_code, result[0].content, result[0].headers["x-from"]) == (200, b"offer", "s")


async def test_newest_reader_wins_across_processes(real_server: Start, store: Store) -> None:
    a, b = pair(real_server, store, "-metrics")
    async with client(a) as via_a, client(b) as via_b, anyio.create_task_group() as tasks:
        results: dict[str, httpx.Response] = {}

        async def read(label: str, http: httpx.AsyncClient) -> None:
            results[label] = await get(http, "r")

        tasks.start_soon(read, "old", via_a)
        await readers_are(via_a, 1)
        tasks.start_soon(read, "new", via_b)
        await until(lambda: "old" in results, within=2)
        assert results["old"].status_code == 204
        await readers_are(via_a, 0)
        await readers_are(via_b, 1)
        assert (await post(via_a, "s", "r", b"for the new one")).status_code == 200
    assert (results["new"].status_code, results["new"].content) == (200, b"for the new one")


async def test_passwords_capacity_and_expiry_are_shared(real_server: Start, store: Store) -> None:
    flags = ("-inbox-capacity", "2", "-inbox-timeout", "1", "-long-polling=false")
    a, b = pair(real_server, store, *flags)
    async with client(a) as via_a, client(b) as via_b:
        assert (await get(via_a, "r")).status_code == 204
        assert (await get(via_b, "r", "not the password")).status_code == 401
        assert (await post(via_a, "s", "r", b"1")).status_code == 200
        assert (await post(via_b, "s", "r", b"2")).status_code == 200
        full = await post(via_a, "s", "r", b"3")
        assert full.status_code == 503 and full.headers["retry-after"]
        assert (await get(via_b, "r")).content == b"1"
        assert (await get(via_a, "r")).content == b"2"

        # Unread for a second, r expires for both processes; the name is free again.
        async def expired() -> bool:
            return (await post(via_b, "s", "r", b"probe")).status_code == 404

        await until(expired)
        assert (await post(via_a, "s", "r")).status_code == 404
        assert (await get(via_b, "r", "a new password")).status_code == 204


async def test_max_inboxes_is_global_across_processes(real_server: Start, store: Store) -> None:
    a, b = pair(real_server, store, "-max-inboxes", "3", "-long-polling=false")
    async with client(a) as via_a, client(b) as via_b:
        for user, http in (("u1", via_a), ("u2", via_b), ("u3", via_a)):
            assert (await get(http, user)).status_code == 204
        refused = await get(via_b, "u4")
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert (await get(via_a, "u4")).status_code == 503
        assert (await get(via_b, "u1")).status_code == 204  # existing inboxes still open


async def test_workers_share_one_state(real_server: Start, redis_server: RedisServer) -> None:
    """Every request opens its own connection, so each lands on either worker; all arrive."""
    redis_server.flush()
    server = real_server("-workers", "2", "-redis-url", redis_server.url, "-long-polling-timeout", "10")
    pairs = 10
    received: dict[int, httpx.Response] = {}
    fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection per request

    async def exchange(i: int) -> None:
        async with client(server, limits=fresh) as reader, client(server, limits=fresh) as sender:
            assert (await post(reader, f"r{i}", "nobody")).status_code == 404  # creates r{i}
            async with anyio.create_task_group() as tasks:

                async def read() -> None:
                    received[i] = await get(reader, f"r{i}")

                tasks.start_soon(read)
                assert (await post(sender, f"s{i}", f"r{i}", b"%d" % i)).status_code == 200
                await until(lambda: i in received, within=10)

    async with anyio.create_task_group() as tasks:
        for i in range(pairs):
            tasks.start_soon(exchange, i)
    assert sorted(received) == list(range(pairs))
    assert [(r.status_code, r.content) for _, r in sorted(received.items())] == [
        (200, b"%d" % i) for i in range(pairs)
    ]


async def test_redis_restart_503_then_resumes_and_loses_nothing_accepted(
    real_server: Start, own_redis: RedisServer
) -> None:
    shared = ("-redis-url", own_redis.url, "-inbox-capacity", "100000")
    a = real_server(*shared, "-long-polling-timeout", "30")
    b = real_server(*shared, "-long-polling=false")  # drains without waiting
    accepted: list[bytes] = []
    statuses: set[int] = set()
    stop_sending = anyio.Event()

    async def sender(http: httpx.AsyncClient, label: str) -> None:
        n = 0
        while not stop_sending.is_set():
            body = f"{label}-{n}".encode()
            n += 1
            response = await post(http, label, "r", body)
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
        await until(lambda: len(accepted) >= target, within=10)

    async with client(a) as via_a, client(b) as via_b:
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
            await until(lambda: 503 in statuses, within=10)
            refused = await get(via_b, "r")
            assert refused.status_code == 503 and refused.headers["retry-after"]

            own_redis.start()  # back on the same port: every process resumes by itself
            await accepted_grows_by(50)
            stop_sending.set()
            # The long poll that spanned the outage kept waiting, and a message still wakes it.
            assert not long_poll
            assert (await post(via_b, "s", "w", b"after the outage")).status_code == 200
            await until(lambda: long_poll)
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
