"""The /inbox endpoint as a raw ASGI app.

Raw ASGI rather than a Request/Response handler because a long poll has to
watch `receive` for the client going away while it waits, and because this is
the hot path: it parses only the three headers it needs.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from inbox_asgi.http.auth import parse_authorization
from inbox_asgi.http.extensions import (
    COMPLETE_BODY,
    CONNECTION_CLOSED,
    CONNECTION_GONE,
    WRITE_RESPONSE,
    Headers,
    ResponseWriter,
)
from inbox_asgi.http.query import parse_query
from inbox_asgi.http.responses import send_error, send_response, send_text
from inbox_asgi.mailbox.errors import BodyTooLarge, InboxError, MissingRecipient
from inbox_asgi.mailbox.interface import Disconnected, Mailbox, Message, never_gone

ALLOW = [(b"allow", b"GET, POST, OPTIONS")]
NO_STORE = (b"cache-control", b"no-store")


class ClientGone(Exception):
    """The client disconnected before its request was read."""


class InboxEndpoint:
    def __init__(self, mailbox: Mailbox, *, long_poll_wait: float, max_body_size: int) -> None:
        self.mailbox = mailbox
        self.long_poll_wait = long_poll_wait
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        try:
            if method == "GET":
                await self.get(scope, receive, send)
            elif method == "POST":
                await self.post(scope, receive, send)
            elif method == "OPTIONS":
                await send_response(send, 204, [])
            else:  # HEAD included: it must never dequeue a message nobody sees.
                await send_text(send, 405, "method not allowed", list(ALLOW))
        except InboxError as error:
            await send_error(send, error)
        except ClientGone:
            pass

    async def get(self, scope: Scope, receive: Receive, send: Send) -> None:
        parse_query(scope["query_string"])
        credentials = parse_authorization(_header(scope, b"authorization"))
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
        except Exception:
            # The reader vanished while we answered: the message is not lost.
            await self.mailbox.requeue(credentials.username, message)
            raise ClientGone from None

    async def post(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_query(scope["query_string"])
        authorization = content_length = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                content_length = value
            elif name == b"content-type":
                content_type = value
        credentials = parse_authorization(authorization)
        await self.mailbox.open(credentials)
        recipient = query.get("to")
        if not recipient:
            raise MissingRecipient
        declared = content_length or b""
        if declared.isdigit() and int(declared) > self.max_body_size:
            raise BodyTooLarge
        extensions = scope.get("extensions") or {}
        complete_body = extensions.get(COMPLETE_BODY)
        body = complete_body(receive) if complete_body else None
        if body is None:
            body = await self._read_body(receive)
        elif len(body) > self.max_body_size:
            raise BodyTooLarge
        message = Message(credentials.username, body, content_type)
        await self.mailbox.send(credentials.username, recipient, message)
        write: ResponseWriter = extensions.get(WRITE_RESPONSE, _asgi_only)
        if not write(send, 200, [], b""):
            await send_response(send, 200, [])

    async def _read_body(self, receive: Receive) -> bytes:
        """The request body, refused once it passes max_body_size.

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
            if size > self.max_body_size:
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


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    name: bytes
    value: bytes
    for name, value in scope["headers"]:
        if name == wanted:
            return value
    return None
