"""The Redis backend's own rules, with several RedisMailbox instances (= processes) on one Redis.

Each instance has its own connection pool, wake-up channel and subscription,
exactly as separate worker processes would; the HTTP-level rules run against
Redis in test_wire_protocol.py (the `backend` fixture) and across real processes in
test_scale_out.py.
"""

from __future__ import annotations

import base64
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis
from redis.crc import key_slot

from inbox_asgi.app import create_app
from inbox_asgi.config import ConfigError, Settings, redact
from inbox_asgi.mailbox.credentials import Credentials
from inbox_asgi.mailbox.errors import (
    BackendUnavailable,
    InboxFull,
    NoSuchInbox,
    StoreFull,
    TooManyInboxes,
    TooManyInboxesFromClient,
    WrongPassword,
)
from inbox_asgi.mailbox.interface import Message
from inbox_asgi.mailbox.passwords import PasswordDigest
from inbox_asgi.mailbox.redis.codec import decode_message, encode_message, inbox_keys, index_key, network_key
from inbox_asgi.mailbox.redis.connection import check_connection, connect
from inbox_asgi.mailbox.redis.mailbox import RedisMailbox
from inbox_asgi.mailbox.redis.scripts import CLAIM, ENTER, SETTLE

from ...conftest import PUBLIC
from ...redis_support import RedisServer, running, until
from ...support import basic

pytestmark = pytest.mark.anyio

ODD_NAMES = ["plain", "{tag}", "a}b{c", "x:y:{z}", "ünï €", "🙂", "-_=", "!", "a" * 500]


def me(name: str, password: str = "pw") -> Credentials:
    return Credentials(name, password)


async def never() -> None:
    await anyio.sleep_forever()


@asynccontextmanager
async def mailboxes(
    server: RedisServer, count: int = 2, *, url: str | None = None, flush: bool = True, **options: Any
) -> AsyncIterator[list[RedisMailbox]]:
    """`count` running mailboxes on one Redis, each subscribed before the test starts.

    The TTL refresh runs every 20 s unless a test asks otherwise, so its safety
    net (it also re-checks waiting readers) cannot hide a lost wake-up.
    """
    if flush:
        server.flush()
    settings: dict[str, Any] = {
        "inbox_timeout": 60.0,
        "inbox_capacity": 3,
        "max_inboxes": 1000,
        "cleanup_interval": 30.0,
    }
    settings.update(options)
    boxes = [RedisMailbox(connect(url or server.url), **settings) for _ in range(count)]
    async with running(boxes):
        yield boxes


async def waiting(box: RedisMailbox) -> int:
    return (await box.stats()).waiting_readers


class Reader:
    """A receive() running in the background; `result` once it returned."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: Message | None = None
        self.disconnect = anyio.Event()

    async def run(self, box: RedisMailbox, credentials: Credentials, wait: float = 10) -> None:
        self.result = await box.receive(credentials, wait=wait, disconnected=self.disconnect.wait)
        self.done.set()


async def start_reader(tasks: anyio.abc.TaskGroup, box: RedisMailbox, name: str, wait: float = 10) -> Reader:
    before = await waiting(box)
    reader = Reader()
    tasks.start_soon(reader.run, box, me(name), wait)
    await until(lambda: _more_waiting(box, before))
    return reader


async def _more_waiting(box: RedisMailbox, before: int) -> bool:
    return await waiting(box) > before


# -- key layout and message encoding ---------------------------------------------------


@pytest.mark.parametrize("name", ODD_NAMES)
def test_one_inbox_lives_in_one_cluster_slot(name: str) -> None:
    meta, queue = inbox_keys(name)
    assert key_slot(meta) == key_slot(queue)
    tag = meta[meta.index(b"{") + 1 : meta.index(b"}")]
    assert base64.urlsafe_b64decode(tag + b"=" * (-len(tag) % 4)).decode() == name
    assert b"!" not in tag  # the index's tag cannot be an inbox's


def test_names_never_share_keys() -> None:
    keys = [inbox_keys(name) for name in ODD_NAMES]
    assert len({k for pair in keys for k in pair}) == 2 * len(ODD_NAMES)
    assert index_key() not in {k for pair in keys for k in pair}
    networks = [network_key(name) for name in ODD_NAMES]  # any string, as for names
    assert len(set(networks)) == len(ODD_NAMES)
    assert not {key_slot(k) for k in networks} & {key_slot(index_key())}
    for key in networks:  # the tag is `net:` + base64url, which no inbox tag can be
        assert key[key.index(b"{") + 1 :].startswith(b"net:")


@pytest.mark.parametrize(
    "message",
    [
        Message("s", b"body", b"application/sdp"),
        Message("zoë {:}", b"", None),
        Message("s", bytes(range(256)), b""),
        Message("🙂" * 100, b"\x00" * 10000, b"text/plain; charset=utf-8"),
    ],
)
def test_message_encoding_round_trips(message: Message) -> None:
    assert decode_message(encode_message(message)) == message


def test_redact_hides_the_password() -> None:
    assert redact("redis://user:s3cret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact("redis://host:6379/0") == "redis://host:6379/0"


# -- the protocol across processes ---------------------------------------------------------


async def test_odd_names_work_end_to_end(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server) as (a, b):
        for name in ODD_NAMES:
            await a.open(me(name))
            await b.send("s", name, Message("s", name.encode()))
            received = await b.receive(me(name), wait=0, disconnected=never)
            assert received is not None and received.body == name.encode()
            with pytest.raises(WrongPassword):
                await b.open(me(name, "other"))


async def test_message_sent_via_one_process_wakes_the_reader_on_another(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server) as (a, b), anyio.create_task_group() as tasks:
        reader = await start_reader(tasks, a, "r")
        started = time.monotonic()
        await b.send("s", "r", Message("s", b"hello", b"text/plain"))
        with anyio.fail_after(2):
            await reader.done.wait()
        assert reader.result == Message("s", b"hello", b"text/plain")
        assert time.monotonic() - started < 0.5
        assert await waiting(a) == 0


async def test_newest_reader_wins_across_processes(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server) as (a, b), anyio.create_task_group() as tasks:
        old = await start_reader(tasks, a, "r")
        new = await start_reader(tasks, b, "r")
        with anyio.fail_after(2):
            await old.done.wait()
        assert old.result is None
        assert await waiting(a) == 0
        await a.send("s", "r", Message("s", b"for the new one"))
        with anyio.fail_after(2):
            await new.done.wait()
        assert new.result is not None and new.result.body == b"for the new one"


async def test_passwords_are_shared(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server) as (a, b):
        await a.open(me("r", "first"))
        with pytest.raises(WrongPassword):
            await b.open(me("r", "second"))
        with pytest.raises(WrongPassword):
            await b.receive(me("r", "second"), wait=0, disconnected=never)
        await b.open(me("r", "first"))
        with redis_server.client() as client:
            stored = client.hget(inbox_keys("r")[0], "pw")
        assert isinstance(stored, bytes) and b"first" not in stored


async def test_capacity_is_global_and_a_hand_over_does_not_count(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server, inbox_capacity=1) as (a, b), anyio.create_task_group() as tasks:
        reader = await start_reader(tasks, a, "r")
        await b.send("s", "r", Message("s", b"handed"))  # straight to the waiting reader
        await a.send("s", "r", Message("s", b"queued"))
        with pytest.raises(InboxFull):
            await b.send("s", "r", Message("s", b"refused"))
        with anyio.fail_after(2):
            await reader.done.wait()
        assert reader.result is not None and reader.result.body == b"handed"
        with pytest.raises(InboxFull):
            await a.send("s", "r", Message("s", b"still full"))
        got = await b.receive(me("r"), wait=0, disconnected=never)
        assert got is not None and got.body == b"queued"
        assert await b.receive(me("r"), wait=0, disconnected=never) is None


async def test_capacity_zero_only_hands_over_and_a_requeue_still_fits(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server, inbox_capacity=0) as (a, b), anyio.create_task_group() as tasks:
        await a.open(me("r"))
        with pytest.raises(InboxFull):
            await b.send("s", "r", Message("s", b"nobody waits"))
        reader = await start_reader(tasks, a, "r")
        await b.send("s", "r", Message("s", b"handed"))
        with pytest.raises(InboxFull):  # a message is on its way to the reader: nothing more
            await b.send("s", "r", Message("s", b"too late"))
        with anyio.fail_after(2):
            await reader.done.wait()
        assert reader.result == Message("s", b"handed")
        await b.requeue("r", Message("s", b"handed"))  # its delivery failed: it goes back regardless
        assert await a.receive(me("r"), wait=0, disconnected=never) == Message("s", b"handed")


async def test_send_to_a_missing_inbox(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server, count=1) as (a,):
        with pytest.raises(NoSuchInbox):
            await a.send("s", "nobody", Message("s", b""))


async def test_max_inboxes_is_global_and_frees_up_on_expiry(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server, max_inboxes=2, inbox_timeout=0.5) as (a, b):
        await a.open(me("x"))
        await b.open(me("y"))
        await a.open(me("x"))  # existing inboxes still open
        with pytest.raises(TooManyInboxes):
            await b.open(me("z"))
        assert (await a.stats()).inboxes == 2

        async def z_fits() -> bool:
            await a.receive(me("y"), wait=0, disconnected=never)  # reading keeps y alive
            try:
                await b.open(me("z"))
            except TooManyInboxes:
                return False
            return True

        await until(z_fits, within=5)  # x expired
        assert (await b.stats()).inboxes == 2
        with pytest.raises(TooManyInboxes):
            await a.open(me("w"))


def from_network(name: str, network: str) -> Credentials:
    return Credentials(name, "pw", network)


async def test_inboxes_per_network_are_limited_globally_and_free_up_on_expiry(
    redis_server: RedisServer,
) -> None:
    async with mailboxes(redis_server, max_inboxes_per_ip=2, inbox_timeout=0.5) as (a, b):
        await a.open(from_network("x", "10.0.0.1"))
        await b.open(from_network("y", "10.0.0.1"))
        with pytest.raises(TooManyInboxesFromClient):  # counted across processes
            await b.open(from_network("z", "10.0.0.1"))
        await a.open(from_network("x", "10.9.9.9"))  # an inbox it has opens from anywhere
        await b.open(from_network("z", "10.0.0.2"))  # another network counts apart
        await a.open(from_network("w", ""))  # an unknown network is not limited

        async def v_fits() -> bool:
            await a.receive(from_network("y", "10.9.9.9"), wait=0, disconnected=never)  # y stays
            try:
                await b.open(from_network("v", "10.0.0.1"))
            except TooManyInboxesFromClient:
                return False
            return True

        await until(v_fits, within=5)  # x expired: its place is free
        # Read (from elsewhere) for three more inbox timeouts, y and v keep their places:
        # their entries move on with their inboxes, in the index of the network that made them.
        with anyio.fail_after(5):
            until_time = anyio.current_time() + 1.5
            while anyio.current_time() < until_time:
                for name in ("y", "v"):
                    await b.receive(from_network(name, "10.9.9.9"), wait=0, disconnected=never)
                with pytest.raises(TooManyInboxesFromClient):
                    await a.open(from_network("u", "10.0.0.1"))
        with redis_server.client() as client:
            assert client.pttl(network_key("10.0.0.1")) > 0  # the index key goes when its entries do


async def test_index_outlives_each_inbox_but_is_rarely_written(redis_server: RedisServer) -> None:
    """max-inboxes never undercounts a live inbox, at one index write per half timeout."""
    async with mailboxes(redis_server, count=1, inbox_timeout=1) as (a,):
        scores: list[float] = []
        with redis_server.client() as client:
            started = time.monotonic()
            while time.monotonic() - started < 1.6:  # a property checked over 1.6 s of reads
                await a.receive(me("r"), wait=0, disconnected=never)
                seconds, micros = client.time()
                ttl = int(client.pttl(inbox_keys("r")[0]))
                score = client.zscore(index_key(), "r")
                assert score is not None and score >= seconds * 1000 + micros // 1000 + ttl
                scores.append(score)
        assert 2 <= len(set(scores)) <= 5 < len(scores) // 10


async def test_expiry_through_ttls_removes_every_key(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server, inbox_timeout=0.3) as (a, b):
        await a.receive(me("r"), wait=0, disconnected=never)
        await b.send("s", "r", Message("s", b"doomed"))
        meta, queue = inbox_keys("r")
        with redis_server.client() as client:
            assert 0 < int(client.pttl(meta)) <= 300
            assert 0 < int(client.pttl(queue)) <= 300

            async def gone() -> bool:
                return not client.exists(meta, queue)

            await until(gone, within=5)
        with pytest.raises(NoSuchInbox):
            await b.send("s", "r", Message("s", b"late"))
        await a.open(me("r", "new password"))  # the name is free


async def test_sending_does_not_refresh_the_inbox(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server, count=1, inbox_timeout=5) as (a,):
        await a.open(me("r"))
        await a.open(me("s"))
        meta = inbox_keys("s")[0]
        with redis_server.client() as client:
            client.pexpire(meta, 1000)
            await a.send("s", "r", Message("s", b"x"))
            await a.open(me("s"))
            assert int(client.pttl(meta)) <= 1000
            await a.receive(me("s"), wait=0, disconnected=never)
            assert int(client.pttl(meta)) > 1000


async def test_a_finished_get_restarts_the_inbox_clock(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server, count=1, inbox_timeout=3) as (a,):
        assert await a.receive(me("r"), wait=0.6, disconnected=never) is None  # times out
        with redis_server.client() as client:
            assert int(client.pttl(inbox_keys("r")[0])) > 2800  # not 3000 - 600


async def test_no_expiry_while_a_reader_waits_elsewhere(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server, inbox_timeout=0.3, cleanup_interval=0.05) as (a, b):
        async with anyio.create_task_group() as tasks:
            reader = await start_reader(tasks, a, "r")
            # Three inbox timeouts pass while it waits: a witness inbox expires three times over.
            witness = inbox_keys("witness")[0]
            with redis_server.client() as client:
                for _ in range(3):
                    await b.open(me("witness"))
                    await until(lambda: not client.exists(witness))
            await b.send("s", "r", Message("s", b"still here"))
            with anyio.fail_after(2):
                await reader.done.wait()
        assert reader.result is not None and reader.result.body == b"still here"


async def test_gone_reader_consumes_nothing(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server) as (a, b), anyio.create_task_group() as tasks:
        reader = await start_reader(tasks, a, "r")
        reader.disconnect.set()
        with anyio.fail_after(2):
            await reader.done.wait()
        assert reader.result is None
        await b.send("s", "r", Message("s", b"kept"))
        got = await b.receive(me("r"), wait=0, disconnected=never)
        assert got is not None and got.body == b"kept"


async def test_a_superseded_reader_cannot_claim(redis_server: RedisServer) -> None:
    """The script rule behind "no message consumed for a reader that is gone"."""
    async with mailboxes(redis_server, count=1) as (a,):
        await a.open(me("r"))
        keys = inbox_keys("r")
        digest = PasswordDigest.of("pw", a._salts["r"]).to_bytes()
        enter = [(ENTER, keys, (digest, b"", a.ttl_ms, b"wait", 0, b"nowhere|1"))]
        assert (await a._run(enter))[0][0] == b"waiting"
        newer = [(ENTER, keys, (digest, b"", a.ttl_ms, b"wait", 0, b"nowhere|2"))]
        assert (await a._run(newer))[0][0] == b"waiting"
        await a.send("s", "r", Message("s", b"for reader 2"))
        assert (await a._run([(CLAIM, keys, (b"nowhere|1", a.ttl_ms))]))[0][0] == b"superseded"
        claimed = (await a._run([(CLAIM, keys, (b"nowhere|2", a.ttl_ms))]))[0]
        assert claimed[0] == b"message" and decode_message(claimed[2]).body == b"for reader 2"


async def test_reader_of_a_dead_process_loses_no_message(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server) as (a, b):
        await a.open(me("r"))
        digest = PasswordDigest.of("pw", a._salts["r"]).to_bytes()
        # A reader registered by a process that then died: its token stays, nobody hears it.
        enter = (ENTER, inbox_keys("r"), (digest, b"", a.ttl_ms, b"wait", 0, b"dead-process|1"))
        assert (await a._run([enter]))[0][0] == b"waiting"
        await a.send("s", "r", Message("s", b"one"))
        await a.send("s", "r", Message("s", b"two"))
        bodies = [await b.receive(me("r"), wait=0, disconnected=never) for _ in range(3)]
        assert [m.body if m else None for m in bodies] == [b"one", b"two", None]


async def test_a_message_taken_for_a_client_that_left_meanwhile_goes_back_first(
    redis_server: RedisServer,
) -> None:
    """The client leaves while ENTER runs: Redis took the message, the server then sees it gone.

    Answering would write into a closed connection (uvicorn drops that silently):
    the message must go back, in front of the ones behind it.
    """
    async with mailboxes(redis_server) as (a, b):
        await a.open(me("r"))
        for body in (b"one", b"two"):
            await b.send("s", "r", Message("s", body))
        for wait in (0, 5):
            assert await a.receive(me("r"), wait=wait, disconnected=never, gone=lambda: True) is None
        bodies = [await b.receive(me("r"), wait=0, disconnected=never) for _ in range(3)]
        assert [m.body if m else None for m in bodies] == [b"one", b"two", None]


async def test_a_message_claimed_for_a_client_that_left_meanwhile_goes_back(
    redis_server: RedisServer,
) -> None:
    """Woken, the reader's client is still there; it leaves while CLAIM runs."""
    checks = iter([False])  # the check before CLAIM says "there"; every later one says "gone"

    def gone() -> bool:
        return next(checks, True)

    async with mailboxes(redis_server) as (a, b), anyio.create_task_group() as tasks:
        result: list[Message | None] = []

        async def read() -> None:
            result.append(await a.receive(me("r"), wait=5, disconnected=never, gone=gone))

        before = await waiting(a)
        tasks.start_soon(read)
        await until(lambda: _more_waiting(a, before))
        await b.send("s", "r", Message("s", b"one"))
        await until(lambda: result)
        assert result == [None]
        got = await b.receive(me("r"), wait=0, disconnected=never)
        assert got is not None and got.body == b"one"


@pytest.mark.parametrize("wait", [5, 0], ids=["long poll", "no long poll"])
async def test_a_newer_get_waits_behind_a_held_message(redis_server: RedisServer, wait: float) -> None:
    """Order: while a taken message may still come back, no later one is handed out."""
    async with mailboxes(redis_server) as (a, b), anyio.create_task_group() as tasks:
        await a.open(me("r"))
        for body in (b"one", b"two"):
            await a.send("s", "r", Message("s", body))
        keys = inbox_keys("r")
        digest = PasswordDigest.of("pw", a._salts["r"]).to_bytes()
        # An earlier GET took "one"; its process has not yet seen whether its client is there.
        taken = (await a._run([(ENTER, keys, (digest, b"", a.ttl_ms, b"read", 0, b"slow|1"))]))[0]
        assert taken[0] == b"message" and decode_message(taken[2]).body == b"one"
        reader = await start_reader(tasks, b, "r", wait)  # a newer GET: it waits for the outcome
        with redis_server.client() as client:  # registered as the reader, behind the hold
            assert client.hget(keys[0], "reader").startswith(b.channel)
        assert not reader.done.is_set()
        # The earlier GET's client had left: "one" goes back, and the newer GET gets it.
        assert (await a._run([(SETTLE, keys, (b"slow|1", b"back"))]))[0] == 1
        with anyio.fail_after(2):
            await reader.done.wait()
        assert reader.result is not None and reader.result.body == b"one"
        got = await a.receive(me("r"), wait=0, disconnected=never)
        assert got is not None and got.body == b"two"
        assert await a.receive(me("r"), wait=0, disconnected=never) is None


async def test_a_hold_nobody_settles_lapses_and_the_message_comes_again(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server) as (a, b):
        await a.open(me("r"))
        await a.send("s", "r", Message("s", b"one"))
        keys = inbox_keys("r")
        digest = PasswordDigest.of("pw", a._salts["r"]).to_bytes()
        # Taken for a GET whose process then died: nobody settles the hold.
        taken = (await a._run([(ENTER, keys, (digest, b"", a.ttl_ms, b"read", 0, b"dead-process|1"))]))[0]
        assert taken[0] == b"message"
        assert await b.receive(me("r"), wait=0.2, disconnected=never) is None  # held: not handed out
        with redis_server.client() as client:
            client.hset(keys[0], "hdl", "0")  # as if HOLD_MS had passed
        got = await b.receive(me("r"), wait=0, disconnected=never)
        assert got is not None and got.body == b"one"


async def test_requeue_goes_to_the_front_and_wakes_a_reader(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server) as (a, b):
        await a.open(me("r"))
        await a.send("s", "r", Message("s", b"second"))
        await b.requeue("r", Message("s", b"first"))
        bodies = [await a.receive(me("r"), wait=0, disconnected=never) for _ in range(2)]
        assert [m.body if m else None for m in bodies] == [b"first", b"second"]
        async with anyio.create_task_group() as tasks:
            reader = await start_reader(tasks, a, "r")
            await b.requeue("r", Message("s", b"back"))
            with anyio.fail_after(2):
                await reader.done.wait()
        assert reader.result is not None and reader.result.body == b"back"


async def test_shutdown_answers_waiting_readers_at_once(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server, count=1) as (a,), anyio.create_task_group() as tasks:
        reader = await start_reader(tasks, a, "r", wait=30)
        a.shutdown()
        with anyio.fail_after(2):
            await reader.done.wait()
        assert reader.result is None
        assert await a.receive(me("r"), wait=30, disconnected=never) is None  # no more waiting


async def test_wake_ups_missed_while_unsubscribed_are_recovered(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server, count=1) as (a,), anyio.create_task_group() as tasks:
        reader = await start_reader(tasks, a, "r")
        with redis_server.client() as client:
            # A message that arrives without any wake-up (as if it was published while
            # the subscription was down) ...
            client.rpush(inbox_keys("r")[1], encode_message(Message("s", b"missed")))
            assert not reader.done.is_set()
            # ... is found when the subscription comes back.
            client.client_kill_filter(_type="pubsub")
        with anyio.fail_after(5):
            await reader.done.wait()
        assert reader.result is not None and reader.result.body == b"missed"


async def test_refresh_wakes_a_reader_that_missed_a_message(redis_server: RedisServer) -> None:
    async with mailboxes(redis_server, count=1, inbox_timeout=60) as (a,), anyio.create_task_group() as tasks:
        reader = await start_reader(tasks, a, "r")
        with redis_server.client() as client:
            client.rpush(inbox_keys("r")[1], encode_message(Message("s", b"missed")))
        a.refresh_every = 0.0  # make its refresh due now
        await a.refresh_waiting()
        with anyio.fail_after(2):
            await reader.done.wait()
        assert reader.result is not None and reader.result.body == b"missed"


async def test_waiting_readers_hold_no_connection(redis_server: RedisServer) -> None:
    count = 300
    async with mailboxes(redis_server, count=1) as (a,), anyio.create_task_group() as tasks:
        readers = [Reader() for _ in range(count)]
        for i, reader in enumerate(readers):
            tasks.start_soon(reader.run, a, me(f"r{i}"), 30)
        await until(lambda: _more_waiting(a, count - 1), within=10)
        with redis_server.client() as client:
            clients = len(client.client_list())
        assert clients <= 3  # one connection for commands, the subscription, this client
        a.shutdown()


# -- Redis lost and back ---------------------------------------------------------------------


async def test_redis_unreachable_is_503_not_a_hang(own_redis: RedisServer) -> None:
    async with mailboxes(own_redis) as (a, b), anyio.create_task_group() as tasks:
        await a.open(me("r"))
        await a.send("s", "r", Message("s", b"accepted before"))
        await a.receive(me("r"), wait=0, disconnected=never)
        reader = await start_reader(tasks, a, "r", wait=60)
        own_redis.stop(save=True)
        await until(lambda: not a.subscribed and not b.subscribed)
        with anyio.fail_after(3):
            for call in (
                b.send("s", "r", Message("s", b"x")),
                b.open(me("q")),
                b.receive(me("r"), wait=5, disconnected=never),
            ):
                with pytest.raises(BackendUnavailable):
                    await call
        assert not reader.done.is_set()  # the waiting reader keeps waiting
        own_redis.start()
        await until(lambda: a.subscribed and b.subscribed, within=5)
        # service resumes by itself; the waiting reader is still the inbox's reader
        await b.send("s", "r", Message("s", b"after"))
        with anyio.fail_after(3):
            await reader.done.wait()
        assert reader.result is not None and reader.result.body == b"after"


async def test_a_stalled_redis_is_503_within_the_socket_timeout(own_redis: RedisServer) -> None:
    url = own_redis.url + "?socket_timeout=0.3&socket_connect_timeout=0.3"
    async with mailboxes(own_redis, count=1, url=url) as (a,):
        await a.open(me("r"))
        assert own_redis.process is not None
        own_redis.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with anyio.fail_after(3), pytest.raises(BackendUnavailable):
                await a.send("s", "r", Message("s", b"x"))
            assert time.monotonic() - started < 2
        finally:
            own_redis.process.send_signal(signal.SIGCONT)

        async def works() -> bool:
            try:
                await a.send("s", "r", Message("s", b"y"))
            except BackendUnavailable:
                return False
            return True

        await until(works, within=5)


# -- Redis full (maxmemory) ------------------------------------------------------------------


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis for one test with little room: 4 MB, refusing writes beyond (noeviction)."""
    server = RedisServer(tmp_path, options=("--maxmemory", "4mb", "--maxmemory-policy", "noeviction"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.kill()


async def fill(box: RedisMailbox, recipient: str, body: bytes) -> int:
    """Send until Redis is out of memory; how many went in."""
    sent = 0
    with anyio.fail_after(10), pytest.raises(StoreFull):
        while True:
            await box.send("s", recipient, Message("s", body))
            sent += 1
    return sent


async def test_redis_out_of_memory_is_store_full_and_queues_still_drain(small_redis: RedisServer) -> None:
    body = b"x" * 10_000
    async with mailboxes(small_redis, inbox_capacity=100_000) as (a, b):
        await a.open(me("r"))
        await a.open(me("w"))
        sent = await fill(b, "r", body)
        assert 0 < sent < 1000
        sent += await fill(a, "r", body)  # still full (a send may slip in as Redis frees a buffer)
        async with anyio.create_task_group() as tasks:  # a hand-off goes through all the same
            reader = await start_reader(tasks, a, "w")
            await b.send("s", "w", Message("s", b"handed"))
            with anyio.fail_after(2):
                await reader.done.wait()
        assert reader.result == Message("s", b"handed")
        first = await a.receive(me("r"), wait=0, disconnected=never)
        assert first is not None
        await b.requeue("r", first)  # a put-back is never refused
        received = 0
        while await a.receive(me("r"), wait=0, disconnected=never) is not None:
            received += 1
        assert received == sent  # every message accepted came out, once
        await b.send("s", "r", Message("s", body))  # and there is room again


async def test_redis_out_of_memory_is_503_over_http_never_500(small_redis: RedisServer) -> None:
    settings = Settings(
        redis_url=small_redis.url, inbox_capacity=100_000, long_polling=False, public=str(PUBLIC)
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        assert (await client.get("/inbox", headers=basic("r"))).status_code == 204
        with anyio.fail_after(10):
            while True:
                response = await client.post("/inbox?to=r", headers=basic("s"), content=b"x" * 10_000)
                if response.status_code != 200:
                    break
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] and "queued message bytes" in response.text
        assert (await client.get("/inbox", headers=basic("r"))).status_code == 200  # reading drains


def test_check_connection_warns_when_redis_memory_is_unbounded(
    redis_server: RedisServer, small_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    check_connection(small_redis.url)
    assert "maxmemory" not in caplog.text
    check_connection(redis_server.url)  # the session's Redis has no maxmemory
    assert "Redis has no maxmemory" in caplog.text
    caplog.clear()
    with small_redis.client() as client:
        client.config_set("maxmemory-policy", "allkeys-lru")
    check_connection(small_redis.url)
    assert "maxmemory-policy allkeys-lru" in caplog.text


def test_check_connection(redis_server: RedisServer) -> None:
    check_connection(redis_server.url)
    with redis.Redis(port=redis_server.port) as client:
        client.script_flush()
    check_connection(redis_server.url)  # loads the scripts again


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis://127.0.0.1:1/0", "cannot use Redis at redis://127.0.0.1:1/0"),
        ("redis://:hunter2@127.0.0.1:1/0", "***"),
        ("http://127.0.0.1:1", "-redis-url"),
    ],
)
def test_check_connection_explains_what_is_wrong(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_connection(url, timeout=1)
    assert words in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_check_connection_refuses_a_redis_too_old(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis.Redis, "info", lambda self, section=None: {"redis_version": "6.0.16"})
    with pytest.raises(ConfigError) as caught:
        check_connection(redis_server.url)
    assert "Redis 6.0.16 at redis://" in str(caught.value)
    assert "too old: inbox-asgi needs Redis 6.2 or later" in str(caught.value)
