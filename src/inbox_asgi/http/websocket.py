"""/inbox/ws, the push transport (SPEC section 9), as a raw ASGI WebSocket app.

The open socket is its inbox's reader (`mailbox.interface.InboxSocket`): one
task turns what `take` hands out into `message` frames, the other reads the
client's frames (`ack`, `send`). Whichever ends first ends both, and then the
socket's unacknowledged messages go back to the front of the inbox before the
close frame goes out, so a client that reconnects finds them first.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
from collections.abc import Callable
from typing import Any

import anyio
from starlette.types import Message as Event
from starlette.types import Receive, Scope, Send

from inbox_asgi.http.auth import Authenticator, authorization_header
from inbox_asgi.http.middleware.client_ip import client_ip, request_network
from inbox_asgi.http.middleware.ratelimit import TokenBuckets
from inbox_asgi.http.responses import ERROR_STATUS
from inbox_asgi.mailbox.credentials import Credentials
from inbox_asgi.mailbox.errors import (
    BackendUnavailable,
    BadCredentials,
    BadToken,
    BodyTooLarge,
    InboxError,
    MalformedRequest,
    MissingRecipient,
    RateLimited,
    TooManyInboxes,
    TooManyInboxesFromClient,
    WrongPassword,
)
from inbox_asgi.mailbox.interface import (
    InboxSocket,
    Mailbox,
    Message,
    ReaderEnded,
    ShuttingDown,
    SocketMailbox,
    Superseded,
)

#: What a `send` frame may carry beyond its body's base64: the JSON keys, `ref`, `to`
#: and `content_type` (whose bytes count against -max-body-size anyway).
ENVELOPE = 4096


def frame_limit(max_body_size: int) -> int:
    """The largest frame a client may send: a maximal message's base64 plus the envelope."""
    return 4 * math.ceil(max_body_size / 3) + ENVELOPE


class BadFrame(InboxError):
    reason = "malformed frame"


class FrameTooLarge(InboxError):
    reason = "frame larger than any message needs"


class AuthTimeout(InboxError):
    reason = "no credentials in time"


class NoSocketSupport(InboxError):
    reason = "the WebSocket transport is not available on this server's backend (memory only, so far)"


#: How every way a socket ends maps to its close code, in one place. (A `send` frame
#: refused gets an `error` frame instead, with the POST status from ERROR_STATUS.)
CLOSE_CODE: dict[type[Exception], int] = {
    BadFrame: 4400,
    MalformedRequest: 4400,
    BadCredentials: 4401,
    BadToken: 4401,
    WrongPassword: 4401,
    AuthTimeout: 4408,
    Superseded: 4409,
    RateLimited: 4429,
    TooManyInboxesFromClient: 4429,
    TooManyInboxes: 4503,
    BackendUnavailable: 4503,
    FrameTooLarge: 1009,
    ShuttingDown: 1001,
    NoSocketSupport: 1011,
}
#: Errors of a `send` frame that end the socket rather than answer with an `error` frame.
_FATAL_IN_SEND = (BadFrame, FrameTooLarge)
#: Bytes of a close reason: it must fit a control frame (123 bytes after the code).
_REASON_LIMIT = 120


class InboxSocketEndpoint:
    """The /inbox/ws endpoint: authenticate, attach to the inbox, then pump both ways."""

    def __init__(
        self,
        mailbox: Mailbox,
        *,
        authenticator: Authenticator,
        max_body_size: int,
        auth_timeout: float,
        trust_proxy: bool = False,
        buckets: TokenBuckets | None = None,
        origins: tuple[str, ...] = (),
    ) -> None:
        self.mailbox = mailbox if isinstance(mailbox, SocketMailbox) else None
        self.authenticator = authenticator
        self.max_body_size = max_body_size
        #: The largest frame a maximal message needs: its base64 form plus the envelope.
        self.max_frame = frame_limit(max_body_size)
        self.auth_timeout = auth_timeout
        self.trust_proxy = trust_proxy
        self.buckets = buckets
        #: -cors: ("*",) any origin, a list those, () only this server's own pages.
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        if not self.origin_allowed(scope):
            # Before accepting: the server answers the upgrade with 403.
            await send({"type": "websocket.close", "code": 4403})
            return
        await send({"type": "websocket.accept"})
        await Session(self, scope, receive, send).run()

    def origin_allowed(self, scope: Scope) -> bool:
        """A browser page may connect if -cors allows its origin (or, with CORS off, it is ours).

        Programs send no Origin and are not browsers: the check is not for them.
        """
        origin = host = None
        for name, value in scope["headers"]:
            if name == b"origin" and origin is None:
                origin = value.decode("latin-1")
            elif name == b"host" and host is None:
                host = value.decode("latin-1")
        if origin is None or "*" in self.origins:
            return True
        if self.origins:
            return origin.rstrip("/") in self.origins
        return host is not None and origin.partition("://")[2] == host

    def charge(self, client: str) -> None:
        """-rate-limit: the upgrade and every `send` frame cost a request."""
        if self.buckets is not None and self.buckets.take(client):
            raise RateLimited


class Session:
    """One open socket: its state, and the two tasks that serve it."""

    def __init__(self, endpoint: InboxSocketEndpoint, scope: Scope, receive: Receive, send: Send) -> None:
        self.endpoint = endpoint
        self.scope = scope
        #: The client's address, taken once (-trust-proxy reads it from the headers).
        self.client = client_ip(scope, endpoint.trust_proxy)
        self.receive = receive
        self._send = send
        # asyncio's Lock, not anyio's: uncontended it is taken and given back without
        # a loop turn, where anyio's acquire yields once (a cancel-shielded checkpoint)
        # for every frame. Measured: docs/websocket.md, Performance.
        self._lock = asyncio.Lock()
        #: Why the socket ends (None: the client closed it, or went away).
        self.ending: Exception | None = None
        self.client_left = False
        #: The highest id sent: an ack beyond it is malformed.
        self.highest_sent = 0
        #: While the reading task is in `read_frames` (the delivery ending cancels it then),
        #: and whether the delivery has ended.
        self.reading = True
        self.delivery_ended = False

    async def run(self) -> None:
        endpoint = self.endpoint
        try:
            if endpoint.mailbox is None:
                raise NoSocketSupport
            endpoint.charge(self.client)
            credentials = await self.authenticate()
            if credentials is None:
                return  # left before saying who it is
            socket = await endpoint.mailbox.attach(credentials)
        except InboxError as error:
            await self.close(error)
            return
        # Read: an open socket does not hold its upgrade's head (up to -max-header-size).
        self.scope["headers"] = []
        try:
            await self.send_frame({"type": "ready", "inbox": socket.generation})
            await self.pump(socket, credentials)
        except OSError:
            self.client_left = True
        finally:
            with anyio.CancelScope(shield=True):
                await socket.close()  # unacknowledged messages go back before the close frame
        await self.close(self.ending)

    async def authenticate(self) -> Credentials | None:
        """From the upgrade's Authorization header, else from a first `auth` frame in time."""
        endpoint = self.endpoint
        network = request_network(self.scope, endpoint.trust_proxy)
        header = authorization_header(self.scope["headers"])
        if header is None:
            with anyio.move_on_after(endpoint.auth_timeout):
                event = await self.receive()
                if event["type"] == "websocket.disconnect":
                    return None
                header = auth_header(self.parse(event))
            if header is None:
                raise AuthTimeout
        return endpoint.authenticator.credentials(header, network)

    async def pump(self, socket: InboxSocket, credentials: Credentials) -> None:
        """Deliver in a task of its own while this one reads; whichever ends first ends both.

        A plain asyncio task, not an anyio task group: the group, its cancel scopes and
        its task wrapper are ~4 KiB more per open socket (tracemalloc), for the same
        semantics: the delivery ending cancels the read, the read ending cancels the
        delivery, and this returns once both are over.
        """
        reader = asyncio.current_task()
        assert reader is not None
        delivery = asyncio.get_running_loop().create_task(self.deliver(socket, reader))
        try:
            await self.read_frames(socket, credentials)
        except asyncio.CancelledError:
            # Cancelled by the delivery ending, and by no one else: the socket ends normally.
            if not self.delivery_ended or reader.uncancel():
                raise
        finally:
            self.reading = False
            if not delivery.done():
                delivery.cancel()
                await asyncio.wait([delivery])
        if not delivery.cancelled() and (error := delivery.exception()) is not None:
            raise error

    async def deliver(self, socket: InboxSocket, reader: asyncio.Task[Any]) -> None:
        try:
            while True:
                for message in await socket.take():
                    # Before the frame goes out: the client may ack it before send returns.
                    self.highest_sent = max(self.highest_sent, message.id)
                    await self.send_text(message_text(message))
        except ReaderEnded as ended:
            self.ending = ended
        except OSError:
            self.client_left = True
        finally:
            self.delivery_ended = True
            if self.reading:
                reader.cancel()  # it waits for a frame: stop it

    async def read_frames(self, socket: InboxSocket, credentials: Credentials) -> None:
        try:
            while True:
                event = await self.receive()
                if event["type"] == "websocket.disconnect":
                    self.client_left = True
                    break
                frame = self.parse(event)
                kind = frame["type"]
                if kind == "ack":
                    upto = frame.get("id")
                    if not isinstance(upto, int) or isinstance(upto, bool) or upto > self.highest_sent:
                        raise BadFrame("ack needs the id of a message sent")
                    await socket.ack(upto)
                elif kind == "send":
                    await self.send_message(credentials, frame)
                else:
                    raise BadFrame(f"unexpected frame type {kind!r}")
        except InboxError as error:
            self.ending = error
        except OSError:
            self.client_left = True

    async def send_message(self, credentials: Credentials, frame: dict[str, Any]) -> None:
        """A `send` frame: POST /inbox's checks, answered `sent` or `error`."""
        endpoint = self.endpoint
        assert endpoint.mailbox is not None
        endpoint.charge(self.client)
        ref = frame.get("ref")
        try:
            recipient = frame.get("to")
            if recipient is not None and not isinstance(recipient, str):
                raise BadFrame("to must be a string")
            if not recipient:
                raise MissingRecipient("missing recipient: give to")
            content_type = _content_type(frame.get("content_type"))
            body = _body(frame)
            if len(body) + len(content_type or b"") > endpoint.max_body_size:
                raise BodyTooLarge
            message = Message(credentials.username, body, content_type)
            await endpoint.mailbox.send(credentials.username, recipient, message)
        except _FATAL_IN_SEND:
            raise
        except InboxError as error:
            status, headers = ERROR_STATUS[type(error)]
            retry = next((int(value) for name, value in headers if name == b"retry-after"), None)
            await self.send_frame(
                {"type": "error", "ref": ref, "status": status, "reason": error.reason, "retry_after": retry}
            )
            return
        # A ref is mostly a number: JSONEncoder.encode builds a C encoder per call for one.
        text = str(ref) if type(ref) is int else _string(ref) if type(ref) is str else _encode(ref)
        await self.send_text(f'{{"type":"sent","ref":{text}}}')

    def parse(self, event: Event) -> dict[str, Any]:
        """A client frame as a JSON object with a string `type`; FrameTooLarge or BadFrame otherwise."""
        text = event.get("text")
        data = event.get("bytes")
        size = len(data) if text is None and data is not None else len(text or "")
        limit = self.endpoint.max_frame
        if size > limit or (text is not None and 4 * size > limit and len(text.encode()) > limit):
            raise FrameTooLarge
        if text is None:
            raise BadFrame("frames are JSON text")
        try:
            frame = json.loads(text)
        except (ValueError, RecursionError):
            raise BadFrame("frame is not JSON") from None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            raise BadFrame("frame is not an object with a type")
        return frame

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send_text(_encode(frame))

    async def send_text(self, text: str) -> None:
        async with self._lock:
            await self._send({"type": "websocket.send", "text": text})

    async def close(self, error: Exception | None) -> None:
        if self.client_left:
            return
        code = 1000 if error is None else CLOSE_CODE.get(type(error), 1011)
        reason = getattr(error, "reason", "")
        reason = reason.encode()[:_REASON_LIMIT].decode(errors="ignore")
        with contextlib.suppress(OSError):  # gone meanwhile
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


def auth_header(frame: dict[str, Any]) -> bytes:
    """An `auth` frame as the Basic header it stands for, so the same rules apply to both."""
    if frame["type"] != "auth":
        raise BadFrame("the first frame must be auth (or send Authorization with the upgrade)")
    username, password = frame.get("username"), frame.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise BadFrame("auth needs a username and a password")
    if ":" in username:
        raise BadCredentials("':' in username")
    try:
        pair = f"{username}:{password}".encode()
    except UnicodeEncodeError:
        raise BadCredentials("credentials are not UTF-8") from None
    return b"Basic " + base64.b64encode(pair)


#: One encoder for every frame: `json.dumps` with options builds a JSONEncoder per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
#: A str as a JSON string, as `_encode` writes it (json's C function; non-ASCII kept).
_string: Callable[[str], str] = json.encoder.encode_basestring


def message_text(message: Message) -> str:
    """A `message` frame, written out directly: the same text `_encode` makes of its dict
    (same keys, order and escaping), at a fraction of the cost on the hot path."""
    content_type = message.content_type
    kind = "null" if content_type is None else _string(content_type.decode("latin-1"))
    try:
        body = '"body":' + _string(message.body.decode())
    except UnicodeDecodeError:
        body = '"body_base64":"' + base64.b64encode(message.body).decode("ascii") + '"'
    return (
        f'{{"type":"message","id":{message.id},"from":{_string(message.sender)},'
        f'"content_type":{kind},{body}}}'
    )


def _body(frame: dict[str, Any]) -> bytes:
    text, encoded = frame.get("body"), frame.get("body_base64")
    if text is not None and encoded is not None:
        raise BadFrame("body or body_base64, not both")
    if encoded is not None:
        if not isinstance(encoded, str):
            raise BadFrame("body_base64 must be a string")
        try:
            return binascii.a2b_base64(encoded, strict_mode=True)
        except (binascii.Error, ValueError):
            raise BadFrame("body_base64 is not valid base64") from None
    if text is None:
        return b""  # like a POST without a body
    if not isinstance(text, str):
        raise BadFrame("body must be a string")
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise BadFrame("body is not valid Unicode: use body_base64") from None


def _content_type(value: object) -> bytes | None:
    """The Content-Type a GET will answer with: a header value, so printable ASCII only."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadFrame("content_type must be a string or null")
    if not (value.isascii() and value.isprintable()):
        raise MalformedRequest("content_type must be printable ASCII")
    return value.encode()
