"""The Mailbox service interface shared by the in-memory and Redis backends.

The HTTP layer talks only to this interface, so it cannot tell (or care)
where inboxes live.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from inbox_asgi.mailbox.credentials import Credentials

#: Returns when the client behind a waiting GET has gone away.
Disconnected = Callable[[], Awaitable[object]]
#: True once the client's connection is known to be closed (checked without waiting).
Gone = Callable[[], bool]


def never_gone() -> bool:
    """For servers that cannot tell: assume the client is there."""
    return False


@dataclass(slots=True)
class Message:
    sender: str
    body: bytes
    content_type: bytes | None = None
    #: Given by the mailbox when it accepts the message: increasing in each inbox in
    #: order of acceptance, and kept if the message goes back to be delivered again,
    #: so a socket client can drop what it has already seen. 0 until accepted.
    id: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class MailboxStats:
    inboxes: int
    waiting_readers: int
    queued_messages: int
    #: Inboxes deleted for inactivity since start (0 where the store expires them itself).
    expired_inboxes: int = 0
    #: What queued messages count against -max-queued-bytes (0 where Redis holds them).
    queued_bytes: int = 0


#: The least a socket may hold unacknowledged (SPEC section 9 promises at least 16).
SOCKET_WINDOW = 32


class ReaderEnded(Exception):
    """The socket no longer reads its inbox; what it held unacknowledged is back in the queue."""

    reason = "closed"


class Superseded(ReaderEnded):
    """A newer GET or socket for the same inbox took over (one reader at a time)."""

    reason = "a newer reader of this inbox took over"


class ShuttingDown(ReaderEnded):
    """The mailbox shut down."""

    reason = "server stopping"


class InboxSocket(Protocol):
    """An open WebSocket as its inbox's reader, for as long as it is open.

    It reads like a long poll that never ends: `take` waits for messages as a
    GET would, but keeps what it hands out until `ack`; `close` puts back, at
    the front and in order, every message taken and not acknowledged. A newer
    reader of the inbox ends it (Superseded), and so does shutdown (ShuttingDown);
    either way its unacknowledged messages are back in the queue at once. While
    it is open its inbox does not expire.
    """

    #: Changes whenever the inbox is created anew: ids are only comparable within one.
    generation: int

    async def take(self) -> list[Message]:
        """The next messages in order, as many as the window has room for; waits for one.

        Raises ReaderEnded once the socket no longer reads the inbox.
        """

    async def ack(self, upto: int) -> None:
        """Every message taken with an id up to `upto` is delivered: it will not come back."""

    async def close(self) -> None:
        """Stop reading: what was taken and not acknowledged goes back to the front."""


class Mailbox(Protocol):
    async def open(self, credentials: Credentials) -> None:
        """Create the caller's inbox, or check the password of the existing one."""

    async def send(self, sender: str, recipient: str, message: Message) -> None:
        """Queue a message, or hand it straight to the recipient's waiting reader."""

    async def receive(
        self,
        credentials: Credentials,
        *,
        wait: float,
        disconnected: Disconnected,
        gone: Gone = never_gone,
    ) -> Message | None:
        """The oldest message, waiting up to `wait` seconds; None if there is none.

        The wait also ends, with None, when `disconnected` returns, when a newer
        reader opens the same inbox, or when the mailbox shuts down. A reader,
        woken or not, takes its message off the queue only if `gone()` is false,
        so a message is never taken for a client known to have left, and order is kept.
        """

    async def requeue(self, recipient: str, message: Message) -> None:
        """Put back, at the front, a message whose delivery failed."""

    async def run(self) -> None:
        """Background upkeep (expiry); runs until cancelled."""

    def shutdown(self) -> None:
        """Answer every waiting reader now; later reads do not wait."""

    async def stats(self) -> MailboxStats: ...

    async def aclose(self) -> None:
        """Release connections; called after shutdown."""


@runtime_checkable
class SocketMailbox(Mailbox, Protocol):
    """A backend that can also hand an inbox to a WebSocket (both built-in ones: memory and Redis)."""

    async def attach(self, credentials: Credentials, *, window: int = SOCKET_WINDOW) -> InboxSocket:
        """Open (or create) the caller's inbox with an open socket as its reader.

        The newest reader wins: a GET waiting on the inbox is answered, an
        older socket ends with Superseded. Raises what `open` raises.
        """
