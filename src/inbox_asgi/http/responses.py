"""Raw ASGI responses, and the one table that maps domain errors to HTTP."""

from __future__ import annotations

from starlette.types import Send

from inbox_asgi.http.extensions import Headers
from inbox_asgi.mailbox.errors import (
    BackendUnavailable,
    BadCredentials,
    BadToken,
    BodyTooLarge,
    InboxError,
    InboxFull,
    MalformedQuery,
    MalformedRequest,
    MissingRecipient,
    NoSuchInbox,
    RateLimited,
    StoreFull,
    TooManyInboxes,
    TooManyInboxesFromClient,
    WrongPassword,
)

_CHALLENGE = [(b"www-authenticate", b'Basic realm="inbox"')]
_RETRY_SOON = [(b"retry-after", b"1")]

#: Every domain error's status code and extra headers, in one place.
ERROR_STATUS: dict[type[InboxError], tuple[int, Headers]] = {
    MalformedRequest: (400, []),
    MalformedQuery: (400, []),
    MissingRecipient: (400, []),
    BadCredentials: (401, _CHALLENGE),
    BadToken: (401, _CHALLENGE),
    WrongPassword: (401, _CHALLENGE),
    NoSuchInbox: (404, []),
    # Closed after: the client may still be streaming a body the server will not read,
    # and keeping the connection would mean draining all of it.
    BodyTooLarge: (413, [(b"connection", b"close")]),
    RateLimited: (429, _RETRY_SOON),
    TooManyInboxesFromClient: (429, [(b"retry-after", b"5")]),
    InboxFull: (503, _RETRY_SOON),
    StoreFull: (503, _RETRY_SOON),
    TooManyInboxes: (503, [(b"retry-after", b"5")]),
    BackendUnavailable: (503, [(b"retry-after", b"2")]),
}

_TEXT = (b"content-type", b"text/plain; charset=utf-8")


async def send_response(send: Send, status: int, headers: Headers, body: bytes = b"") -> None:
    """A whole response through ASGI; a 204 carries no Content-Length (RFC 9110 §8.6)."""
    if status != 204:
        headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_text(send: Send, status: int, text: str, headers: Headers | None = None) -> None:
    await send_response(send, status, [_TEXT, *(headers or [])], text.encode() + b"\n")


async def send_error(send: Send, error: InboxError, *, retry_after: int | None = None) -> None:
    status, headers = ERROR_STATUS[type(error)]
    if retry_after is not None:
        headers = [h for h in headers if h[0] != b"retry-after"] + [(b"retry-after", b"%d" % retry_after)]
    await send_text(send, status, error.reason, list(headers))
