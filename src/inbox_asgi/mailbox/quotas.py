"""What the in-memory backend counts against its global limits.

-max-queued-bytes bounds the bytes of all queued messages together, and
-max-inboxes-per-ip the inboxes one client network holds, so that no single
client can exhaust what is meant for everyone. (In Redis mode Redis's maxmemory
bounds the messages, and the per-network counts live in Redis: see
`inbox_asgi.mailbox.redis.mailbox`.)
"""

from __future__ import annotations

from inbox_asgi.mailbox.errors import TooManyInboxesFromClient
from inbox_asgi.mailbox.interface import Message

#: What a queued message costs beyond the lengths of its body, sender and Content-Type:
#: the Message object, the bytes and str headers and its slot in the queue (measured
#: with tracemalloc: ~190 bytes). Counted so that a flood of empty messages is bounded too.
MESSAGE_OVERHEAD = 200


def message_size(message: Message) -> int:
    """The bytes a queued message counts against -max-queued-bytes."""
    content_type = message.content_type
    size = len(message.body) + len(message.sender) + MESSAGE_OVERHEAD
    return size if content_type is None else size + len(content_type)


class Quota:
    """The inboxes one client network holds now; each of them points to it.

    One shared object per network, so an inbox pays one reference for it, and
    giving the place back needs no lookup.
    """

    __slots__ = ("held", "network")

    def __init__(self, network: str) -> None:
        self.network = network
        self.held = 0


class NetworkQuotas:
    """-max-inboxes-per-ip for the in-memory backend: exact, O(1) per inbox created or deleted."""

    __slots__ = ("_quotas", "limit")

    def __init__(self, limit: int) -> None:
        #: 0: no limit.
        self.limit = limit
        self._quotas: dict[str, Quota] = {}

    def admits(self, network: str) -> bool:
        """Whether `network` may create one more inbox (an unknown network always may)."""
        if not network or not self.limit:
            return True
        quota = self._quotas.get(network)
        return quota is None or quota.held < self.limit

    def take(self, network: str) -> Quota | None:
        """Count a new inbox against `network`: the quota it then holds a place in, if limited."""
        if not network or not self.limit:
            return None
        quota = self._quotas.get(network)
        if quota is None:
            quota = self._quotas[network] = Quota(network)
        elif quota.held >= self.limit:
            raise TooManyInboxesFromClient
        quota.held += 1
        return quota

    def release(self, quota: Quota) -> None:
        """An inbox counted against `quota` is gone."""
        quota.held -= 1
        if not quota.held:
            del self._quotas[quota.network]

    def held(self, network: str) -> int:
        quota = self._quotas.get(network)
        return 0 if quota is None else quota.held
