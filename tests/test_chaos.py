"""No loss, exactly once, under chaos: readers that abort or get superseded, full inboxes,
and (with Redis) a server restart in the middle, or (with a Redis Cluster) a node stopped and
restarted. Every message answered 200 must arrive once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest

from .redis_support import RedisCluster, RedisServer, own_cluster, until
from .support import RawConnection, RawResponse, ServerProcess, basic

__all__ = ["own_cluster"]

pytestmark = pytest.mark.anyio

PAIRS = 40
MESSAGES = 30
FLAGS = ("-inbox-capacity", "3", "-long-polling-timeout", "2")


class Cluster:
    """The servers clients may talk to; a restart swaps one out while traffic flows."""

    def __init__(self, servers: list[ServerProcess]) -> None:
        self.servers = servers

    def pick(self, rng: random.Random) -> ServerProcess:
        return rng.choice(self.servers)


def message_number(response: RawResponse) -> int:
    return int(response.body.split(b":")[1]) if response.status == 200 else -1


async def connect(cluster: Cluster, rng: random.Random) -> RawConnection:
    """A connection to any live server, retrying while one is being replaced."""
    with anyio.fail_after(20):
        while True:
            try:
                return await RawConnection.open(cluster.pick(rng))
            except OSError:
                await anyio.sleep(0.01)


async def run_chaos(
    cluster: Cluster,
    during: Callable[[Counter[str]], Coroutine[Any, Any, None]] | None = None,
    outage: bool = False,
) -> dict[str, int]:
    """Run the traffic; `during`, given the live counts, runs alongside (e.g. a restart).

    With `outage`, a GET may be answered 503 (its inbox's store is down): the reader retries.
    """
    accepted: Counter[tuple[int, int]] = Counter()
    delivered: Counter[tuple[int, int]] = Counter()
    order_ok = True
    counts = Counter[str]()

    def record(i: int, response: RawResponse, seen: list[int]) -> None:
        nonlocal order_ok
        if response.status == 200:
            sender, n = response.body.decode().split(":")
            assert sender == f"s{i}" and response.headers[b"x-from"] == sender.encode()
            delivered[(i, int(n))] += 1
            order_ok &= not seen or int(n) > seen[-1]
            seen.append(int(n))
            counts["delivered"] += 1
        elif outage and response.status == 503:
            counts["unavailable 503"] += 1
        else:
            assert response.status == 204, response

    async def receiver(i: int) -> None:
        rng = random.Random(i)
        seen: list[int] = []
        auth = basic(f"r{i}")
        steady = await connect(cluster, rng)
        while len(seen) < MESSAGES:
            roll = rng.random()
            try:
                if roll < 0.2:  # abort mid long poll: half-close, then read whatever came
                    counts["aborts"] += 1
                    flaky = await connect(cluster, rng)
                    flaky.send_request("GET", "/inbox", auth)
                    await anyio.sleep(rng.uniform(0, 0.03))  # chaos: abort at any point, not a sync
                    flaky.writer.write_eof()
                    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                        record(i, await flaky.read_response(), seen)  # if anything was written to it
                    await flaky.close()
                elif roll < 0.35:  # superseded: an older reader is answered when a newer one comes
                    counts["superseded"] += 1
                    older = await connect(cluster, rng)
                    older.send_request("GET", "/inbox", auth)
                    await anyio.sleep(rng.uniform(0, 0.02))  # chaos: either may reach the server first
                    newer = steady.read_response()
                    steady.send_request("GET", "/inbox", auth)
                    # The two GETs race on separate connections: the server may see either
                    # first, so their two answers are taken in message order. An answer that
                    # came is kept even if the other connection broke (its server went away).
                    pair: list[RawResponse] = []
                    broken: Exception | None = None
                    for answer in (older.read_response(), newer):
                        try:
                            pair.append(await answer)
                        except (asyncio.IncompleteReadError, ConnectionError) as error:
                            broken = error
                    for response in sorted(pair, key=message_number):
                        record(i, response, seen)
                    await older.close()
                    if broken is not None:
                        raise broken
                else:
                    response = await steady.request("GET", "/inbox", auth)
                    record(i, response, seen)
                    if response.status == 503:
                        await anyio.sleep(rng.uniform(0.005, 0.03))  # a client's back-off, not a sync
            except (asyncio.IncompleteReadError, ConnectionError):
                counts["reconnects"] += 1  # its server went away: carry on with another
                await steady.close()
                steady = await connect(cluster, rng)
        await steady.close()

    async def sender(i: int) -> None:
        rng = random.Random(-i)
        connection = await connect(cluster, rng)
        for n in range(MESSAGES):
            while True:
                try:
                    response = await connection.request(
                        "POST", f"/inbox?to=r{i}", basic(f"s{i}"), b"s%d:%d" % (i, n)
                    )
                except (asyncio.IncompleteReadError, ConnectionError):
                    counts["reconnects"] += 1
                    await connection.close()
                    connection = await connect(cluster, rng)
                    continue
                if response.status == 200:
                    accepted[(i, n)] += 1
                    break
                assert response.status in (503, 404), response  # full, or r not there yet
                counts[f"refused {response.status}"] += 1
                await anyio.sleep(rng.uniform(0.005, 0.03))  # a client's back-off, not a sync
        await connection.close()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tasks:
            for i in range(PAIRS):
                tasks.start_soon(receiver, i)
                tasks.start_soon(sender, i)
            if during is not None:
                tasks.start_soon(during, counts)

    assert all(count == 1 for count in accepted.values())
    assert delivered == accepted, "lost or duplicated: " + str(
        (accepted - delivered) + (delivered - accepted)
    ) + "".join(warnings(server) for server in cluster.servers)
    assert order_ok, "a sender's messages arrived out of order"
    counts["accepted"] = sum(accepted.values())
    print(dict(counts))
    return dict(counts)


def warnings(server: ServerProcess) -> str:
    """The server's warnings and errors, to tell why a message was lost or repeated."""
    lines = [line for line in server.log().splitlines() if " WARNING " in line or " ERROR " in line]
    return f"\n-- {server.base_url}:\n" + "\n".join(lines[-30:])


def assert_all_accepted_under_stress(counts: dict[str, int]) -> None:
    """Every message went through, and the run really aborted, superseded and filled inboxes."""
    assert counts["accepted"] == PAIRS * MESSAGES
    assert counts["aborts"] > 50 and counts["superseded"] > 50 and counts["refused 503"] > 0


async def test_memory_mode_loses_nothing(real_server: Callable[..., ServerProcess]) -> None:
    assert_all_accepted_under_stress(await run_chaos(Cluster([real_server(*FLAGS, tls=False)])))


async def test_redis_mode_loses_nothing(
    real_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    redis_server.flush()
    cluster = Cluster([real_server(*FLAGS, "-redis-url", redis_server.url, tls=False)])
    assert_all_accepted_under_stress(await run_chaos(cluster))


async def test_redis_mode_survives_a_server_restart(
    real_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    redis_server.flush()
    flags = (*FLAGS, "-redis-url", redis_server.url)
    cluster = Cluster([real_server(*flags, tls=False), real_server(*flags, tls=False)])
    restarted = anyio.Event()

    async def restart_one(counts: Counter[str]) -> None:
        """Stop one server with traffic in flight, then bring a fresh one up."""
        # Once a third of the messages went through, both servers have delivered some.
        await until(lambda: counts["delivered"] >= PAIRS * MESSAGES // 3, within=30)
        victim = cluster.servers[0]
        cluster.servers = cluster.servers[1:]
        assert await anyio.to_thread.run_sync(victim.stop) == 0
        fresh = await anyio.to_thread.run_sync(lambda: real_server(*flags, tls=False))
        cluster.servers = [*cluster.servers, fresh]
        restarted.set()

    counts = await run_chaos(cluster, during=restart_one)
    assert restarted.is_set()
    assert counts["accepted"] == PAIRS * MESSAGES


async def test_cluster_mode_survives_a_node_stopped_and_restarted(
    real_server: Callable[..., ServerProcess], own_cluster: RedisCluster
) -> None:
    """Two servers on different nodes; one node goes away mid-run (its data saved) and comes back."""
    servers = [
        real_server(*FLAGS, "-redis-url", f"redis://127.0.0.1:{node.port}/0", tls=False)
        for node in own_cluster.nodes[:2]
    ]
    victim = own_cluster.nodes[2]
    restarted = anyio.Event()

    async def stop_a_node(counts: Counter[str]) -> None:
        await until(lambda: counts["delivered"] >= PAIRS * MESSAGES // 3, within=30)
        at_stop = counts["delivered"]
        await anyio.to_thread.run_sync(lambda: victim.stop(save=True))
        # Requests for the victim's slots get 503 while it is down (many times: a real outage).
        await until(lambda: counts["refused 503"] + counts["unavailable 503"] >= 100, within=10)
        counts["delivered while a node was down"] = counts["delivered"] - at_stop
        await anyio.to_thread.run_sync(victim.start)
        restarted.set()

    counts = await run_chaos(Cluster(servers), during=stop_a_node, outage=True)
    assert restarted.is_set()
    assert counts["accepted"] == PAIRS * MESSAGES
    assert counts["delivered while a node was down"] > 0  # the other nodes' inboxes went on
    for server in servers:
        assert "Traceback" not in server.log(), server.log()
