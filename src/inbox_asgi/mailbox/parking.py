"""A parked long poll, the same in both backends: an anyio Event, a deadline, the client's disconnect.

A GET with nothing to read parks as a ParkedReader until one of these wakes
it: a message may be there (MAIL), a newer GET took over (SUPERSEDED), its
client left (LEFT), the mailbox shuts down (CLOSED), or its deadline passed.
Whoever wakes it says why with `wake(reason)`, which sets the Event; the
reader's task then acts on the strongest reason given (a weaker one arriving
later never hides a stronger). A backend parks a reader with::

    with reader.parked(deadline, disconnected):  # anyio.move_on_at(deadline) inside
        await reader.woken()                     # the anyio Event's wait
    why = reader.woke()

Tens of thousands of readers park at once, so one costs as little as it can:
a slotted object, its Event and the cancel scope of its deadline. Watching the
client adds no task: under inbox-asgi's own server the connection's
closed-future wakes the reader through a done-callback; under other servers,
which tell of a disconnect only through an awaitable (ASGI `receive`), the
reader awaits that itself and `wake` cancels its scope as well as setting the
Event (a second task racing the two cost +6 KiB per waiting reader under plain
uvicorn). And the wait runs in the caller's frame, not in a coroutine of its
own: a frame less per parked reader, which with the rest makes the difference
between fitting 12 KiB per waiting reader or not.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections import deque
from collections.abc import Awaitable
from types import TracebackType
from typing import Any

import anyio

from inbox_asgi.mailbox.interface import Disconnected

#: Why a reader woke, weakest first. WAITING: not woken (its deadline passed).
WAITING, MAIL, SUPERSEDED, LEFT, CLOSED = range(5)

#: The context the disconnect callback runs in: it reads no context variable, and
#: `add_done_callback` would otherwise copy the request's context for every reader.
_NO_CONTEXT = contextvars.Context()


class ParkedReader:
    """One GET waiting for something to read; `wake` ends its wait at once."""

    __slots__ = ("_closed", "_event", "_scope", "reason")

    def __init__(self) -> None:
        self._event = _lean(anyio.Event())
        #: While parked: what tells that the client left (a future, or an awaitable).
        self._closed: Awaitable[object] | None = None
        self._scope: anyio.CancelScope | None = None
        self.reason = WAITING

    def wake(self, reason: int) -> None:
        if reason > self.reason:
            self.reason = reason
        self._event.set()
        if self._scope is not None and not isinstance(self._closed, asyncio.Future):
            self._scope.cancel()  # parked on the client's disconnect itself: see woken()

    def parked(self, deadline: float, disconnected: Disconnected) -> ParkedReader:
        """Arm a wait until `deadline` (anyio's clock) or until the client leaves."""
        self._closed = disconnected()
        self._scope = anyio.move_on_at(deadline)
        return self

    def __enter__(self) -> None:
        if isinstance(self._closed, asyncio.Future):
            # inbox-asgi's server: the connection's closed-future wakes the reader. The
            # reader itself is the callback (see __call__): a bound method would be one
            # more object per parked reader.
            self._closed.add_done_callback(self, context=_NO_CONTEXT)
        assert self._scope is not None, "parked() first"
        self._scope.__enter__()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> bool:
        closed, scope = self._closed, self._scope
        self._closed = self._scope = None
        if isinstance(closed, asyncio.Future):
            closed.remove_done_callback(self)
        elif kind is None and self.reason == WAITING:
            self.reason = LEFT  # it awaited the disconnect itself, and that came
        elif inspect.iscoroutine(closed):
            closed.close()  # never awaited if the caller did not get to wait
        assert scope is not None
        return bool(scope.__exit__(kind, error, trace))  # True: its deadline passed

    def woken(self) -> Awaitable[object]:
        """The wait itself: the Event's, or under other servers the client's disconnect.

        Other servers tell of a disconnect only through an awaitable (ASGI
        `receive`). Rather than race it with the Event in a second task (measured:
        +6 KiB per waiting reader under plain uvicorn), the reader awaits it
        itself, and `wake` then also cancels the reader's scope.
        """
        closed = self._closed
        if closed is None or isinstance(closed, asyncio.Future) or self.reason != WAITING:
            return self._event.wait()
        return closed

    def woke(self) -> int:
        """Why the last wait ended (WAITING: its deadline passed); re-armed for another wait."""
        reason, self.reason = self.reason, WAITING
        if self._event.is_set():
            self._event = _lean(anyio.Event())  # an anyio.Event cannot be cleared
        return reason

    def __call__(self, closed: asyncio.Future[Any]) -> None:
        """The client's connection closed (the done-callback of its closed-future)."""
        self.wake(LEFT)


def _lean(event: anyio.Event) -> anyio.Event:
    """Keep the waiters of the Event's asyncio.Event in a list rather than a deque.

    An empty deque costs ~600 bytes, more than the rest of a parked reader's
    Event; asyncio.Event only appends, removes and iterates its waiters, which a
    list does as well (and one task waits at a time). If anyio or asyncio ever
    change shape, this does nothing (see also server.protocol._lean).
    """
    inner = getattr(event, "_event", None)
    waiters = getattr(inner, "_waiters", None)
    if type(waiters) is deque and not waiters:
        inner._waiters = []  # type: ignore[union-attr]
    return event
