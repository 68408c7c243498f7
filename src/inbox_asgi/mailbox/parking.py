"""A parked long poll, the same in both backends: a wake-up, a deadline, the client's disconnect.

A GET with nothing to read parks as a ParkedReader until one of these wakes
it: a message may be there (MAIL), a newer GET took over (SUPERSEDED), its
client left (LEFT), the mailbox shuts down (CLOSED), or its deadline passed.
Whoever wakes it says why with `wake(reason)`; the reader's task then acts on
the strongest reason given (a weaker one arriving later never hides a
stronger). A backend parks a reader with::

    with reader.parked(timeout, disconnected):  # seconds
        await reader.woken()
    why = reader.woke()

Two ways to wait, chosen by what `disconnected()` gives:

- Under inbox-asgi's own server it gives the connection's closed-future. Then
  the wait is one asyncio future, the deadline one `loop.call_later` timer and the
  disconnect a done-callback: nothing else per parked reader, and a wake-up is
  a `set_result`. This is the path every long poll takes in production; it
  replaced an anyio Event plus an anyio cancel scope per wait, whose setup,
  deadline and teardown cost more than the rest of a wake-up
  (docs/performance.md, the ping-pong profile).
- Under other servers, which tell of a disconnect only through an awaitable
  (ASGI `receive`), the reader awaits that itself inside an anyio cancel scope
  that `wake` cancels (racing it with the wake-up in a second task cost +6 KiB
  per waiting reader under plain uvicorn).

The wait runs in the caller's frame, not in a coroutine of its own: a frame
less per parked reader, which with the rest keeps a waiting reader under 12 KiB.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Awaitable
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel

from inbox_asgi.mailbox.interface import Disconnected

#: Why a reader woke, weakest first. WAITING: not woken (its deadline passed).
WAITING, MAIL, SUPERSEDED, LEFT, CLOSED = range(5)

#: The context the callbacks run in: they read no context variable, and the loop
#: would otherwise copy the request's context for every timer and done-callback.
_NO_CONTEXT = contextvars.Context()


def _release(waiter: asyncio.Future[None]) -> None:
    """The deadline's timer: end the wait without a reason (WAITING: the deadline passed)."""
    if not waiter.done():
        waiter.set_result(None)


class ParkedReader:
    """One GET waiting for something to read; `wake` ends its wait at once."""

    __slots__ = ("_closed", "_scope", "_timer", "_waiter", "reason")

    def __init__(self) -> None:
        #: While parked: what tells that the client left (a future, or an awaitable).
        self._closed: Awaitable[object] | None = None
        #: While parked on a closed-future: the wait itself, and its deadline.
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: While parked on any other awaitable: the scope `wake` cancels.
        self._scope: anyio.CancelScope | None = None
        self.reason = WAITING

    def wake(self, reason: int) -> None:
        if reason > self.reason:
            self.reason = reason
        waiter = self._waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
        elif self._scope is not None:
            self._scope.cancel()  # parked on the client's disconnect itself: see woken()
        # Not parked: `reason` is kept, and the next wait returns at once.

    def parked(self, timeout: float, disconnected: Disconnected) -> ParkedReader:
        """Arm a wait of at most `timeout` seconds, ended early if the client leaves.

        Relative, not a deadline: the closed-future's loop is at hand, where asking for
        the running loop's clock costs a getpid() per call on Python 3.11.
        """
        closed = self._closed = disconnected()
        if isinstance(closed, asyncio.Future):
            loop = closed.get_loop()
            waiter = self._waiter = loop.create_future()
            if self.reason != WAITING or closed.done():
                waiter.set_result(None)  # woken before it parked, or the client already left
            else:
                self._timer = loop.call_later(timeout, _release, waiter, context=_NO_CONTEXT)
        else:
            self._scope = anyio.move_on_after(timeout)
        return self

    def __enter__(self) -> None:
        closed = self._closed
        if isinstance(closed, asyncio.Future):
            # The reader itself is the callback (see __call__): a bound method would
            # be one more object per parked reader. (A closed-future already done was
            # seen in parked(): its callback would only run after this wait.)
            if not closed.done():
                closed.add_done_callback(self, context=_NO_CONTEXT)
            return
        assert self._scope is not None, "parked() first"
        self._scope.__enter__()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> bool:
        closed, scope, timer = self._closed, self._scope, self._timer
        self._closed = self._scope = self._timer = self._waiter = None
        if isinstance(closed, asyncio.Future):
            closed.remove_done_callback(self)
            if closed.done() and kind is None and self.reason == WAITING:
                self.reason = LEFT  # it had left before the reader parked
            if timer is not None:
                timer.cancel()
            return False  # an outside cancellation goes on; the deadline raised nothing
        if kind is None and self.reason == WAITING:
            self.reason = LEFT  # it awaited the disconnect itself, and that came
        elif inspect.iscoroutine(closed):
            closed.close()  # never awaited if the caller did not get to wait
        assert scope is not None
        return bool(scope.__exit__(kind, error, trace))  # True: its deadline passed

    def woken(self) -> Awaitable[object]:
        """The wait itself: the future, or under other servers the client's disconnect."""
        if self._waiter is not None:
            return self._waiter
        closed = self._closed
        if closed is None or self.reason != WAITING:
            return anyio.lowlevel.checkpoint()  # woken before it parked: no wait
        return closed

    def woke(self) -> int:
        """Why the last wait ended (WAITING: its deadline passed); re-armed for another wait."""
        reason, self.reason = self.reason, WAITING
        return reason

    def __call__(self, closed: asyncio.Future[Any]) -> None:
        """The client's connection closed (the done-callback of its closed-future)."""
        self.wake(LEFT)
