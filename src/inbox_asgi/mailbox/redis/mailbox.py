"""The scale-out backend: inboxes in Redis, shared by every worker and host.

Same rules as the in-memory backend, across processes:

- every multi-key update is one Lua script (`redis_scripts`); the keys of one
  inbox share a hash tag (the username, base64url-encoded, so `{`, `}` and `:`
  in names are harmless) and therefore one Redis Cluster slot;
- inboxes expire through Redis TTLs; while a reader waits, `run()` refreshes
  the TTL of its inbox, so an inbox with a waiting reader is never deleted;
- waiting readers hold no Redis connection: a reader registers its token in
  the inbox, and scripts publish wake-ups where its process listens (one
  channel per process on one Redis; on a Cluster, the inbox's shard channel:
  `subscriptions`);
- every command goes through `store.Store`: one auto-pipelined connection per
  Redis node (a Cluster's commands routed by slot), so a request costs one
  script and the commands of concurrent requests share writes; a POST's
  sender check needs no Redis at all while this process knows the sender's
  inbox lives (`_known`: its digest and a lower bound of its expiry);
- a woken reader takes a message with CLAIM, which checks it is still the
  inbox's reader: nothing is popped for a reader that is gone or superseded;
- a message taken (by ENTER or CLAIM) stays held for its GET until this
  process, back from Redis, has checked that the client is still connected:
  if it left while Redis answered, SETTLE puts the message back at the front;
  otherwise it is handed to the endpoint and the hold is settled in the
  background. No other GET takes a message while one is held, so a message
  put back is still the oldest (see `redis_scripts`);
- `max-inboxes` counts the entries of a global index (a sorted set scored by
  expiry time, pruned as entries expire — never a scan), and
  `max-inboxes-per-ip` those of one such index per client network, in a slot
  of its own, so the limit holds across every process; a new inbox takes its
  place in its network's index first, then in the global one (the other way
  round, a client over its limit would leave places taken in the global index);
- an open WebSocket (`attach`, `RedisSocket`) is its inbox's reader like a
  waiting GET (same token, wake-ups, TTL refresh, superseding across
  processes), but reads without taking: the messages it was sent stay at the
  front of the queue, counted as in flight, until its client acknowledges
  them; so a socket whose process dies loses nothing, and whoever reads the
  inbox next (a newer GET or socket, on any process) gets them first, in order
  (see `redis_scripts`: TAKE, ACK, RELEASE). Message ids are a counter per
  inbox, stored with each message;
- Redis errors become `BackendUnavailable` (503) within the socket timeout;
  on a Cluster only for the requests whose inboxes live on the failing node;
  a lost subscription is re-established, and every local reader it served
  then re-checks its inbox, so no wake-up is lost while the connection was down;
- queued bytes are bounded by Redis's own `maxmemory` (policy `noeviction`),
  not by -max-queued-bytes: the messages live in Redis, and a global byte
  counter would be a key outside the inbox's hash tag that every SEND updates,
  which Redis Cluster refuses within one script (and a hot key for every
  process). Over maxmemory Redis refuses the push of a message that would wait
  in a queue: that is `StoreFull` (503 + Retry-After), as in memory mode, while
  hand-offs to a waiting reader, put-backs, reads and expiry go on, so queues
  drain (`scripts.over_maxmemory_too`). `connection.check_connection` warns at
  start-up when Redis has no maxmemory or evicts keys (evicting would lose
  accepted messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import anyio
import anyio.lowlevel
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError

from inbox_asgi.config import ConfigError, Settings
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
from inbox_asgi.mailbox.redis.codec import (
    decode_message,
    encode_message,
    inbox_keys,
    index_key,
    network_key,
    wake_channel,
)
from inbox_asgi.mailbox.redis.connection import connect
from inbox_asgi.mailbox.redis.scripts import (
    ACK,
    CLAIM,
    COUNT,
    ENTER,
    HOLD_MS,
    LEAVE,
    REFRESH,
    RELEASE,
    REQUEUE,
    RESERVE,
    SEND,
    SETTLE,
    TAKE,
    TOUCH,
    Call,
)
from inbox_asgi.mailbox.redis.store import SOCKET_TIMEOUT, Command, Store
from inbox_asgi.mailbox.redis.subscriptions import Subscriptions

logger = logging.getLogger("inbox_asgi.redis")

#: Most password salts remembered (saves a round trip per request for known inboxes).
SALT_CACHE_SIZE = 65536
#: Most inboxes known to live (see `_known`).
KNOWN_SIZE = 65536
#: Waiting readers refreshed per pipeline.
REFRESH_BATCH = 500
#: Seconds between attempts to settle holds on a node that is down.
SETTLE_RETRY = 0.2
#: Longest a GET without long polling waits behind a message held for an earlier
#: GET (settled within milliseconds unless that GET's process died).
HELD_WAIT = 1.0

#: How long an open socket's wait lasts before it looks again (only a bound on one timer).
SOCKET_PARK = 3600.0
#: Seconds before an open socket tries again to read while Redis fails.
SOCKET_RETRY = 0.5

#: What `_run` raises: Redis is unreachable or failing, or out of memory.
StoreError = (BackendUnavailable, StoreFull)

#: (inbox name, index score to record or 0, key of its per-network index or b"").
IndexEntry = tuple[str, int, bytes]


class Waiter(ParkedReader):
    """One GET parked in this process, and where it waits in Redis.

    Woken with MAIL it claims a message (which may be gone by then: it parks
    again); SUPERSEDED, LEFT and CLOSED end its wait.
    """

    __slots__ = ("active", "keys", "name", "refreshed", "token")

    def __init__(self, token: bytes, name: str, keys: tuple[bytes, bytes]) -> None:
        super().__init__()
        self.token = token
        self.name = name
        self.keys = keys
        self.active = False  # registered as the inbox's reader in Redis
        self.refreshed = 0.0


class RedisMailbox:
    def __init__(
        self,
        store: Store,
        *,
        inbox_timeout: float,
        inbox_capacity: int,
        max_inboxes: int,
        cleanup_interval: float = 1.0,
        max_inboxes_per_ip: int = 0,
        prefix: str = "inbox",
    ) -> None:
        self.store = store
        self.inbox_capacity = inbox_capacity
        self.max_inboxes = max_inboxes
        #: 0: no limit.
        self.max_inboxes_per_ip = max_inboxes_per_ip
        self.prefix = prefix
        self.ttl_ms = max(1, round(inbox_timeout * 1000))
        # A waiting reader's inbox TTL is renewed at least three times per timeout.
        self.refresh_every = min(cleanup_interval, inbox_timeout / 3)
        self.subscriptions = Subscriptions(store, prefix, self._dispatch, self._recheck)
        self._index = index_key(prefix)
        self._tokens = itertools.count(1)
        self._waiters: dict[bytes, Waiter] = {}
        self._active = 0
        self._salts: dict[str, bytes] = {}
        #: name -> (password digest, monotonic time before which the inbox surely lives,
        #: the store's connection generation then): opening it needs no Redis.
        self._known: dict[str, tuple[PasswordDigest, float, int]] = {}
        self._closed = False
        self._inboxes = 0
        self._last_outage_log = -1e9
        # Holds of delivered messages, settled in the background (see _settle_loop).
        #: (SETTLE call, monotonic time after which its hold has lapsed anyway)
        self._to_settle: list[tuple[Call, float]] = []
        self._settle_due = anyio.Event()
        self._settling = False

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisMailbox:
        assert settings.redis_url
        try:
            client = connect(settings.redis_url)
        except ValueError as error:
            raise ConfigError(f"-redis-url: {error}") from None
        return cls(
            client,
            inbox_timeout=settings.inbox_timeout,
            inbox_capacity=settings.inbox_capacity,
            max_inboxes=settings.max_inboxes,
            cleanup_interval=settings.cleanup_interval,
            max_inboxes_per_ip=settings.max_inboxes_per_ip,
        )

    @property
    def subscribed(self) -> bool:
        """Whether this process currently hears wake-ups (for tests and health checks)."""
        return self.subscriptions.subscribed

    @property
    def channel(self) -> bytes:
        """This process's wake-up channel (one Redis server)."""
        return self.subscriptions.channel

    # -- the Mailbox interface -------------------------------------------------

    async def open(self, credentials: Credentials) -> None:
        known = self._known.get(credentials.username)
        if (
            known is not None
            and known[2] == self.store.generation
            and time.monotonic() < known[1]
            and known[0].matches(credentials.password)
        ):
            return  # it lives, with this password: nothing to ask Redis
        await self._enter(credentials, b"open", b"")

    async def send(self, sender: str, recipient: str, message: Message) -> None:
        keys = inbox_keys(recipient, self.prefix)
        call: Call = (SEND, keys, (encode_message(message), self.inbox_capacity))
        reply = (await self._run([call]))[0]
        if reply == b"missing":
            raise NoSuchInbox
        if reply == b"full":
            raise InboxFull

    async def receive(
        self,
        credentials: Credentials,
        *,
        wait: float,
        disconnected: Disconnected,
        gone: Gone = never_gone,
    ) -> Message | None:
        name = credentials.username
        long_poll = wait > 0 and not self._closed
        waiter = await self._registered_waiter(name)
        channel = b""
        try:
            reply = await self._enter(credentials, b"wait" if long_poll else b"read", waiter.token)
            if reply[0] != b"waiting":
                return await self._hand_over(waiter.keys, waiter.token, reply, gone)
            waiter.active = True
            waiter.refreshed = anyio.current_time()
            self._active += 1
            if self.subscriptions.sharded:
                channel = wake_channel(waiter.keys[0])
                self.subscriptions.watch(channel, waiter.token)
            # Without long polling a GET waits only for a message held for an earlier GET.
            wait = wait if long_poll else HELD_WAIT
            return await self._wait(waiter, wait, disconnected, client_gone=gone)
        finally:
            del self._waiters[waiter.token]
            if waiter.active:
                self._active -= 1
            if channel:
                self.subscriptions.unwatch(channel, waiter.token)

    async def requeue(self, recipient: str, message: Message) -> None:
        call: Call = (REQUEUE, inbox_keys(recipient, self.prefix), (encode_message(message),))
        try:
            with anyio.CancelScope(shield=True):
                await self._run([call])
        except StoreError:
            logger.error("could not put back a message for %r: Redis unavailable", recipient)

    async def attach(self, credentials: Credentials, *, window: int = SOCKET_WINDOW) -> RedisSocket:
        """Open (or create) the inbox with an open socket as its reader, on whichever process.

        ENTER in "socket" mode: an older reader (a GET or a socket, anywhere) is
        woken superseded and a socket's unacknowledged messages are queued again.
        """
        name = credentials.username
        waiter = await self._registered_waiter(name)
        token = waiter.token
        try:
            # Random, not counted: an inbox created anew must not repeat the generation
            # (and ids) a client saw before.
            reply = await self._enter(credentials, b"socket", token, secrets.randbits(52) | 1)
        except BaseException:
            del self._waiters[token]
            raise
        waiter.active = True
        waiter.refreshed = anyio.current_time()
        self._active += 1
        channel = b""
        if self.subscriptions.sharded:
            channel = wake_channel(waiter.keys[0])
            self.subscriptions.watch(channel, token)
        socket = RedisSocket(self, waiter, int(reply[2]), window, channel)
        if self._closed:
            waiter.wake(CLOSED)
        return socket

    async def run(self) -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.subscriptions.run)
            tasks.start_soon(self._refresh_loop)
            tasks.start_soon(self._settle_loop)

    def shutdown(self) -> None:
        self._closed = True
        for waiter in list(self._waiters.values()):
            waiter.wake(CLOSED)

    async def stats(self) -> MailboxStats:
        """Inboxes across all processes; waiting readers of this process.

        Queued messages are not counted in Redis mode (that would need a
        global counter updated on every message) and read as 0.
        """
        with contextlib.suppress(*StoreError):
            self._inboxes = int((await self._run([(COUNT, (self._index,), ())]))[0])
        return MailboxStats(self._inboxes, self._active, 0)

    async def aclose(self) -> None:
        self.shutdown()
        await self._flush_settles(
            retry=False
        )  # the last requests' deliveries: unsettled, they would come again
        await self.store.aclose()

    # -- reading -----------------------------------------------------------------

    async def _registered_waiter(self, name: str) -> Waiter:
        """A new reader of inbox `name`, registered before its script runs so no wake-up is unheard."""
        if self.store.cluster is None:  # the token's form depends on the mode
            try:
                await self.store.ready()
            except RedisError as error:
                await self._failed(error)
        token = self.subscriptions.token_prefix() + b"%d" % next(self._tokens)
        waiter = Waiter(token, name, inbox_keys(name, self.prefix))
        self._waiters[token] = waiter
        return waiter

    async def _enter(
        self, credentials: Credentials, mode: bytes, token: bytes, inbox_generation: int = 0
    ) -> list[Any]:
        """Run ENTER: check or create the inbox, then (mode) read or register a reader."""
        name, password = credentials.username, credentials.password
        keys = inbox_keys(name, self.prefix)
        create, score, net = b"", 0, b""
        for _ in range(4):
            salt = self._salts.get(name)
            expected = PasswordDigest.of(password, salt).to_bytes() if salt is not None else b""
            args: tuple[bytes | int, ...] = (expected, create, self.ttl_ms, mode, score, token, net)
            call: Call = (ENTER, keys, (*args, inbox_generation) if inbox_generation else args)
            generation, started = self.store.generation, time.monotonic()
            reply = await self._taking(name, token, call)
            status = reply[0]
            if status == b"ok" and len(reply) > 2:
                # The inbox lives at least its TTL from when the script ran, which was after `started`.
                until = started + reply[2] / 1000 * 0.99
                self._know(name, PasswordDigest(create or expected), until, generation)
            if status == b"password":
                stored = PasswordDigest.from_bytes(reply[1])
                if not stored.matches(password):
                    raise WrongPassword
                self._remember(name, stored.salt)
            elif status == b"missing":
                score, net = await self._reserve(name, credentials.network)
                digest = PasswordDigest.of(password)
                create = digest.to_bytes()
                self._remember(name, digest.salt)
            else:
                return reply
        raise BackendUnavailable("inbox changed under this request, retry")

    async def _wait(
        self, waiter: Waiter, wait: float, disconnected: Disconnected, client_gone: Gone
    ) -> Message | None:
        deadline = anyio.current_time() + wait
        try:
            while not self._closed:
                with waiter.parked(max(0.0, deadline - anyio.current_time()), disconnected):
                    await waiter.woken()  # at once if it was woken meanwhile
                if waiter.woke() != MAIL or self._closed or client_gone():
                    break  # timed out, superseded, shutting down, or the client left
                call: Call = (CLAIM, waiter.keys, (waiter.token, self.ttl_ms))
                reply = await self._taking(waiter.name, waiter.token, call)
                if reply[0] == b"message":
                    message = await self._hand_over(waiter.keys, waiter.token, reply, client_gone)
                    if message is not None:
                        return message
                    break
                if reply[0] == b"superseded":
                    break
        except StoreError:
            pass  # the wait ends with 204; the client polls again (and gets 503 until Redis is back)
        except BaseException:
            with anyio.move_on_after(SOCKET_TIMEOUT, shield=True):
                await self._leave(waiter)
            raise
        await self._leave(waiter)
        return None

    async def _leave(self, waiter: Waiter) -> None:
        """Best effort: if it fails, the next GET or sender finds a stale token, which is harmless."""
        with contextlib.suppress(*StoreError):
            reply = (await self._run([(LEAVE, waiter.keys, (waiter.token, self.ttl_ms))]))[0]
            await self._record([_index_entry(waiter.name, reply)])

    async def _taking(self, name: str, token: bytes, call: Call) -> list[Any]:
        """Run a script that may take a message for `token` (reply: status, index score, message, net).

        Shielded, so a cancellation never drops a taken message: it goes back.
        """
        with anyio.CancelScope(shield=True):
            reply: list[Any] = (await self._run([call]))[0]
            await self._record([_index_entry(name, reply)])
        if reply[0] == b"message":
            try:
                await anyio.lowlevel.checkpoint_if_cancelled()
            except BaseException:
                await self._settle(call[1], token, b"back")
                raise
        return reply

    async def _hand_over(
        self, keys: Sequence[bytes], token: bytes, reply: list[Any], gone: Gone
    ) -> Message | None:
        """The message a script took for this GET, if its client is still there to get it.

        The round trip to Redis takes time, and a client can leave meanwhile
        (uvicorn then drops what is written to it, silently): such a message
        goes back to the front of the queue — it is still held, so no other GET
        has taken a later one. Otherwise it is delivered: the endpoint writes
        it right after this returns, without waiting in between, and the hold
        is settled in the background.
        """
        if reply[0] != b"message":
            return None
        if gone():
            await self._settle(keys, token, b"back")
            return None
        message = decode_message(reply[2])
        if self._settling:
            self._to_settle.append(((SETTLE, keys, (token, b"keep")), time.monotonic() + HOLD_MS / 1000))
            self._settle_due.set()
        else:  # run() is not running (not started, or stopping): settle before answering
            await self._settle(keys, token, b"keep")
        return message

    async def _settle(self, keys: Sequence[bytes], token: bytes, outcome: bytes) -> None:
        """SETTLE one hold now: `keep` (delivered) or `back` (to the front of the queue)."""
        try:
            with anyio.CancelScope(shield=True):
                await self._run([(SETTLE, keys, (token, outcome))])
        except StoreError:
            logger.error("could not settle a held message: Redis unavailable; it is queued again later")

    async def _record(self, entries: Sequence[IndexEntry]) -> None:
        """Move index entries (global, and per network) to the scores inbox scripts asked for.

        Best effort: if Redis fails right here, that one inbox may drop out of
        the counts early, so max-inboxes (or max-inboxes-per-ip) can be exceeded
        by one per such failure.
        """
        calls: list[Call] = []
        for name, score, net in entries:
            if score:
                calls.append((TOUCH, (self._index,), (name.encode(), score)))
                if net:
                    calls.append((TOUCH, (net,), (name.encode(), score)))
        if calls:
            with contextlib.suppress(*StoreError):
                await self._run(calls)

    async def _reserve(self, name: str, network: str) -> tuple[int, bytes]:
        """Places for a new inbox in its network's index, then the global one: (index score, net key)."""
        net = b""
        if self.max_inboxes_per_ip and network:
            net = network_key(network, self.prefix)
            call: Call = (RESERVE, (net,), (name.encode(), self.max_inboxes_per_ip, self.ttl_ms))
            if not int((await self._run([call]))[0]):
                raise TooManyInboxesFromClient
        call = (RESERVE, (self._index,), (name.encode(), self.max_inboxes, self.ttl_ms))
        score = int((await self._run([call]))[0])
        if not score:
            raise TooManyInboxes
        return score, net

    def _know(self, name: str, digest: PasswordDigest, until: float, generation: int) -> None:
        known = self._known
        if name not in known and len(known) >= KNOWN_SIZE:
            del known[next(iter(known))]
        known[name] = (digest, until, generation)

    def _remember(self, name: str, salt: bytes) -> None:
        salts = self._salts
        if name not in salts and len(salts) >= SALT_CACHE_SIZE:
            del salts[next(iter(salts))]
        salts[name] = salt

    # -- background work ------------------------------------------------------------

    def _dispatch(self, data: bytes) -> None:
        waiter = self._waiters.get(data[1:])
        if waiter is not None:
            waiter.wake(SUPERSEDED if data[:1] == b"S" else MAIL)

    def _recheck(self, tokens: Iterable[bytes] | None) -> None:
        """Wake-ups may have been missed (a subscription just came up): these readers look again."""
        waiters = self._waiters
        for waiter in list(waiters.values()) if tokens is None else filter(None, map(waiters.get, tokens)):
            waiter.wake(MAIL)

    async def _settle_loop(self) -> None:
        """Settle the holds of delivered messages, many per round trip, after their answers went out."""
        self._settling = True
        try:
            while True:
                await self._settle_due.wait()
                self._settle_due = anyio.Event()
                if await self._flush_settles(retry=True):
                    await anyio.sleep(SETTLE_RETRY)  # some node is down: try its settles again soon
                    self._settle_due.set()
        finally:
            self._settling = False

    async def _flush_settles(self, retry: bool) -> bool:
        """Run the pending settles; with `retry`, keep those whose node failed (True if any).

        A settle is idempotent (it acts only on its own token's hold), so one
        that failed is sent again until its hold would have lapsed anyway: a
        node that comes back within HOLD_MS then does not deliver the message
        a second time.
        """
        pending, self._to_settle = self._to_settle, []
        failed: list[tuple[Call, float]] = []
        for start in range(0, len(pending), REFRESH_BATCH):
            batch = pending[start : start + REFRESH_BATCH]
            with anyio.CancelScope(shield=True):
                results = await self.store.execute([_command(call) for call, _ in batch])
            failed += [
                entry for entry, result in zip(batch, results, strict=True) if isinstance(result, Exception)
            ]
            lapsed = results.count(0)
            if lapsed:
                logger.warning("%d delivered message(s) had been queued again (held too long)", lapsed)
        now = time.monotonic()
        kept = [entry for entry in failed if retry and entry[1] > now]
        if len(kept) < len(failed):
            logger.error(
                "could not settle %d delivered message(s): Redis unavailable; "
                "they are queued again (and delivered twice) when their holds lapse",
                len(failed) - len(kept),
            )
        self._to_settle[:0] = kept
        return bool(kept)

    async def _refresh_loop(self) -> None:
        while True:
            await anyio.sleep(self.refresh_every)
            await self.refresh_waiting()
            self.subscriptions.sweep()

    async def refresh_waiting(self) -> None:
        """Renew the TTL of inboxes whose reader waits here; wake readers that missed something."""
        now = anyio.current_time()
        due = [w for w in self._waiters.values() if w.active and now - w.refreshed >= self.refresh_every]
        for start in range(0, len(due), REFRESH_BATCH):
            batch = due[start : start + REFRESH_BATCH]
            calls: list[Call] = [(REFRESH, w.keys, (w.token, self.ttl_ms)) for w in batch]
            try:
                results = await self._run(calls)
            except StoreError:
                return
            await self._record([_index_entry(w.name, reply) for w, reply in zip(batch, results, strict=True)])
            for waiter, (status, *_) in zip(batch, results, strict=True):
                waiter.refreshed = now
                if status == b"superseded":
                    waiter.wake(SUPERSEDED)
                elif status == b"message":
                    waiter.wake(MAIL)

    # -- talking to Redis ---------------------------------------------------------------

    async def _run(self, calls: Sequence[Call]) -> list[Any]:
        """Run scripts, many per write (on a Cluster, each on its inbox's node).

        Redis errors → BackendUnavailable (503); Redis out of memory → StoreFull (503).
        """
        results = await self.store.execute([_command(call) for call in calls])
        for result in results:
            if isinstance(result, Exception):
                await self._failed(result)
        return results

    async def _failed(self, error: BaseException) -> NoReturn:
        if _out_of_memory(error):
            self._warn(f"Redis is out of memory (maxmemory), answering 503 to new messages: {error}")
            raise StoreFull from None
        self._warn(f"Redis unavailable, answering 503: {error}")
        raise BackendUnavailable from None

    def _warn(self, text: str) -> None:
        """Log a failure at most every 10 s: during an outage every request would."""
        now = time.monotonic()
        if now - self._last_outage_log > 10:
            self._last_outage_log = now
            logger.warning("%s", text)


class RedisSocket:
    """An open WebSocket as the reader of one Redis inbox (see `interface.InboxSocket`).

    Its Waiter is registered like a waiting GET's, so SEND, SETTLE and the TTL
    refresh wake it and a newer reader anywhere supersedes it. What it takes
    stays at the front of the queue in Redis until ACK, so here it keeps only
    the ids in flight, to count an ack.
    """

    __slots__ = (
        "_channel",
        "_closed",
        "_ended",
        "_left",
        "_mailbox",
        "generation",
        "in_flight",
        "waiter",
        "window",
    )

    def __init__(
        self, mailbox: RedisMailbox, waiter: Waiter, generation: int, window: int, channel: bytes
    ) -> None:
        self._mailbox = mailbox
        self.waiter = waiter
        self.generation = generation
        self.window = window
        self._channel = channel
        #: Ids taken, in order, and not acknowledged.
        self.in_flight: list[int] = []
        self._ended: type[ReaderEnded] | None = None
        self._closed = False
        #: What the parked wait watches for its client leaving: the endpoint cancels
        #: the wait instead, so this never completes.
        self._left: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def take(self) -> list[Message]:
        mailbox, waiter = self._mailbox, self.waiter
        while self._ended is None:
            if mailbox._closed:
                self._ended = ShuttingDown
                break
            room = self.window - len(self.in_flight)
            park = SOCKET_PARK
            if room > 0:
                call: Call = (TAKE, waiter.keys, (waiter.token, room))
                try:
                    reply = (await mailbox._run([call]))[0]
                except StoreError:
                    park = SOCKET_RETRY  # Redis fails: the messages wait there; look again soon
                else:
                    if reply[0] == b"messages":
                        messages = [decode_message(raw) for raw in reply[2]]
                        self.in_flight += [message.id for message in messages]
                        return messages
                    if reply[0] == b"superseded":
                        self._ended = Superseded
                        break
            with waiter.parked(park, self._left_future):
                await waiter.woken()
            why = waiter.woke()
            if why == SUPERSEDED:
                self._ended = Superseded  # the newer reader's ENTER queued our messages again
            elif why == CLOSED or mailbox._closed:
                self._ended = ShuttingDown
        raise self._ended

    async def ack(self, upto: int) -> None:
        in_flight = self.in_flight
        done = 0
        for message_id in in_flight:
            if message_id > upto:
                break
            done += 1
        if done:
            was_full = len(in_flight) >= self.window
            del in_flight[:done]
            waiter = self.waiter
            call: Call = (ACK, waiter.keys, (waiter.token, done))
            with anyio.CancelScope(shield=True):  # Redis and this list must agree on what is in flight
                await self._mailbox._run([call])
            if was_full:
                waiter.wake(MAIL)  # room again: take() looks at the queue

    async def close(self) -> None:
        """Stop reading: RELEASE queues the unacknowledged messages again (they are at the front)."""
        if self._closed:
            return
        self._closed = True
        mailbox, waiter = self._mailbox, self.waiter
        if self._ended is None:
            self._ended = ReaderEnded
        try:
            if self._ended is not Superseded:  # superseded: the newer reader released them
                with anyio.CancelScope(shield=True), contextlib.suppress(*StoreError, RedisError):
                    call: Call = (RELEASE, waiter.keys, (waiter.token, mailbox.ttl_ms))
                    reply = (await mailbox._run([call]))[0]
                    await mailbox._record([_index_entry(waiter.name, reply)])
        finally:
            # If RELEASE failed, the messages still wait at the front: the next reader gets them.
            del mailbox._waiters[waiter.token]
            mailbox._active -= 1
            if self._channel:
                mailbox.subscriptions.unwatch(self._channel, waiter.token)
            waiter.wake(CLOSED)

    def _left_future(self) -> asyncio.Future[None]:
        return self._left


def _command(call: Call) -> Command:
    script, keys, args = call
    return keys[0], (b"EVALSHA", script.sha, len(keys), *keys, *args)


def _out_of_memory(error: BaseException) -> bool:
    """Redis refused a write over maxmemory (Redis 7 names it OOM; 6.2 wraps it in a script error)."""
    if isinstance(error, OutOfMemoryError):
        return True
    return isinstance(error, ResponseError) and "OOM command not allowed" in str(error)


def _index_entry(name: str, reply: Sequence[Any]) -> IndexEntry:
    """What a script reply asks to record: its score is second, its per-network index last."""
    if len(reply) < 3 or not isinstance(reply[1], int) or not reply[1]:
        return name, 0, b""
    return name, reply[1], reply[-1]
