"""The Mailbox service interface shared by the in-memory and Redis backends.

The HTTP layer talks only to this interface, so it cannot tell (or care)
where inboxes live.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

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


@dataclass(frozen=True, slots=True)
class MailboxStats:
    inboxes: int
    waiting_readers: int
    queued_messages: int
    #: Inboxes deleted for inactivity since start (0 where the store expires them itself).
    expired_inboxes: int = 0
    #: What queued messages count against -max-queued-bytes (0 where Redis holds them).
    queued_bytes: int = 0


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
