"""Open WebSockets as inbox readers in Redis mode (`RedisMailbox.attach`), across processes.

Each RedisMailbox is a process; every test runs on one Redis and on a 3-node
Redis Cluster with the two mailboxes attached to different nodes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from inbox_asgi.mailbox.errors import InboxFull
from inbox_asgi.mailbox.interface import InboxSocket, Message, ShuttingDown, SocketMailbox, Superseded
from inbox_asgi.mailbox.redis.codec import decode_message, encode_message, inbox_keys
from inbox_asgi.mailbox.redis.connection import connect
from inbox_asgi.mailbox.redis.mailbox import RedisMailbox

from ...redis_support import RedisCluster, RedisServer, running, until
from .test_mailbox import me, never

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


class Store:
    """One Redis or the cluster: URLs for two processes, and a client on an inbox's node."""

    def __init__(self, found: RedisServer | RedisCluster) -> None:
        self.found = found

    def urls(self) -> list[str]:
        if isinstance(self.found, RedisCluster):
            return [f"redis://127.0.0.1:{node.port}/0" for node in self.found.nodes[:2]]
        return [self.found.url, self.found.url]

    def node(self, name: str) -> RedisServer:
        if isinstance(self.found, RedisCluster):
            return self.found.node_of(inbox_keys(name)[0])
        return self.found


@pytest.fixture(params=["redis", "cluster"])
def store(request: pytest.FixtureRequest) -> Store:
    found = request.getfixturevalue("redis_server" if request.param == "redis" else "redis_cluster")
    found.flush()
    return Store(found)


@asynccontextmanager
async def processes(store: Store, count: int = 2, **options: Any) -> AsyncIterator[list[RedisMailbox]]:
    """Running mailboxes on the store; the TTL refresh (a safety net that re-checks readers) every 30 s."""
    settings: dict[str, Any] = {
        "inbox_timeout": 60.0,
        "inbox_capacity": 10,
        "max_inboxes": 1000,
        "cleanup_interval": 30.0,
    }
    settings.update(options)
    boxes = [RedisMailbox(connect(url), **settings) for url in store.urls()[:count]]
    async with running(boxes):
        yield boxes


async def take(socket: InboxSocket, within: float = 5.0) -> list[Message]:
    with anyio.fail_after(within):
        return await socket.take()


async def take_bodies(socket: InboxSocket, count: int) -> list[Message]:
    got: list[Message] = []
    while len(got) < count:
        got += await take(socket)
    return got


async def send(box: RedisMailbox, *bodies: bytes, to: str = "r") -> None:
    await box.open(me("s"))
    for body in bodies:
        await box.send("s", to, Message("s", body))


async def drain(box: RedisMailbox, name: str = "r") -> list[bytes]:
    found = []
    while (message := await box.receive(me(name), wait=0, disconnected=never)) is not None:
        found.append(message.body)
    return found


async def test_a_socket_on_one_process_gets_what_another_accepts_in_order_with_ids(store: Store) -> None:
    async with processes(store) as (a, b):
        assert isinstance(a, SocketMailbox)
        socket = await a.attach(me("r"))
        assert socket.generation
        await send(b, b"one", b"two")
        first = await take_bodies(socket, 2)
        assert [m.body for m in first] == [b"one", b"two"] and [m.sender for m in first] == ["s", "s"]
        await send(b, b"three")
        (third,) = await take(socket)
        assert first[0].id < first[1].id < third.id
        await socket.ack(third.id)
        await socket.close()
        assert await drain(b) == []
        again = await a.attach(me("r"))
        assert again.generation == socket.generation  # the same inbox: ids go on
        await again.close()


async def test_a_get_on_another_process_supersedes_the_socket_and_reads_its_unacknowledged_first(
    store: Store,
) -> None:
    async with processes(store) as (a, b):
        socket = await a.attach(me("r"))
        await send(b, b"1", b"2", b"3")
        taken = await take_bodies(socket, 3)
        await socket.ack(taken[0].id)
        got = await b.receive(me("r"), wait=0, disconnected=never)
        assert got is not None and (got.body, got.id) == (b"2", taken[1].id)
        with pytest.raises(Superseded):
            await take(socket)
        await socket.ack(taken[2].id)  # too late: the socket no longer reads
        await socket.close()
        assert await drain(b) == [b"3"]


async def test_a_newer_socket_anywhere_supersedes_and_gets_what_was_not_acknowledged(store: Store) -> None:
    async with processes(store) as (a, b):
        old = await a.attach(me("r"))
        await send(a, b"1", b"2", b"3", b"4")
        taken = await take_bodies(old, 4)
        await old.ack(taken[1].id)
        new = await b.attach(me("r"))
        assert new.generation == old.generation
        with pytest.raises(Superseded):
            await take(old)
        await old.close()
        again = await take_bodies(new, 2)
        assert [(m.body, m.id) for m in again] == [(b"3", taken[2].id), (b"4", taken[3].id)]
        await new.close()


async def test_a_socket_whose_process_died_loses_nothing(store: Store) -> None:
    async with processes(store, count=1) as (b,):
        async with processes(store, count=1) as (dying,):
            socket = await dying.attach(me("r"))
            await send(b, b"1", b"2", b"3")
            taken = await take_bodies(socket, 3)
            await socket.ack(taken[0].id)
            # The process stops without the socket ever closing: no RELEASE.
        await send(b, b"4")
        socket = await b.attach(me("r"))
        again = await take_bodies(socket, 3)
        assert [m.body for m in again] == [b"2", b"3", b"4"]
        assert [m.id for m in again[:2]] == [m.id for m in taken[1:]]
        await socket.close()


async def test_the_window_bounds_what_is_in_flight_and_an_ack_makes_room(store: Store) -> None:
    async with processes(store, inbox_capacity=2) as (a, b):
        socket = await a.attach(me("r"), window=2)
        await send(b, b"1", b"2")
        first = await take_bodies(socket, 2)
        # In flight is not queued: capacity counts only what waits behind.
        await send(b, b"3", b"4")
        with pytest.raises(InboxFull):
            await send(b, b"5")
        with anyio.move_on_after(0.3) as waited:
            await socket.take()
        assert waited.cancelled_caught  # the window is full
        await socket.ack(first[1].id)
        assert [m.body for m in await take_bodies(socket, 2)] == [b"3", b"4"]
        await socket.close()
        assert await drain(b) == [b"3", b"4"]


async def test_a_get_put_back_behind_a_socket_is_read_in_id_order_after_it(store: Store) -> None:
    """A GET's failed answer put back while a socket holds newer ones: read next, and sorted on release."""
    async with processes(store) as (a, b):
        await b.open(me("r"))
        await send(b, b"1", b"2", b"3")
        got = await b.receive(me("r"), wait=0, disconnected=never)
        assert got is not None and got.body == b"1"
        socket = await a.attach(me("r"), window=1)
        (two,) = await take(socket)
        assert two.body == b"2"
        await b.requeue("r", got)  # writing the GET's answer failed
        await socket.ack(two.id)
        (next_one,) = await take(socket)
        assert (next_one.body, next_one.id) == (b"1", got.id)  # as in memory mode: next after acked
        await b.requeue("r", Message("s", b"0", id=got.id - 1 if got.id > 1 else 0))
        await socket.close()
        # released with a put-back behind it: the queue is in id order again
        assert await drain(b) == [b"0", b"1", b"3"]


async def test_the_generation_changes_when_the_inbox_is_created_anew(store: Store) -> None:
    async with processes(store) as (a, b):
        first = await a.attach(me("r"))
        await first.close()
        with store.node("r").client() as client:
            client.delete(*inbox_keys("r"))  # as expiry does
        second = await b.attach(me("r", "new owner"))
        assert second.generation != first.generation
        await send(a, b"x")
        (message,) = await take(second)
        assert message.id == 1  # ids count again in the new inbox
        await second.close()


async def test_an_open_socket_keeps_its_inbox_alive_and_closing_counts_as_a_read(store: Store) -> None:
    async with processes(store, inbox_timeout=1.0, cleanup_interval=0.1) as (a, b):
        socket = await a.attach(me("r"))
        await anyio.sleep(1.6)
        await send(b, b"still there")
        assert [m.body for m in await take(socket)] == [b"still there"]
        await socket.close()
        with store.node("r").client() as client:
            assert 0 < int(client.pttl(inbox_keys("r")[0])) <= 1000

            def gone() -> bool:
                return not client.exists(inbox_keys("r")[0])

            await until(gone, within=3)


async def test_shutdown_ends_the_socket_and_its_messages_wait(store: Store) -> None:
    async with processes(store) as (a, b):
        socket = await a.attach(me("r"))
        await send(b, b"in flight")
        await take(socket)
        a.shutdown()
        with pytest.raises(ShuttingDown):
            await take(socket)
        await socket.close()
        assert await drain(b) == [b"in flight"]


async def test_a_socket_waits_behind_a_message_held_for_a_get_and_then_reads_in_order(store: Store) -> None:
    async with processes(store) as (a, b):
        await b.open(me("r"))
        await send(b, b"1", b"2")
        # A GET's hold that its process settles late, by hand: "1" is held, not queued.
        with store.node("r").client() as client:
            meta, queue = inbox_keys("r")
            raw = client.lpop(queue)
            assert isinstance(raw, bytes)
            client.hset(meta, mapping={"held": b"elsewhere|1", "hdl": b"99999999999999", "hm": raw})
            socket = await a.attach(me("r"))
            with anyio.move_on_after(0.3) as waited:
                await socket.take()
            assert waited.cancelled_caught
            held = decode_message(raw)
            # The GET's client had left: its process puts the message back (SETTLE back).
            await b._settle(inbox_keys("r"), b"elsewhere|1", b"back")
        got = await take_bodies(socket, 2)
        assert [(m.body, m.id) for m in got] == [(b"1", held.id), (b"2", held.id + 1)]
        await socket.close()


def test_message_ids_survive_the_stored_form() -> None:
    message = Message("s", b"\x00body", b"text/plain", id=12345)
    decoded = decode_message(encode_message(message))
    assert (decoded, decoded.id) == (message, 12345)
    legacy = decode_message(encode_message(Message("s", b"7:")))
    assert (legacy.body, legacy.id) == (b"7:", 0)
