"""Redis key names and the bytes a message is stored as.

Every key of one inbox carries the same hash tag, so a script that touches
them all runs in one Redis Cluster slot.
"""

from __future__ import annotations

import base64
import struct

from inbox_asgi.mailbox.interface import Message


def inbox_keys(name: str, prefix: str = "inbox") -> tuple[bytes, bytes]:
    """(meta hash, message list) of an inbox, both in the slot of the name's hash tag."""
    tag = base64.urlsafe_b64encode(name.encode()).rstrip(b"=")
    base = prefix.encode() + b":{" + tag + b"}:"
    return base + b"m", base + b"q"


def wake_channel(meta_key: bytes) -> bytes:
    """The inbox's shard channel for wake-ups on a Cluster (`<prefix>:{<tag>}:w`, the inbox's slot)."""
    return meta_key[:-1] + b"w"


def index_key(prefix: str = "inbox") -> bytes:
    """The global inbox index; `!` is not in the base64url alphabet, so no inbox shares its tag."""
    return prefix.encode() + b":{!}:index"


def network_key(network: str, prefix: str = "inbox") -> bytes:
    """The inboxes one client network created (-max-inboxes-per-ip), in a slot of its own.

    `:` is not in the base64url alphabet either, so no inbox shares its tag.
    """
    tag = base64.urlsafe_b64encode(network.encode()).rstrip(b"=")
    return prefix.encode() + b":{net:" + tag + b"}:inboxes"


_HEAD = struct.Struct(">II")


def encode_message(message: Message) -> bytes:
    """The stored form; SEND prefixes `<id>:` when it accepts a message, and a put-back keeps it.

    The old form, without the prefix, starts with a sender length's high byte (never an
    ASCII digit: that would be a sender of 768 MiB), so both decode.
    """
    sender = message.sender.encode()
    content_type = message.content_type
    head = _HEAD.pack(len(sender), 0 if content_type is None else len(content_type) + 1)
    encoded = b"".join((head, sender, content_type or b"", message.body))
    return b"%d:%b" % (message.id, encoded) if message.id else encoded


def decode_message(raw: bytes) -> Message:
    message_id = offset = 0
    if raw[:1].isdigit():
        offset = raw.index(b":")
        message_id = int(raw[:offset])
        offset += 1
    sender_size, type_size = _HEAD.unpack_from(raw, offset)
    start = offset + _HEAD.size + sender_size
    sender = raw[offset + _HEAD.size : start].decode()
    content_type = None
    if type_size:
        content_type = raw[start : start + type_size - 1]
        start += type_size - 1
    return Message(sender, raw[start:], content_type, message_id)
