"""Domain errors raised by the mailbox and the request parsers.

They know nothing about HTTP: `inbox_asgi.http.responses.ERROR_STATUS` maps each
one to a status code in one place, so a backend or parser never decides what the
client sees.
"""

from __future__ import annotations


class InboxError(Exception):
    """Base class: a request the server refuses, with a short reason for the client."""

    reason = "request refused"

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or self.reason)
        if reason is not None:
            self.reason = reason


class BadCredentials(InboxError):
    reason = "missing or malformed Basic credentials"


class BadToken(InboxError):
    reason = "invalid or expired access token"


class WrongPassword(InboxError):
    reason = "wrong password for this inbox"


class MalformedRequest(InboxError):
    reason = "malformed request"


class MalformedQuery(InboxError):
    reason = "malformed query string"


class MissingRecipient(InboxError):
    reason = "missing recipient: use ?to=PEER"


class BodyTooLarge(InboxError):
    reason = "message body too large"


class NoSuchInbox(InboxError):
    reason = "recipient inbox does not exist"


class InboxFull(InboxError):
    reason = "recipient inbox is full, retry later"


class TooManyInboxes(InboxError):
    reason = "server holds too many inboxes, retry later"


class TooManyInboxesFromClient(InboxError):
    reason = "too many inboxes created from this address, retry later"


class StoreFull(InboxError):
    reason = "server holds too many queued message bytes, retry later"


class RateLimited(InboxError):
    reason = "too many requests, slow down"


class BackendUnavailable(InboxError):
    reason = "message store unavailable, retry later"
