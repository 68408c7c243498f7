"""Model-based test: MemoryMailbox against a few lines of pure Python that say what SPEC section 2 says.

Hypothesis drives both with random sequences of: claim or open an inbox with
the right or a wrong password, post (to existing, missing, full inboxes), read
without waiting, a read whose delivery fails (the message goes back), time
passing, expiry sweeps, and long polls: a reader superseded by a newer one
(while an intruder with a wrong password tries to read, while the clock runs
past the inbox timeout and a sweep runs), then woken by a message, a requeue
or its client leaving. Any difference in a result, an error or the counts
fails with the shortest sequence that shows it.

Rules are synchronous; each async call runs to completion on one event loop
kept for the whole sequence (an `asyncio.Runner`: far cheaper than a new loop
per call).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from inbox_asgi.mailbox.credentials import Credentials
from inbox_asgi.mailbox.errors import InboxError, InboxFull, NoSuchInbox, TooManyInboxes, WrongPassword
from inbox_asgi.mailbox.interface import Message
from inbox_asgi.mailbox.memory import MemoryMailbox

from ..support import ManualClock

T = TypeVar("T")

TIMEOUT = 10.0
CAPACITY = 2
MAX_INBOXES = 3
#: A long poll that only the test ends (the wait uses real time, the mailbox's clock is fake).
LONG_POLL = 3600.0

NAMES = st.sampled_from(["ann", "bob", "cat", "dan"])  # one more than MAX_INBOXES
PASSWORDS = st.sampled_from(["pw1", "pw2"])
#: Exact binary fractions, so expiry boundaries (exactly TIMEOUT) are hit without rounding.
STEPS = st.sampled_from([0.5, 1.0, 5.0, TIMEOUT - 0.5, TIMEOUT, TIMEOUT + 0.5, 3 * TIMEOUT])


@dataclass
class ModelInbox:
    password: str
    touched: float
    queue: deque[bytes] = field(default_factory=deque)


class Model:
    """The spec, naively: an inbox lives until TIMEOUT after its last read; no sweeps, no batches."""

    def __init__(self) -> None:
        self.now = 0.0
        self.inboxes: dict[str, ModelInbox] = {}

    def live(self, name: str) -> ModelInbox | None:
        inbox = self.inboxes.get(name)
        if inbox is not None and self.now - inbox.touched >= TIMEOUT:
            del self.inboxes[name]
            return None
        return inbox

    def live_inboxes(self) -> dict[str, ModelInbox]:
        for name in list(self.inboxes):
            self.live(name)
        return self.inboxes

    def open(self, name: str, password: str) -> ModelInbox:
        inbox = self.live(name)
        if inbox is None:
            if len(self.live_inboxes()) >= MAX_INBOXES:
                raise TooManyInboxes
            inbox = self.inboxes[name] = ModelInbox(password, self.now)
        elif inbox.password != password:
            raise WrongPassword
        return inbox

    def send(self, recipient: str, body: bytes) -> None:
        inbox = self.live(recipient)
        if inbox is None:
            raise NoSuchInbox
        if len(inbox.queue) >= CAPACITY:
            raise InboxFull
        inbox.queue.append(body)

    def receive(self, name: str, password: str) -> bytes | None:
        inbox = self.open(name, password)
        inbox.touched = self.now
        return inbox.queue.popleft() if inbox.queue else None


def outcome(action: Callable[[], T]) -> T | type[InboxError]:
    """The result, or the class of the InboxError raised: comparable across model and mailbox."""
    try:
        return action()
    except InboxError as error:
        return type(error)


async def never() -> None:
    await anyio.sleep_forever()


async def settle(condition: Callable[[], bool], steps: int = 20) -> bool:
    """Let the other tasks run (checkpoints, no sleeping) until `condition` holds; its final value."""
    for _ in range(steps):
        if condition():
            return True
        await anyio.lowlevel.checkpoint()
    return condition()


def body_of(message: Message | None) -> bytes | None:
    return None if message is None else message.body


class MailboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(0.0)
        self.mailbox = MemoryMailbox(
            inbox_timeout=TIMEOUT, inbox_capacity=CAPACITY, max_inboxes=MAX_INBOXES, clock=self.clock
        )
        self.model = Model()
        self.bodies = (b"m%d" % n for n in itertools.count())
        self.loop = asyncio.Runner()

    def teardown(self) -> None:
        self.loop.close()

    def run(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        async def call() -> T:
            return await function(*args)

        return self.loop.run(call())

    def receive_now(self, name: str, password: str) -> bytes | None:
        message = self.run(
            lambda: self.mailbox.receive(Credentials(name, password), wait=0, disconnected=never)
        )
        return body_of(message)

    # -- rules ---------------------------------------------------------------------

    @rule(name=NAMES, password=PASSWORDS)
    def open(self, name: str, password: str) -> None:
        def model_open() -> None:
            self.model.open(name, password)

        assert outcome(lambda: self.run(self.mailbox.open, Credentials(name, password))) == outcome(
            model_open
        )

    @rule(sender=NAMES, password=PASSWORDS, recipient=NAMES)
    def post(self, sender: str, password: str, recipient: str) -> None:
        """What POST /inbox does: the caller's credentials (creating its inbox), then the send."""
        body = next(self.bodies)

        def model_post() -> None:
            self.model.open(sender, password)
            self.model.send(recipient, body)

        async def mailbox_post() -> None:
            await self.mailbox.open(Credentials(sender, password))
            await self.mailbox.send(sender, recipient, Message(sender, body))

        assert outcome(lambda: self.run(mailbox_post)) == outcome(model_post)

    @rule(name=NAMES, password=PASSWORDS)
    def receive(self, name: str, password: str) -> None:
        expected = outcome(lambda: self.model.receive(name, password))
        assert outcome(lambda: self.receive_now(name, password)) == expected

    @rule(name=NAMES, password=PASSWORDS)
    def delivery_fails(self, name: str, password: str) -> None:
        """A GET whose response cannot be written: the message goes back to the front."""
        expected = outcome(lambda: self.model.receive(name, password))
        if isinstance(expected, bytes):
            self.model.inboxes[name].queue.appendleft(expected)

        async def receive_then_requeue() -> bytes | None:
            message = await self.mailbox.receive(Credentials(name, password), wait=0, disconnected=never)
            if message is not None:
                await self.mailbox.requeue(name, message)
            return body_of(message)

        assert outcome(lambda: self.run(receive_then_requeue)) == expected

    @rule(seconds=STEPS)
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds
        self.model.now += seconds

    @rule()
    def sweep(self) -> None:
        self.run(self.mailbox.expire_all)
        stats = self.run(self.mailbox.stats)
        live = self.model.live_inboxes()
        assert stats.inboxes == len(live)
        assert stats.queued_messages == sum(len(inbox.queue) for inbox in live.values())

    @precondition(lambda self: len(self.model.live_inboxes()) < MAX_INBOXES)
    @rule(
        name=NAMES,
        password=PASSWORDS,
        intruder=st.booleans(),
        aging=st.booleans(),
        ending=st.sampled_from(["message", "requeue", "client leaves"]),
    )
    def long_poll_superseded(
        self, name: str, password: str, intruder: bool, aging: bool, ending: str
    ) -> None:
        """Two readers on one empty inbox: the older gets None at once, the newer what comes next."""
        inbox = self.model.live(name)
        if inbox is not None and (inbox.queue or inbox.password != password):
            return  # would not wait: covered by `receive`
        body = next(self.bodies)
        me = Credentials(name, password)

        async def scenario() -> dict[str, Message | None]:
            got: dict[str, Message | None] = {}
            parked = {"older": anyio.Event(), "newer": anyio.Event()}
            leaves = anyio.Event()

            async def read(key: str) -> None:
                async def disconnected() -> None:  # awaited once the reader waits
                    parked[key].set()
                    await (leaves.wait() if key == "newer" else anyio.sleep_forever())

                got[key] = await self.mailbox.receive(me, wait=LONG_POLL, disconnected=disconnected)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read, "older")
                await parked["older"].wait()
                if intruder:  # a wrong password neither reads nor displaces the waiting reader
                    with pytest.raises(WrongPassword):
                        await self.mailbox.receive(
                            Credentials(name, password + "!"), wait=0, disconnected=never
                        )
                    assert not await settle(lambda: "older" in got)
                if aging:  # an inbox with a waiting reader outlives its timeout and a sweep
                    self.clock.now += 2 * TIMEOUT
                    await self.mailbox.expire_all()
                tasks.start_soon(read, "newer")
                await parked["newer"].wait()
                assert await settle(lambda: "older" in got), "the older reader was not answered at once"
                assert got == {"older": None}
                if ending == "message":
                    await self.mailbox.send("x", name, Message("x", body))
                elif ending == "requeue":
                    await self.mailbox.requeue(name, Message("x", body))
                else:
                    leaves.set()
            return got

        got = self.run(scenario)
        self.model.open(name, password)
        if aging:
            self.model.now += 2 * TIMEOUT
        self.model.inboxes[name].touched = self.model.now  # the newer GET just finished
        assert body_of(got["newer"]) == (None if ending == "client leaves" else body)

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def no_reader_left_waiting(self) -> None:
        assert self.run(self.mailbox.stats).waiting_readers == 0

    @invariant()
    def counts_never_fall_below_the_model(self) -> None:
        """Before a sweep the mailbox may still hold expired inboxes, never fewer than the live ones."""
        stats = self.run(self.mailbox.stats)
        live = self.model.live_inboxes()
        assert stats.inboxes >= len(live)
        assert stats.queued_messages >= sum(len(inbox.queue) for inbox in live.values())


MailboxMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_memory_mailbox_matches_the_model = MailboxMachine.TestCase
