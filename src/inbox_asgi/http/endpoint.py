"""The /inbox endpoint as a raw ASGI app.

Raw ASGI rather than a Request/Response handler because a long poll has to
watch `receive` for the client going away while it waits, and because this is
the hot path: it parses only the three headers it needs.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from inbox_asgi.http.auth import TWO_AUTHORIZATIONS, Authenticator, authorization_header
from inbox_asgi.http.extensions import (
    CONNECTION_CLOSED,
    CONNECTION_GONE,
    WRITE_RESPONSE,
    Headers,
    ResponseWriter,
)
from inbox_asgi.http.middleware.client_ip import request_network
from inbox_asgi.http.query import parse_query
from inbox_asgi.http.responses import send_error, send_response, send_text
from inbox_asgi.mailbox.errors import BodyTooLarge, InboxError, MalformedRequest, MissingRecipient
from inbox_asgi.mailbox.interface import Disconnected, Mailbox, Message, never_gone

ALLOW = [(b"allow", b"GET, POST, OPTIONS")]
NO_STORE = (b"cache-control", b"no-store")


class ClientGone(Exception):
    """The client disconnected before its request was read."""


#: Longer than any Content-Length a body could fit under max_body_size; spares int()
#: (which refuses over 4300 digits) a header that is only digits.
_MAX_LENGTH_DIGITS = 18


class InboxEndpoint:
    def __init__(
        self,
        mailbox: Mailbox,
        *,
        long_poll_wait: float,
        max_body_size: int,
        trust_proxy: bool = False,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.authenticator = authenticator or Authenticator()
        self.long_poll_wait = long_poll_wait
        self.max_body_size = max_body_size
        self.trust_proxy = trust_proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET /inbox served in this frame; POST in `post`, OPTIONS and 405 here too.

        Not in a `get` method of its own: a long poll parks in this coroutine, and
        with tens of thousands parked, one coroutine frame less is ~0.3 KiB per
        waiting reader (docs/performance.md, the waiting-reader budget).
        """
        method = scope["method"]
        if method != "GET":
            try:
                if method == "POST":
                    await self.post(scope, receive, send)
                elif method == "OPTIONS":
                    await send_response(send, 204, [])
                else:  # HEAD included: it must never dequeue a message nobody sees.
                    await send_text(send, 405, "method not allowed", list(ALLOW))
            except InboxError as error:
                await send_error(send, error)
            except ClientGone:
                pass
            return
        try:
            parse_query(scope["query_string"])
            header = authorization_header(scope["headers"])
            credentials = self.authenticator.credentials(header, request_network(scope, self.trust_proxy))
            extensions = scope.get("extensions") or {}
            # inbox-asgi's own protocol tells when the connection closes at the cost of one
            # future; other servers only through `receive`.
            disconnected = extensions.get(CONNECTION_CLOSED) or _receive_disconnect(receive)
            message = await self.mailbox.receive(
                credentials,
                wait=self.long_poll_wait,
                disconnected=disconnected,
                gone=extensions.get(CONNECTION_GONE, never_gone),
            )
        except InboxError as error:
            await send_error(send, error)
            return
        # inbox-asgi's protocol writes a whole response at once; elsewhere, ASGI does.
        write: ResponseWriter = extensions.get(WRITE_RESPONSE, _asgi_only)
        if message is None:
            if not write(send, 204, [NO_STORE], b""):
                await send_response(send, 204, [NO_STORE])
            return
        headers: Headers = [NO_STORE, (b"x-from", message.sender.encode())]
        if message.content_type is not None:
            headers.append((b"content-type", message.content_type))
        try:
            if not write(send, 200, headers, message.body):
                await send_response(send, 200, headers, message.body)
        except OSError:
            # The reader vanished while we answered (ASGI servers raise an OSError
            # subclass from `send` for that, uvicorn's ClientDisconnected included):
            # the message is not lost. Anything else is a bug, and must surface
            # rather than put the message back to fail again on the next GET.
            await self.mailbox.requeue(credentials.username, message)

    async def post(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_query(scope["query_string"])
        authorization = content_length = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is not None:
                    raise MalformedRequest(TWO_AUTHORIZATIONS)
                authorization = value
            elif name == b"content-length":
                content_length = value
            elif name == b"content-type":
                content_type = value
        credentials = self.authenticator.credentials(authorization, request_network(scope, self.trust_proxy))
        await self.mailbox.open(credentials)
        recipient = query.get("to")
        if not recipient:
            raise MissingRecipient
        # The stored Content-Type is part of the message: up to a whole request head
        # of it would otherwise ride along with a one-byte body.
        limit = self.max_body_size - (len(content_type) if content_type is not None else 0)
        declared = content_length or b""
        if limit < 0 or (
            declared.isdigit() and (len(declared) > _MAX_LENGTH_DIGITS or int(declared) > limit)
        ):
            raise BodyTooLarge
        body = await self._read_body(receive, limit)
        message = Message(credentials.username, body, content_type)
        await self.mailbox.send(credentials.username, recipient, message)
        write: ResponseWriter = (scope.get("extensions") or {}).get(WRITE_RESPONSE, _asgi_only)
        if not write(send, 200, [], b""):
            await send_response(send, 200, [])

    async def _read_body(self, receive: Receive, limit: int) -> bytes:
        """The request body, refused once it passes `limit`.

        A body that trickles in is timed by inbox-asgi's protocol (408), below
        ASGI: a cancel scope here would cost every POST more than the rest of it.
        """
        chunks = []
        size = 0
        more = True
        while more:
            event = await receive()
            if event["type"] == "http.disconnect":
                raise ClientGone
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            more = event.get("more_body", False)
        return b"".join(chunks)


def _asgi_only(send: Send, status: int, headers: Headers, body: bytes) -> bool:
    """The response writer of servers without inbox-asgi's protocol: leaves it to `send`."""
    return False


def _receive_disconnect(receive: Receive) -> Disconnected:
    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    return disconnected
