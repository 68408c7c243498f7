"""The Redis backend on a real 3-node Redis Cluster: routing by slot, sharded wake-ups, node loss.

Each RedisMailbox is a process; the two of a test are attached to different
nodes of the cluster, as two hosts behind a load balancer would be.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from inbox_asgi.mailbox.errors import BackendUnavailable, TooManyInboxes
from inbox_asgi.mailbox.interface import Message
from inbox_asgi.mailbox.redis.codec import inbox_keys, index_key, wake_channel
from inbox_asgi.mailbox.redis.connection import check_connection, connect
from inbox_asgi.mailbox.redis.mailbox import RedisMailbox
from inbox_asgi.mailbox.redis.scripts import SCRIPTS

from ...redis_support import RedisCluster, RedisServer, until
from .test_mailbox import Reader, me, never, start_reader

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def on_nodes(cluster: RedisCluster, **options: Any) -> AsyncIterator[tuple[RedisMailbox, RedisMailbox]]:
    """Two running mailboxes, the first attached to node 0, the second to node 1."""
    settings: dict[str, Any] = {"inbox_timeout": 60.0, "inbox_capacity": 3, "max_inboxes": 1000}
    settings["cleanup_interval"] = 30.0  # no TTL refresh (it re-checks readers) to hide a lost wake-up
    settings.update(options)
    urls = [f"redis://127.0.0.1:{node.port}/0" for node in cluster.nodes[:2]]
    boxes = [RedisMailbox(connect(url), **settings) for url in urls]
    try:
        async with anyio.create_task_group() as tasks:
            for box in boxes:
                tasks.start_soon(box.run)
            await until(lambda: all(box.subscribed for box in boxes))
            yield boxes[0], boxes[1]
            tasks.cancel_scope.cancel()
    finally:
        for box in boxes:
            await box.aclose()


def names_on_distinct_nodes(cluster: RedisCluster, count: int = 3) -> list[str]:
    """Inbox names whose keys live on `count` different nodes."""
    found: dict[int, str] = {}
    for i in range(1000):
        name = f"user{i}"
        found.setdefault(cluster.node_of(inbox_keys(name)[0]).port, name)
        if len(found) == count:
            return list(found.values())
    raise AssertionError("names do not spread over the nodes")


def shard_channels(node: RedisServer) -> set[bytes]:
    with node.client() as client:
        return set(client.execute_command("PUBSUB SHARDCHANNELS"))


def broadcast_channels(node: RedisServer) -> list[bytes]:
    with node.client() as client:
        return list(client.execute_command("PUBSUB CHANNELS"))


async def test_check_connection_loads_the_scripts_on_every_node(redis_cluster: RedisCluster) -> None:
    for node in redis_cluster.nodes:
        with node.client() as client:
            client.script_flush()
    check_connection(redis_cluster.url)
    for node in redis_cluster.nodes:
        with node.client() as client:
            assert all(client.script_exists(*(script.sha for script in SCRIPTS)))


async def test_a_wake_up_is_sharded_to_the_inbox_node_only(redis_cluster: RedisCluster) -> None:
    redis_cluster.flush()
    names = names_on_distinct_nodes(redis_cluster)
    async with on_nodes(redis_cluster) as (a, b), anyio.create_task_group() as tasks:
        readers = [await start_reader(tasks, a, name) for name in names]
        for name in names:
            home = redis_cluster.node_of(inbox_keys(name)[0])
            channel = wake_channel(inbox_keys(name)[0])
            await until(lambda home=home, channel=channel: channel in shard_channels(home))  # type: ignore[misc]
            for node in redis_cluster.nodes:
                assert (channel in shard_channels(node)) == (node is home)
                assert broadcast_channels(node) == []  # nothing is published to every node
        for name in names:
            await b.send("s", name, Message("s", name.encode()))
        with anyio.fail_after(2):
            for reader in readers:
                await reader.done.wait()
        assert [r.result.body if r.result else None for r in readers] == [n.encode() for n in names]


async def test_newest_reader_wins_across_nodes(redis_cluster: RedisCluster) -> None:
    redis_cluster.flush()
    async with on_nodes(redis_cluster) as (a, b), anyio.create_task_group() as tasks:
        old = await start_reader(tasks, a, "r")
        new = await start_reader(tasks, b, "r")
        with anyio.fail_after(2):
            await old.done.wait()
        assert old.result is None
        await a.send("s", "r", Message("s", b"for the new one"))
        with anyio.fail_after(2):
            await new.done.wait()
        assert new.result == Message("s", b"for the new one")


async def test_max_inboxes_counts_inboxes_of_every_node(redis_cluster: RedisCluster) -> None:
    redis_cluster.flush()
    first, second, third = names_on_distinct_nodes(redis_cluster)
    async with on_nodes(redis_cluster, max_inboxes=2) as (a, b):
        await a.open(me(first))
        await b.open(me(second))
        with pytest.raises(TooManyInboxes):
            await a.open(me(third))
        await b.open(me(first))  # existing inboxes still open, from anywhere
        with redis_cluster.node_of(index_key()).client() as client:
            assert client.zcard(index_key()) == 2


async def test_a_lost_node_fails_only_its_inboxes_and_loses_nothing_when_back(
    own_cluster: RedisCluster,
) -> None:
    names = names_on_distinct_nodes(own_cluster)
    index_node = own_cluster.node_of(index_key())
    victim_name = next(n for n in names if own_cluster.node_of(inbox_keys(n)[0]) is not index_node)
    survivor = next(n for n in names if n != victim_name)
    victim = own_cluster.node_of(inbox_keys(victim_name)[0])
    async with on_nodes(own_cluster) as (a, b), anyio.create_task_group() as tasks:
        for name in names:
            await a.open(me(name))
        await b.send("s", victim_name, Message("s", b"kept on disk"))
        waiting = await start_reader(tasks, a, survivor, wait=30)

        victim.stop(save=True)
        with anyio.fail_after(5):
            with pytest.raises(BackendUnavailable):
                await b.send("s", victim_name, Message("s", b"refused"))
            with pytest.raises(BackendUnavailable):
                await b.receive(me(victim_name), wait=0, disconnected=never)
            await b.send("s", survivor, Message("s", b"other nodes carry on"))
            await waiting.done.wait()
        assert waiting.result == Message("s", b"other nodes carry on")

        victim.start()
        await until(own_cluster.healthy, within=15)

        async def back() -> Message | None:
            try:
                return await b.receive(me(victim_name), wait=0, disconnected=never)
            except BackendUnavailable:
                return None

        received = await _first(back)
        assert received == Message("s", b"kept on disk")
        reader = Reader()
        tasks.start_soon(reader.run, a, me(victim_name), 10)
        await until(lambda: _waiting_now(a))
        await b.send("s", victim_name, Message("s", b"after"))
        with anyio.fail_after(3):
            await reader.done.wait()
        assert reader.result == Message("s", b"after")


async def _first(probe: Any, within: float = 10) -> Any:
    result: list[Any] = []

    async def check() -> bool:
        result[:] = [await probe()]
        return result[0] is not None

    await until(check, within=within)
    return result[0]


async def _waiting_now(box: RedisMailbox) -> bool:
    return (await box.stats()).waiting_readers > 0
