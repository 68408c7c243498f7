"""What the in-memory backend counts against its global limits.

-max-queued-bytes bounds the bytes of all queued messages together, so that no
single client can exhaust what is meant for everyone. (The Redis backend keeps
messages in Redis, bounded by its maxmemory: see `inbox_asgi.mailbox.redis.mailbox`.)
"""

from __future__ import annotations

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
