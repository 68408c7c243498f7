"""An open WebSocket as its in-memory inbox's reader: ids, generations, window, acks, put-back."""

from __future__ import annotations

import random

import anyio
import pytest

from inbox_asgi.mailbox.credentials import Credentials
from inbox_asgi.mailbox.errors import InboxFull, StoreFull, WrongPassword
from inbox_asgi.mailbox.interface import Message, ReaderEnded, ShuttingDown, SocketMailbox, Superseded
from inbox_asgi.mailbox.memory import MemoryMailbox, MemorySocket
from inbox_asgi.mailbox.quotas import message_size

from ..support import ManualClock

pytestmark = pytest.mark.anyio


def make(clock: ManualClock | None = None, **overrides: int) -> MemoryMailbox:
    options = {"inbox_timeout": 60, "inbox_capacity": 5, "max_inboxes": 1000, **overrides}
    return MemoryMailbox(clock=clock or ManualClock(), **options)


def me(name: str, password: str = "pw") -> Credentials:
    return Credentials(name, password)


async def never() -> None:
    await anyio.sleep_forever()


async def post(box: MemoryMailbox, recipient: str, *bodies: bytes) -> None:
    for body in bodies:
        await box.send("s", recipient, Message("s", body))


async def take(socket: MemorySocket) -> list[bytes]:
    with anyio.fail_after(5):
        return [message.body for message in await socket.take()]


async def read_all(box: MemoryMailbox, name: str) -> list[Message]:
    found = []
    while (message := await box.receive(me(name), wait=0, disconnected=never)) is not None:
        found.append(message)
    return found


async def test_the_memory_backend_serves_sockets() -> None:
    assert isinstance(make(), SocketMailbox)


async def test_ids_increase_in_order_of_acceptance_and_survive_a_requeue() -> None:
    box = make()
    await box.open(me("r"))
    await post(box, "r", b"a", b"b")
    first = await box.receive(me("r"), wait=0, disconnected=never)
    assert first is not None
    await box.requeue("r", first)
    messages = await read_all(box, "r")
    assert [m.body for m in messages] == [b"a", b"b"]
    assert 0 < messages[0].id < messages[1].id
    assert messages[0].id == first.id


async def test_a_refused_message_takes_no_id() -> None:
    box = make(inbox_capacity=1)
    await box.open(me("r"))
    await post(box, "r", b"kept")
    with pytest.raises(InboxFull):
        await post(box, "r", b"refused")
    [kept] = await read_all(box, "r")
    await post(box, "r", b"next")
    [after] = await read_all(box, "r")
    assert after.id == kept.id + 1


async def test_generation_stays_while_the_inbox_lives_and_changes_when_it_is_created_anew() -> None:
    clock = ManualClock()
    box = make(clock)
    socket = await box.attach(me("r"))
    again = await box.attach(me("r"))
    assert socket.generation == again.generation != 0
    await again.close()
    clock.now += 61
    box.expire()
    assert (await box.stats()).inboxes == 0
    fresh = await box.attach(me("r", "another password"))
    assert fresh.generation != socket.generation


async def test_attach_checks_the_password() -> None:
    box = make()
    await box.open(me("r"))
    with pytest.raises(WrongPassword):
        await box.attach(me("r", "wrong"))


async def test_take_hands_out_in_order_up_to_the_window_and_an_ack_makes_room() -> None:
    box = make(inbox_capacity=10)
    socket = await box.attach(me("r"), window=3)
    await post(box, "r", *(b"%d" % i for i in range(5)))
    batch = await socket.take()
    assert [m.body for m in batch] == [b"0", b"1", b"2"]
    assert (await box.stats()).queued_messages == 2
    async with anyio.create_task_group() as tasks:
        later: list[bytes] = []

        async def next_batch() -> None:
            later.extend(await take(socket))

        tasks.start_soon(next_batch)
        await anyio.wait_all_tasks_blocked()
        assert later == []  # the window is full
        await socket.ack(batch[1].id)  # acknowledges 0 and 1
    assert later == [b"3", b"4"]
    assert [m.body for m in socket.in_flight] == [b"2", b"3", b"4"]


async def test_a_message_sent_to_a_waiting_socket_wakes_it_without_counting_against_capacity() -> None:
    box = make(inbox_capacity=0)
    socket = await box.attach(me("r"))
    async with anyio.create_task_group() as tasks:
        got: list[bytes] = []

        async def wait() -> None:
            got.extend(await take(socket))

        tasks.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        assert (await box.stats()).waiting_readers == 1
        await post(box, "r", b"handed")
    assert got == [b"handed"]


async def test_with_the_window_full_messages_queue_against_capacity() -> None:
    box = make(inbox_capacity=1)
    socket = await box.attach(me("r"), window=1)
    await post(box, "r", b"in flight")
    await take(socket)
    await post(box, "r", b"queued")
    with pytest.raises(InboxFull):
        await post(box, "r", b"over capacity")


async def test_close_puts_every_unacknowledged_message_back_in_front_in_order() -> None:
    box = make(inbox_capacity=10)
    socket = await box.attach(me("r"), window=4)
    await post(box, "r", *(b"%d" % i for i in range(6)))
    batch = await socket.take()
    await socket.ack(batch[0].id)
    await socket.close()
    messages = await read_all(box, "r")
    assert [m.body for m in messages] == [b"1", b"2", b"3", b"4", b"5"]
    assert [m.id for m in messages[:3]] == [m.id for m in batch[1:]]
    stats = await box.stats()
    assert (stats.queued_messages, stats.queued_bytes, stats.waiting_readers) == (0, 0, 0)


async def test_a_message_put_back_by_a_failed_get_keeps_its_place_before_a_sockets_newer_ones() -> None:
    box = make()
    await box.open(me("r"))
    await post(box, "r", b"1", b"2", b"3")
    answered = await box.receive(me("r"), wait=0, disconnected=never)  # its answer will fail
    socket = await box.attach(me("r"))
    assert await take(socket) == [b"2", b"3"]
    assert answered is not None
    await box.requeue("r", answered)
    await socket.close()
    assert [m.body for m in await read_all(box, "r")] == [b"1", b"2", b"3"]


async def test_a_newer_socket_supersedes_and_finds_the_older_ones_messages_first() -> None:
    box = make()
    old = await box.attach(me("r"))
    await post(box, "r", b"a", b"b")
    assert await take(old) == [b"a", b"b"]
    new = await box.attach(me("r"))
    with pytest.raises(Superseded):
        await old.take()
    await old.ack(10**9)  # too late: they are back in the inbox
    await old.close()
    assert await take(new) == [b"a", b"b"]


async def test_a_waiting_socket_learns_at_once_that_it_was_superseded() -> None:
    box = make()
    old = await box.attach(me("r"))
    async with anyio.create_task_group() as tasks:
        ended: list[BaseException] = []

        async def wait() -> None:
            with anyio.fail_after(5):
                try:
                    await old.take()
                except ReaderEnded as error:
                    ended.append(error)

        tasks.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        await box.attach(me("r"))
    assert [type(error) for error in ended] == [Superseded]


async def test_a_get_supersedes_a_socket_and_reads_its_unacknowledged_message() -> None:
    box = make()
    socket = await box.attach(me("r"))
    await post(box, "r", b"first", b"second")
    await take(socket)
    message = await box.receive(me("r"), wait=0, disconnected=never)
    assert message is not None and message.body == b"first"
    with pytest.raises(Superseded):
        await socket.take()
    assert [m.body for m in await read_all(box, "r")] == [b"second"]


async def test_a_socket_supersedes_a_waiting_get() -> None:
    box = make()
    async with anyio.create_task_group() as tasks:
        answers: list[Message | None] = []

        async def get() -> None:
            with anyio.fail_after(5):
                answers.append(await box.receive(me("r"), wait=3600, disconnected=never))

        tasks.start_soon(get)
        await anyio.wait_all_tasks_blocked()
        socket = await box.attach(me("r"))
    assert answers == [None]
    await post(box, "r", b"to the socket")
    assert await take(socket) == [b"to the socket"]


async def test_an_inbox_with_an_open_socket_never_expires() -> None:
    clock = ManualClock()
    box = make(clock)
    socket = await box.attach(me("r"))
    clock.now += 600
    assert box.expire() == 0
    await post(box, "r", b"still reachable")
    await socket.close()
    clock.now += 59
    assert box.expire() == 0  # closing counts as a read
    clock.now += 2
    assert box.expire() == 1


async def test_shutdown_ends_sockets_with_their_messages_back_in_the_inbox() -> None:
    box = make()
    socket = await box.attach(me("r"))
    await post(box, "r", b"unacknowledged")
    await take(socket)
    box.shutdown()
    with pytest.raises(ShuttingDown):
        await socket.take()
    assert (await box.stats()).queued_messages == 1
    with pytest.raises(ShuttingDown):
        await (await box.attach(me("late"))).take()


async def test_acks_are_cumulative_and_unknown_ones_harmless() -> None:
    box = make(inbox_capacity=10)
    socket = await box.attach(me("r"))
    await post(box, "r", b"a", b"b", b"c")
    batch = await socket.take()
    await socket.ack(batch[0].id - 1)  # before anything it holds
    assert len(socket.in_flight) == 3
    await socket.ack(batch[1].id)
    await socket.ack(batch[0].id)  # already done
    assert [m.body for m in socket.in_flight] == [b"c"]


@pytest.mark.parametrize("seed", range(20))
async def test_random_interleavings_deliver_every_message_in_order_once_after_dedup(seed: int) -> None:
    """Sends, sockets opened (superseding), taking, acking and closing, clients dying with
    frames read but not processed, and GETs, in random order."""
    rng = random.Random(seed)
    box = make(inbox_capacity=1000)
    await box.open(me("r"))
    accepted: list[int] = []
    first_seen: list[int] = []
    socket: MemorySocket | None = None

    def saw(message: Message) -> None:
        if message.id not in first_seen:  # the client's dedup
            first_seen.append(message.id)

    for _ in range(300):
        action = rng.random()
        if action < 0.35:
            message = Message("s", b"")
            await box.send("s", "r", message)
            accepted.append(message.id)
        elif action < 0.45:
            socket = await box.attach(me("r"), window=rng.choice([1, 3, 32]))
        elif action < 0.7 and socket is not None:
            batch: list[Message] = []
            try:
                with anyio.move_on_after(0):  # only what is there now
                    batch = await socket.take()
            except Superseded:
                socket = None  # a GET read since; a late ack or close of it would change nothing
                continue
            # Sometimes the client dies having processed only part of what it read.
            processed = rng.randrange(len(batch) + 1) if rng.random() < 0.3 else len(batch)
            for message in batch[:processed]:
                saw(message)
            if processed < len(batch):
                await socket.close()
                socket = None
        elif action < 0.85 and socket is not None and socket.in_flight:
            await socket.ack(rng.choice(socket.in_flight).id)
        elif action < 0.92 and socket is not None:
            await socket.close()
            socket = None
        else:
            message = await box.receive(me("r"), wait=0, disconnected=never)
            if message is not None:
                saw(message)
    if socket is not None:
        await socket.close()
    for message in await read_all(box, "r"):
        saw(message)
    assert first_seen == accepted


async def test_messages_in_flight_count_against_the_queued_bytes_until_acknowledged() -> None:
    """A socket that never acks must not hold a window of messages outside -max-queued-bytes."""
    size = message_size(Message("s", b"x" * 1000))
    box = MemoryMailbox(inbox_timeout=60, inbox_capacity=100, max_inboxes=10, max_queued_bytes=3 * size)
    await box.open(Credentials("s", "pw"))
    socket = await box.attach(Credentials("r", "pw"))
    for _ in range(3):
        await box.send("s", "r", Message("s", b"x" * 1000))
    taken = await socket.take()
    assert len(taken) == 3 and (await box.stats()).queued_messages == 0
    with pytest.raises(StoreFull):  # the unacknowledged three still fill the store
        await box.send("s", "r", Message("s", b"x" * 1000))
    await socket.ack(taken[-1].id)
    await box.send("s", "r", Message("s", b"x" * 1000))
    assert (await box.stats()).queued_bytes == size
    await socket.close()
    assert (await box.stats()).queued_bytes == size  # what was in flight was acked: nothing counted twice
