"""The in-memory backend's own rules: expiry order and cost, limits, hand-over."""

from __future__ import annotations

import gc
import sys
import weakref

import anyio
import pytest

from inbox_asgi.mailbox.credentials import Credentials
from inbox_asgi.mailbox.errors import (
    InboxFull,
    NoSuchInbox,
    StoreFull,
    TooManyInboxes,
    TooManyInboxesFromClient,
    WrongPassword,
)
from inbox_asgi.mailbox.interface import Message
from inbox_asgi.mailbox.memory import EXPIRY_BATCH, MemoryMailbox
from inbox_asgi.mailbox.passwords import PasswordDigest
from inbox_asgi.mailbox.quotas import MESSAGE_OVERHEAD, message_size

from ..support import ManualClock

pytestmark = pytest.mark.anyio


def make(clock: ManualClock, **overrides: int) -> MemoryMailbox:
    options = {"inbox_timeout": 60, "inbox_capacity": 3, "max_inboxes": 1000, **overrides}
    return MemoryMailbox(clock=clock, **options)


async def never() -> None:
    await anyio.sleep_forever()


def me(name: str, password: str = "pw") -> Credentials:
    return Credentials(name, password)


async def test_open_creates_then_checks_password() -> None:
    box = make(ManualClock())
    await box.open(me("a"))
    await box.open(me("a"))
    with pytest.raises(WrongPassword):
        await box.open(me("a", "other"))
    assert (await box.stats()).inboxes == 1


async def test_fifo_and_capacity() -> None:
    box = make(ManualClock())
    await box.open(me("r"))
    for i in range(3):
        await box.send("s", "r", Message("s", b"%d" % i))
    with pytest.raises(InboxFull):
        await box.send("s", "r", Message("s", b"x"))
    assert (await box.stats()).queued_messages == 3
    bodies = [(await box.receive(me("r"), wait=0, disconnected=never)) for _ in range(4)]
    assert [m.body if m else None for m in bodies] == [b"0", b"1", b"2", None]


async def test_send_to_missing_inbox() -> None:
    with pytest.raises(NoSuchInbox):
        await make(ManualClock()).send("s", "nobody", Message("s", b""))


async def test_expiry_deletes_unread_inboxes_and_their_messages() -> None:
    clock = ManualClock()
    box = make(clock)
    await box.open(me("old"))
    await box.send("x", "old", Message("x", b"lost"))
    clock.now += 30
    await box.open(me("young"))
    clock.now += 31
    assert box.expire() == 1
    stats = await box.stats()
    assert (stats.inboxes, stats.queued_messages) == (1, 0)
    # The name is free again: a new password claims it.
    await box.open(me("old", "new-password"))


async def test_reading_refreshes_but_sending_does_not() -> None:
    clock = ManualClock()
    box = make(clock)
    await box.open(me("reader"))
    await box.open(me("sender"))
    await box.open(me("target"))
    clock.now += 50
    await box.receive(me("reader"), wait=0, disconnected=never)
    await box.send("sender", "target", Message("sender", b"hi"))
    clock.now += 20
    assert box.expire() == 2  # sender and target; the reader read 20 s ago
    with pytest.raises(NoSuchInbox):
        await box.send("reader", "sender", Message("reader", b""))


async def test_expired_inbox_is_gone_even_before_the_sweep() -> None:
    clock = ManualClock()
    box = make(clock)
    await box.open(me("a"))
    clock.now += 61
    with pytest.raises(NoSuchInbox):
        await box.send("b", "a", Message("b", b""))


async def test_expiry_costs_what_expires_not_all_inboxes() -> None:
    clock = ManualClock()
    box = make(clock, max_inboxes=100_000)
    for i in range(20_000):
        await box.open(me(f"stay{i}"))
    clock.now += 61
    for i in range(20_000):
        await box.open(me(f"new{i}"))
    # Only the expired front is visited: a batch-limited pass stops at its limit.
    assert box.expire(limit=EXPIRY_BATCH) == EXPIRY_BATCH
    await box.expire_all()
    assert (await box.stats()).inboxes == 20_000
    assert box.expire() == 0


async def test_never_expires_while_a_reader_waits() -> None:
    clock = ManualClock()
    box = make(clock)
    async with anyio.create_task_group() as tasks:
        results: list[Message | None] = []

        async def read() -> None:
            results.append(await box.receive(me("r"), wait=1000, disconnected=never))

        tasks.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        clock.now += 500
        assert box.expire() == 0
        await box.send("s", "r", Message("s", b"late"))
    assert [m.body for m in results if m] == [b"late"]


async def test_max_inboxes() -> None:
    clock = ManualClock()
    box = make(clock, max_inboxes=2)
    await box.open(me("a"))
    await box.open(me("b"))
    with pytest.raises(TooManyInboxes):
        await box.open(me("c"))
    await box.open(me("a"))  # existing inboxes keep working
    clock.now += 61
    await box.open(me("c"))  # expired ones make room


async def test_hand_over_to_waiting_reader_skips_the_queue() -> None:
    box = make(ManualClock(), inbox_capacity=1)
    async with anyio.create_task_group() as tasks:
        got: list[Message | None] = []

        async def read() -> None:
            got.append(await box.receive(me("r"), wait=10, disconnected=never))

        tasks.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        await box.send("s", "r", Message("s", b"1"))  # to the reader, not queued
        await box.send("s", "r", Message("s", b"2"))  # fills the queue of one
        with pytest.raises(InboxFull):
            await box.send("s", "r", Message("s", b"3"))
    assert [m.body for m in got if m] == [b"1"]


async def test_requeue_puts_message_first() -> None:
    box = make(ManualClock())
    await box.open(me("r"))
    await box.send("s", "r", Message("s", b"second"))
    await box.requeue("r", Message("s", b"first"))
    first = await box.receive(me("r"), wait=0, disconnected=never)
    assert first is not None and first.body == b"first"


async def test_cancelled_reader_keeps_a_handed_over_message() -> None:
    clock = ManualClock()
    box = make(clock, inbox_capacity=1)
    async with anyio.create_task_group() as tasks:

        async def read() -> None:
            await box.receive(me("r"), wait=10, disconnected=never)

        tasks.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        await box.send("s", "r", Message("s", b"keep"))
        tasks.cancel_scope.cancel()  # the reader dies before it could answer
    with pytest.raises(InboxFull):  # the message counts again: it waits in the queue
        await box.send("s", "r", Message("s", b"over capacity"))
    kept = await box.receive(me("r"), wait=0, disconnected=never)
    assert kept is not None and kept.body == b"keep"


async def test_shutdown_answers_waiting_readers() -> None:
    box = make(ManualClock())
    results: list[Message | None] = []
    with anyio.fail_after(5):  # readers that ignored shutdown would wait 1000 s
        async with anyio.create_task_group() as tasks:
            for name in ("a", "b", "c"):

                async def read(name: str = name) -> None:
                    results.append(await box.receive(me(name), wait=1000, disconnected=never))

                tasks.start_soon(read)
            await anyio.wait_all_tasks_blocked()
            assert (await box.stats()).waiting_readers == 3
            box.shutdown()
    assert results == [None, None, None]
    assert await box.receive(me("a"), wait=1000, disconnected=never) is None


async def test_mass_expiry_gives_the_table_back() -> None:
    clock = ManualClock()
    box = make(clock, max_inboxes=100_000)
    for i in range(50_000):
        await box.open(me(f"p{i}"))
    grown = sys.getsizeof(box._inboxes)
    clock.now += 61
    await box.expire_all()
    assert (await box.stats()).inboxes == 0
    assert sys.getsizeof(box._inboxes) < grown / 100


async def test_no_expiry_between_hand_over_and_the_readers_take() -> None:
    clock = ManualClock()
    box = make(clock)
    got: list[Message | None] = []
    async with anyio.create_task_group() as tasks:

        async def read() -> None:
            got.append(await box.receive(me("r"), wait=1000, disconnected=never))

        tasks.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        clock.now += 500
        await box.send("s", "r", Message("s", b"answered 200"))
        # An expiry pass runs before the woken reader gets to take its message.
        assert box.expire() == 0
    assert [m.body for m in got if m] == [b"answered 200"]


async def test_every_request_checks_the_digest_and_no_password_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checks: list[str] = []
    matches = PasswordDigest.matches

    def counting(self: PasswordDigest, password: str) -> bool:
        checks.append(password)
        return matches(self, password)

    monkeypatch.setattr(PasswordDigest, "matches", counting)
    box = make(ManualClock())
    first = me("alice", "secret")
    await box.open(first)  # creates: digest made, nothing checked
    await box.open(first)
    with pytest.raises(WrongPassword):
        await box.open(me("alice", "guess"))
    assert checks == ["secret", "guess"]  # no shortcut: one check per request
    alive = weakref.ref(first)
    del first
    gc.collect()
    assert alive() is None  # the inbox holds no reference that keeps a password in clear


async def test_nothing_is_taken_for_a_client_already_gone() -> None:
    box = make(ManualClock())
    await box.open(me("r"))
    await box.send("s", "r", Message("s", b"keep"))
    assert await box.receive(me("r"), wait=0, disconnected=never, gone=lambda: True) is None
    assert await box.receive(me("r"), wait=0, disconnected=never) == Message("s", b"keep")


async def test_capacity_zero_only_hands_over_and_a_requeue_still_fits() -> None:
    box = make(ManualClock(), inbox_capacity=0)
    await box.open(me("r"))
    with pytest.raises(InboxFull):
        await box.send("s", "r", Message("s", b"nobody waits"))
    got: list[Message | None] = []
    async with anyio.create_task_group() as tasks:

        async def read() -> None:
            got.append(await box.receive(me("r"), wait=10, disconnected=never))

        tasks.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        await box.send("s", "r", Message("s", b"handed"))
        with pytest.raises(InboxFull):  # no reader waits any more
            await box.send("s", "r", Message("s", b"too late"))
    assert got == [Message("s", b"handed")]
    await box.requeue("r", Message("s", b"handed"))  # its delivery failed: it goes back regardless
    assert await box.receive(me("r"), wait=0, disconnected=never) == Message("s", b"handed")


async def test_queued_bytes_are_capped_and_given_back() -> None:
    clock = ManualClock()
    one = Message("s", b"x" * 800, b"text/plain")
    size = message_size(one)
    box = make(clock, inbox_capacity=100, max_queued_bytes=3 * size)
    for name in ("a", "b"):
        await box.open(me(name))
    for name in ("a", "a", "b"):
        await box.send("s", name, one)
    with pytest.raises(StoreFull):
        await box.send("s", "b", one)
    assert (await box.stats()).queued_bytes == 3 * size
    assert await box.receive(me("a"), wait=0, disconnected=never) == one  # delivered: room again
    await box.send("s", "b", one)
    await box.requeue("a", one)  # a failed delivery goes back even over the limit
    assert (await box.stats()).queued_bytes == 4 * size
    with pytest.raises(StoreFull):
        await box.send("s", "b", one)
    clock.now += 61
    assert box.expire() == 2  # expiry gives back the bytes of the messages it deletes
    assert (await box.stats()).queued_bytes == 0


async def test_a_flood_of_empty_messages_is_bounded_too() -> None:
    box = make(ManualClock(), inbox_capacity=10**6, max_queued_bytes=100_000)
    await box.open(me("r"))
    accepted = 0
    with pytest.raises(StoreFull):
        while True:
            await box.send("s", "r", Message("s", b""))
            accepted += 1
    assert accepted == 100_000 // (MESSAGE_OVERHEAD + len("s"))


async def test_a_full_store_still_hands_messages_to_waiting_readers() -> None:
    """Like capacity, the limit is on what waits in queues: a hand-off does not wait."""
    big = Message("s", b"x" * 1000)
    box = make(ManualClock(), max_queued_bytes=message_size(big))
    await box.open(me("q"))
    await box.send("s", "q", big)
    with pytest.raises(StoreFull):
        await box.send("s", "q", big)
    got: list[Message | None] = []
    async with anyio.create_task_group() as tasks:

        async def read() -> None:
            got.append(await box.receive(me("r"), wait=10, disconnected=never))

        tasks.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        await box.send("s", "r", big)
    assert got == [big]
    assert (await box.stats()).queued_bytes == message_size(big)  # q's message alone


def from_network(name: str, network: str) -> Credentials:
    return Credentials(name, "pw", network)


async def test_inboxes_per_network_are_limited_and_expiry_frees_the_place() -> None:
    clock = ManualClock()
    box = make(clock, max_inboxes_per_ip=2)
    await box.open(from_network("x", "10.0.0.1"))
    await box.open(from_network("y", "10.0.0.1"))
    with pytest.raises(TooManyInboxesFromClient):
        await box.open(from_network("z", "10.0.0.1"))
    await box.open(from_network("x", "10.9.9.9"))  # an inbox it has opens from anywhere
    await box.open(from_network("z", "10.0.0.2"))  # another network counts apart
    await box.open(from_network("w", ""))  # an unknown network is not limited
    clock.now += 30
    await box.receive(from_network("y", "10.9.9.9"), wait=0, disconnected=never)  # keeps y alive
    clock.now += 31  # x has expired (not yet swept): its place is free
    await box.open(from_network("v", "10.0.0.1"))
    with pytest.raises(TooManyInboxesFromClient):  # y and v
        await box.open(from_network("u", "10.0.0.1"))
    clock.now += 61
    assert box.expire() == 2  # y and v (x, z and w went in the step that made room for v)
    assert box._quotas.held("10.0.0.1") == box._quotas.held("10.0.0.2") == 0


async def test_no_limit_per_network_when_zero() -> None:
    box = make(ManualClock(), max_inboxes_per_ip=0)
    for i in range(20):
        await box.open(from_network(f"p{i}", "10.0.0.1"))
    assert (await box.stats()).inboxes == 20


async def test_a_message_handed_to_a_reader_whose_client_left_stays_queued_and_counts() -> None:
    clock = ManualClock()
    box = make(clock, inbox_capacity=1)
    client_left = False
    got: list[Message | None] = []
    async with anyio.create_task_group() as tasks:

        async def read() -> None:
            got.append(await box.receive(me("r"), wait=10, disconnected=never, gone=lambda: client_left))

        tasks.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        await box.send("s", "r", Message("s", b"kept"))  # handed over...
        client_left = True  # ... and its client leaves before the reader takes it
    assert got == [None]
    with pytest.raises(InboxFull):  # no longer on its way to a reader: it counts again
        await box.send("s", "r", Message("s", b"over capacity"))
    assert await box.receive(me("r"), wait=0, disconnected=never) == Message("s", b"kept")
    clock.now += 61
    assert box.expire() == 1  # and nothing keeps its inbox alive
