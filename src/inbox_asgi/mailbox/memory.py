"""The embedded backend: every inbox in this process's memory."""

from __future__ import annotations

import asyncio
import heapq
import secrets
import sys
import time
from collections import OrderedDict
from collections.abc import Callable

import anyio
import anyio.lowlevel

from inbox_asgi.mailbox.credentials import Credentials
from inbox_asgi.mailbox.errors import (
    InboxFull,
    NoSuchInbox,
    StoreFull,
    TooManyInboxes,
    TooManyInboxesFromClient,
    WrongPassword,
)
from inbox_asgi.mailbox.interface import (
    SOCKET_WINDOW,
    Disconnected,
    Gone,
    MailboxStats,
    Message,
    ReaderEnded,
    ShuttingDown,
    Superseded,
    never_gone,
)
from inbox_asgi.mailbox.parking import CLOSED, MAIL, SUPERSEDED, ParkedReader
from inbox_asgi.mailbox.passwords import PasswordDigest
from inbox_asgi.mailbox.quotas import NetworkQuotas, Quota, message_size

#: Inboxes deleted per expiry step before yielding, so mass expiry never stalls the loop.
EXPIRY_BATCH = 500
#: The inbox table is rebuilt smaller once it holds a quarter of its peak (and the
#: peak was above this), if copying the rest is quick enough not to stall the loop.
SHRINK_BELOW = 10_000
SHRINK_MAX_COPY = 20_000

#: The queue of an inbox without messages (most of them, and every one a reader waits
#: on): one shared empty tuple rather than an empty list (56 bytes) per inbox.
NO_MESSAGES: tuple[()] = ()

#: How long a socket's wait lasts before it re-arms (only a bound on one timer).
SOCKET_PARK = 3600.0


class Inbox:
    __slots__ = ("generation", "handed_to", "password", "queue", "quota", "reader", "socket", "touched")

    def __init__(self, password: PasswordDigest, now: float, quota: Quota | None) -> None:
        self.password = password
        #: The -max-inboxes-per-ip count of the network that created it, if limited.
        self.quota = quota
        # A list once it holds messages, not a deque: an empty deque costs ~600 bytes,
        # and with at most inbox-capacity entries pop(0) is as cheap as popleft.
        self.queue: list[Message] | tuple[()] = NO_MESSAGES
        self.reader: ParkedReader | None = None
        #: The woken reader the first queued message was handed to, until it takes it
        #: or gives up, or a newer GET reads: that message does not count against
        #: capacity, and the inbox does not expire meanwhile. (One at most: a reader
        #: parks only on an empty queue.)
        self.handed_to: ParkedReader | None = None
        self.touched = now
        #: The open WebSocket reading it, if any: its reader until it closes.
        self.socket: MemorySocket | None = None
        #: Drawn when a socket first opens it (0 until then), so a GET-only inbox pays no int.
        self.generation = 0


class MemoryMailbox:
    """Inboxes in an OrderedDict kept in last-read order.

    Because the inbox timeout is the same for all, the dict's front is always
    the next to expire: an expiry pass pops from the front and stops at the
    first live inbox, so it costs what expires, never a scan of all inboxes.

    Queued messages together hold at most `max_queued_bytes` (see
    `quotas.message_size`): a message beyond it is refused with StoreFull,
    unless it is handed straight to a waiting GET (like capacity, the limit
    is on what waits in queues) or put back after a failed delivery (a
    message accepted is never lost). A socket's unacknowledged messages count
    until acknowledged, and a message for a socket is not a hand-off. One client network holds at most
    `max_inboxes_per_ip` inboxes (0: no limit; see `quotas.NetworkQuotas`).
    """

    def __init__(
        self,
        *,
        inbox_timeout: float,
        inbox_capacity: int,
        max_inboxes: int,
        cleanup_interval: float = 1.0,
        max_queued_bytes: int = sys.maxsize,
        max_inboxes_per_ip: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inbox_timeout = inbox_timeout
        self.inbox_capacity = inbox_capacity
        self.max_inboxes = max_inboxes
        self.cleanup_interval = cleanup_interval
        self.max_queued_bytes = max_queued_bytes
        self.clock = clock
        self._inboxes: OrderedDict[str, Inbox] = OrderedDict()
        self._quotas = NetworkQuotas(max_inboxes_per_ip)
        #: Readers parked now (a count: shutdown finds them through their inboxes).
        self._waiting = 0
        self._queued = 0
        self._queued_bytes = 0
        self._expired = 0
        self._high_water = 0
        self._closed = False
        #: The id of the last message accepted: ids increase in every inbox.
        self._last_id = 0

    # -- the Mailbox interface -------------------------------------------------

    async def open(self, credentials: Credentials) -> None:
        self._open(credentials, self.clock())

    async def send(self, sender: str, recipient: str, message: Message) -> None:
        inbox = self._lookup(recipient, self.clock())
        if inbox is None:
            raise NoSuchInbox
        reader = inbox.reader
        size = message_size(message)
        if reader is None and len(inbox.queue) - (inbox.handed_to is not None) >= self.inbox_capacity:
            raise InboxFull
        # A waiting GET takes its message and is gone; a socket keeps what it takes until
        # acknowledged (counted here until then), so a message for it is held, not passed on.
        if (reader is None or inbox.socket is not None) and self._queued_bytes + size > self.max_queued_bytes:
            raise StoreFull
        message.id = self._last_id = self._last_id + 1
        # For a waiting reader the message only passes through the queue: the
        # reader takes it from there, and only if its client is still connected.
        if inbox.queue:
            inbox.queue.append(message)
        else:
            inbox.queue = [message]
        self._queued += 1
        self._queued_bytes += size
        if reader is not None:
            inbox.reader = None
            inbox.handed_to = reader
            reader.wake(MAIL)

    async def receive(
        self,
        credentials: Credentials,
        *,
        wait: float,
        disconnected: Disconnected,
        gone: Gone = never_gone,
    ) -> Message | None:
        name = credentials.username
        now = self.clock()
        inbox = self._open(credentials, now)
        inbox.touched = now  # a read starting counts as a read
        self._inboxes.move_to_end(name)
        if inbox.socket is not None:
            inbox.socket.end(Superseded)  # newest reader wins; its messages are back in front
        if not inbox.queue and wait > 0 and not self._closed:
            reader = ParkedReader()
            if inbox.reader is not None:
                inbox.reader.wake(SUPERSEDED)  # newest reader wins
            inbox.reader = reader
            self._waiting += 1
            try:
                with reader.parked(wait, disconnected):
                    await reader.woken()
            except BaseException:  # cancelled: a message handed to it stays first, and counts
                if inbox.handed_to is reader:
                    inbox.handed_to = None
                raise
            finally:
                self._waiting -= 1
                if inbox.reader is reader:
                    inbox.reader = None
                self._touch(name, inbox)
            if reader.woke() != MAIL or inbox.handed_to is not reader or gone():
                # Nothing came, a newer GET read first, or its client left. A message
                # handed to it stays first in the queue, and counts again.
                if inbox.handed_to is reader:
                    inbox.handed_to = None
                return None
        inbox.handed_to = None  # whoever reads now has the handed message in front of it
        # Nothing is taken for a client already gone, woken or not (it may have left
        # before its GET was even served).
        queue = inbox.queue
        if queue and not gone() and self._inboxes.get(name) is inbox:
            message = queue.pop(0)
            if not queue:
                inbox.queue = NO_MESSAGES
            self._queued -= 1
            self._queued_bytes -= message_size(message)
            return message
        return None

    async def requeue(self, recipient: str, message: Message) -> None:
        inbox = self._inboxes.get(recipient)
        if inbox is not None:
            # Over any limit: a message accepted is never lost.
            if inbox.queue:
                inbox.queue.insert(0, message)
            else:
                inbox.queue = [message]
            self._queued += 1
            self._queued_bytes += message_size(message)
            if inbox.reader is not None:
                reader, inbox.reader = inbox.reader, None
                inbox.handed_to = reader
                reader.wake(MAIL)

    async def attach(self, credentials: Credentials, *, window: int = SOCKET_WINDOW) -> MemorySocket:
        name = credentials.username
        now = self.clock()
        inbox = self._open(credentials, now)
        inbox.touched = now
        self._inboxes.move_to_end(name)
        # The newest reader wins: an older socket ends, a waiting GET is answered, and a
        # GET woken but not yet served finds its message no longer handed to it.
        if inbox.socket is not None:
            inbox.socket.end(Superseded)
        if inbox.reader is not None:
            inbox.reader.wake(SUPERSEDED)
            inbox.reader = None
        inbox.handed_to = None
        if not inbox.generation:
            # Random, not counted: an inbox created anew after a restart must not
            # repeat the generation (and ids) a client saw before it.
            inbox.generation = secrets.randbits(52) | 1
        socket = inbox.socket = MemorySocket(self, name, inbox, window)
        self._waiting += 1
        if self._closed:
            socket.end(ShuttingDown)
        return socket

    async def run(self) -> None:
        while True:
            await anyio.sleep(self.cleanup_interval)
            await self.expire_all()

    async def expire_all(self) -> None:
        """One expiry pass, in batches so a mass expiry never stalls other requests."""
        while self.expire(limit=EXPIRY_BATCH) == EXPIRY_BATCH:
            await anyio.lowlevel.checkpoint()
        self._shrink()

    def _shrink(self) -> None:
        """Give back the table of a dict that emptied: Python dicts never shrink by deleting."""
        size = len(self._inboxes)
        if self._high_water > 4 * max(size, SHRINK_BELOW) and size <= SHRINK_MAX_COPY:
            self._inboxes = OrderedDict(self._inboxes)
            self._high_water = size

    def shutdown(self) -> None:
        self._closed = True
        # Once, at the end: a pass over all is fine (over a copy: a socket ending counts as a read).
        for inbox in tuple(self._inboxes.values()):
            if inbox.reader is not None:
                inbox.reader.wake(CLOSED)
            if inbox.socket is not None:
                inbox.socket.end(ShuttingDown)

    async def stats(self) -> MailboxStats:
        return MailboxStats(
            len(self._inboxes), self._waiting, self._queued, self._expired, self._queued_bytes
        )

    async def aclose(self) -> None:
        self.shutdown()

    # -- internals ---------------------------------------------------------------

    def expire(self, limit: int | None = None) -> int:
        """Delete inboxes unread for inbox_timeout; returns how many went."""
        now = self.clock()
        cutoff = now - self.inbox_timeout
        inboxes = self._inboxes
        expired = 0
        while inboxes and (limit is None or expired < limit):
            name, inbox = next(iter(inboxes.items()))
            if inbox.touched > cutoff:
                break
            if inbox.reader is not None or inbox.handed_to is not None or inbox.socket is not None:
                # Being read right now (or a woken reader about to take its message)
                # counts as a read: it goes to the back.
                inbox.touched = now
                inboxes.move_to_end(name)
                continue
            del inboxes[name]
            self._forget(inbox)
            expired += 1
        self._expired += expired
        return expired

    def _lookup(self, name: str, now: float) -> Inbox | None:
        inbox = self._inboxes.get(name)
        if (
            inbox is not None
            and inbox.reader is None
            and inbox.handed_to is None
            and inbox.touched <= now - self.inbox_timeout
            and inbox.socket is None
        ):
            # Expired but not yet swept: behave exactly as if the sweep had run.
            del self._inboxes[name]
            self._forget(inbox)
            self._expired += 1
            return None
        return inbox

    def _forget(self, inbox: Inbox) -> None:
        """Uncount a deleted inbox and its messages."""
        if inbox.quota is not None:
            self._quotas.release(inbox.quota)
        if inbox.queue:
            self._queued -= len(inbox.queue)
            self._queued_bytes -= sum(map(message_size, inbox.queue))

    def _open(self, credentials: Credentials, now: float) -> Inbox:
        inbox = self._lookup(credentials.username, now)
        if inbox is None:
            # Expired inboxes not yet swept may hold the places: an expiry step first.
            network = credentials.network
            if not self._quotas.admits(network) and (
                self.expire(limit=EXPIRY_BATCH) == 0 or not self._quotas.admits(network)
            ):
                raise TooManyInboxesFromClient
            if len(self._inboxes) >= self.max_inboxes and (
                self.expire(limit=EXPIRY_BATCH) == 0 or len(self._inboxes) >= self.max_inboxes
            ):
                raise TooManyInboxes
            inbox = Inbox(PasswordDigest.of(credentials.password), now, self._quotas.take(network))
            self._inboxes[credentials.username] = inbox
            self._high_water = max(self._high_water, len(self._inboxes))
        elif not inbox.password.matches(credentials.password):
            raise WrongPassword
        return inbox

    def _touch(self, name: str, inbox: Inbox) -> None:
        if self._inboxes.get(name) is inbox:
            inbox.touched = self.clock()
            self._inboxes.move_to_end(name)


class MemorySocket:
    """An open WebSocket as the reader of one in-memory inbox (see `interface.InboxSocket`).

    It waits for mail the way a GET does, as the inbox's ParkedReader, so
    `send` hands it messages on the long poll's own path; only its window is
    its own. With the window full it is not the inbox's waiting reader, so
    further messages queue against capacity as for any reader that is busy.
    """

    __slots__ = (
        "_ended",
        "_left",
        "_mailbox",
        "_parked",
        "generation",
        "in_flight",
        "inbox",
        "name",
        "window",
    )

    def __init__(self, mailbox: MemoryMailbox, name: str, inbox: Inbox, window: int) -> None:
        self._mailbox = mailbox
        self.name = name
        self.inbox = inbox
        self.generation = inbox.generation
        self.window = window
        #: Taken, in order, and not acknowledged.
        self.in_flight: list[Message] = []
        self._parked = ParkedReader()
        #: Why it stopped reading, once it has.
        self._ended: type[ReaderEnded] | None = None
        #: What the parked wait watches for its client leaving: the endpoint cancels
        #: the wait instead, so this never completes.
        self._left: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def take(self) -> list[Message]:
        mailbox, inbox, parked = self._mailbox, self.inbox, self._parked
        while self._ended is None:
            room = self.window - len(self.in_flight)
            queue = inbox.queue
            if room > 0 and queue:
                inbox.handed_to = None  # whoever reads now has the handed message in front
                batch = queue[:room]
                if len(batch) == len(queue):
                    inbox.queue = NO_MESSAGES
                else:
                    del queue[:room]  # not empty: a list
                # Its bytes stay counted against max_queued_bytes until acknowledged: a
                # client that never acks must not hold window x max-body-size uncounted.
                mailbox._queued -= len(batch)
                self.in_flight += batch
                return list(batch)
            if room > 0:
                inbox.reader = parked  # `send` and `requeue` wake it as they wake a GET
            try:
                with parked.parked(SOCKET_PARK, self._closed_future):
                    await parked.woken()
            finally:
                if inbox.reader is parked:
                    inbox.reader = None
            parked.woke()  # mail, an ack, or an end: the loop looks again
        raise self._ended

    async def ack(self, upto: int) -> None:
        in_flight = self.in_flight
        done = 0
        for message in in_flight:
            if message.id > upto:
                break
            done += 1
        if done:
            was_full = len(in_flight) >= self.window
            self._mailbox._queued_bytes -= sum(map(message_size, in_flight[:done]))
            del in_flight[:done]
            if was_full:
                self._parked.wake(MAIL)  # room again: take() looks at the queue

    async def close(self) -> None:
        self.end(ReaderEnded)

    def end(self, why: type[ReaderEnded]) -> None:
        """Stop reading the inbox now: what is unacknowledged goes back to the front, in order."""
        if self._ended is not None:
            return
        self._ended = why
        mailbox, inbox, parked = self._mailbox, self.inbox, self._parked
        mailbox._waiting -= 1
        if inbox.socket is self:
            inbox.socket = None
        if inbox.reader is parked:
            inbox.reader = None
        if inbox.handed_to is parked:
            inbox.handed_to = None  # a message handed to it stays first, and counts again
        in_flight, self.in_flight = self.in_flight, []
        if in_flight and mailbox._inboxes.get(self.name) is inbox:
            # Over any limit: a message accepted is never lost. Merged by id: a GET whose
            # answer failed may have put an older message back while this socket held newer ones.
            inbox.queue = list(heapq.merge(in_flight, inbox.queue, key=_message_id))
            mailbox._queued += len(in_flight)  # their bytes were never uncounted
        elif in_flight:
            mailbox._queued_bytes -= sum(map(message_size, in_flight))  # the inbox is gone
        mailbox._touch(self.name, inbox)  # a reader leaving counts as a read
        parked.wake(CLOSED)

    def _closed_future(self) -> asyncio.Future[None]:
        return self._left


def _message_id(message: Message) -> int:
    return message.id
