"""An async Python client for the inbox-asgi wire protocol (needs the `client` extra: httpx).

    async with InboxClient("https://server:3000", "alice", "secret", verify="ca.pem") as alice:
        await alice.send("bob", b"hello")
        message = await alice.receive(timeout=10)   # None if nothing came
        async for message in alice:                  # forever, one message at a time
            print(message.sender, message.text())

With access tokens (`-auth-secret`) the password is a token; pass a function
returning one (or an awaitable of one) and it is asked again after a 401, so a
long-lived client renews its token: `InboxClient(url, "alice", fetch_token)`.
`await client.ice_servers()` gives the STUN/TURN list for RTCPeerConnection.

`transport="websocket"` reads the inbox over `/inbox/ws` instead of long polls
(docs/websocket.md): messages are pushed, acknowledged as `receive` hands
them out, and repeats after a reconnect are dropped by id. `"auto"` tries the
socket and falls back to long polling for good if the server refuses it (an
older server, a proxy without WebSocket support). Sending always POSTs. The
default is "auto", as in the JavaScript client, except with an `http=` client
of your own (an in-process ASGI transport has no socket): then long polling.

Refusals that retrying cannot fix raise at once (`Unauthorized`, `MessageTooLarge`,
`RecipientNotFound`); a full inbox (503) is retried after its `Retry-After`, and
`ServerBusy` raised once that outlasts `retry_for`.

The names differ from the server's (`inbox_asgi.mailbox`'s `Message` and
`errors.InboxFull`) so code that uses both never mixes them up; `Message` and
`InboxFull` remain here as aliases because the README still uses them.
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import json
import math
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import anyio
import httpx

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

__all__ = [
    "InboxClient",
    "InboxClientError",
    "MessageTooLarge",
    "ReceivedMessage",
    "RecipientNotFound",
    "ServerBusy",
    "SocketRefused",
    "Unauthorized",
    "UnexpectedResponse",
]


class InboxClientError(Exception):
    """The server refused a request; `status` is its HTTP status, `reason` its text."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}" if reason else f"HTTP {status}")
        self.status = status
        self.reason = reason


class Unauthorized(InboxClientError):
    """401: the name belongs to an inbox opened with another password (or bad credentials)."""


class RecipientNotFound(InboxClientError):
    """404: the recipient has no inbox (it has not polled or sent yet, or its inbox expired)."""


class MessageTooLarge(InboxClientError):
    """413: the message is over the server's `max-body-size`."""


class ServerBusy(InboxClientError):
    """503 that outlasted the retries: the recipient's inbox (or the server) is full."""


class UnexpectedResponse(InboxClientError):
    """Any other status the protocol does not expect."""


_ERRORS: dict[int, type[InboxClientError]] = {
    401: Unauthorized,
    404: RecipientNotFound,
    413: MessageTooLarge,
    503: ServerBusy,
}


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One message read from our inbox: exactly the bytes the sender posted."""

    sender: str
    data: bytes
    content_type: str | None = None

    def text(self) -> str:
        return self.data.decode()

    def json(self) -> Any:
        return json.loads(self.data)


#: The former names, kept for code written against them (the README's examples).
Message = ReceivedMessage
InboxFull = ServerBusy

#: A password, or a function giving the current one (an access token), maybe asynchronously.
Password = str | Callable[[], str | Awaitable[str]]
#: Ids of handed-out messages the WebSocket transport remembers to drop repeats: far more
#: than the server keeps unacknowledged (32), which is all that can come again.
SEEN_IDS = 1024
#: How the inbox is read: long polls (the default), a WebSocket, or a WebSocket if the server takes one.
Transport = Literal["auto", "websocket", "long-polling"]


class SocketRefused(InboxClientError):
    """The server would not open /inbox/ws (with transport="websocket"; "auto" falls back instead)."""


class InboxClient:
    """Reads the inbox of `username` and posts to other inboxes, over one HTTP connection pool.

    `verify` is what httpx takes, or the path of a CA bundle (PEM) to trust, e.g. the
    certificate of a server started with `--self-signed`. `retry_for` bounds how long
    a send keeps retrying 503s (and, when asked, 404s) before it raises.
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: Password,
        *,
        verify: ssl.SSLContext | str | Path | bool = True,
        retry_for: float = 30.0,
        timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
        transport: Transport | None = None,
    ) -> None:
        if not username or ":" in username:
            raise ValueError("username must be non-empty and cannot contain ':'")
        if transport is None:
            transport = "auto" if http is None else "long-polling"
        if transport not in ("auto", "websocket", "long-polling"):
            raise ValueError(f"transport must be auto, websocket or long-polling, got {transport!r}")
        self.username = username
        self.retry_for = retry_for
        self.transport: Transport = transport
        if isinstance(verify, str | Path):
            verify = ssl.create_default_context(cafile=str(verify))
        self._socket_url = _socket_url(base_url)
        self._ssl = _ssl_context(verify) if self._socket_url.startswith("wss:") else None
        self._timeout = timeout
        self._ws: ClientConnection | None = None
        #: The inbox generation the socket last reported, and the latest ids handed out in it
        #: (a set, not the highest: a message whose GET answer failed goes back in front of
        #: ids a socket may already have had; only unacknowledged ones ever come again).
        self._generation: int | None = None
        self._seen_ids: dict[int, None] = {}
        self._owns_http = http is None
        # No read timeout on the client: a long poll legitimately waits; receive() bounds it.
        self._http = http or httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            verify=verify,
            timeout=httpx.Timeout(timeout, read=None),
        )
        self._password = password
        # A function's password is asked for at the first request, and again after a 401.
        self._auth = None if callable(password) else httpx.BasicAuth(username, password)
        self._current_password = None if callable(password) else password

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._owns_http:
            await self._http.aclose()

    async def send(
        self,
        to: str,
        data: bytes | str,
        *,
        content_type: str | None = None,
        wait_for_recipient: float = 0.0,
    ) -> None:
        """Post `data` to `to`'s inbox.

        A `str` is sent as UTF-8 text/plain. A 404 is retried for up to
        `wait_for_recipient` seconds (the peer may not have started yet), a 503
        for up to `retry_for` seconds, honouring Retry-After.
        """
        if isinstance(data, str):
            data = data.encode()
            content_type = content_type or "text/plain; charset=utf-8"
        headers = {"Content-Type": content_type} if content_type else {}
        started = time.monotonic()
        backoff = 0.1
        while True:
            response = await self._request("POST", "/inbox", params={"to": to}, content=data, headers=headers)
            if response.status_code == 200:
                return
            elapsed = time.monotonic() - started
            if response.status_code == 503:
                delay, budget = _retry_after(response, backoff), self.retry_for
            elif response.status_code == 404:
                delay, budget = backoff, wait_for_recipient
            else:
                raise _error(response)
            if elapsed + delay > budget:
                raise _error(response)
            await anyio.sleep(delay)
            backoff = min(backoff * 2, 2.0)

    async def send_json(self, to: str, obj: Any, *, wait_for_recipient: float = 0.0) -> None:
        """`send` a JSON document, the form browser peers (signal_channel.js) expect."""
        await self.send(
            to,
            json.dumps(obj).encode(),
            content_type="application/json",
            wait_for_recipient=wait_for_recipient,
        )

    # A `timeout` argument rather than a cancel scope: running out of time is a normal outcome (None).
    async def receive(self, timeout: float | None = None) -> ReceivedMessage | None:  # noqa: ASYNC109
        """The oldest message in our inbox, waiting up to `timeout` seconds (None: forever).

        Returns None when the time is up. Each call also keeps the inbox alive (and
        creates it on the first call), so a peer can reach us.
        """
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            while True:
                message = await self._next()
                if message is not None:
                    return message
        return None

    async def _next(self) -> ReceivedMessage | None:
        """One step of reading: a frame from the socket on the WebSocket transport, else one GET."""
        if self.transport != "long-polling":
            ws = await self._socket()
            if ws is not None:
                return await self._socket_message(ws)
        return await self.poll()

    async def poll(self) -> ReceivedMessage | None:
        """One GET: a message, or None when the server's long poll ended without one.

        (A GET is the inbox's newest reader: it closes our own socket, if one is open.)
        """
        response = await self._request("GET", "/inbox")
        if response.status_code == 204:
            return None
        if response.status_code != 200:
            if response.status_code == 503:  # too many inboxes: wait as asked, then report nothing
                await anyio.sleep(_retry_after(response, 1.0))
                return None
            raise _error(response)
        raw_sender = response.headers.raw
        sender = next((value for key, value in raw_sender if key.lower() == b"x-from"), b"")
        return ReceivedMessage(
            sender=sender.decode("utf-8", "replace"),
            data=response.content,
            content_type=response.headers.get("content-type"),
        )

    async def ice_servers(self) -> list[dict[str, Any]]:
        """The server's STUN/TURN servers with fresh TURN credentials (`/ice-servers`).

        Dicts with `urls` and, for TURN, `username` and `credential`, as
        RTCPeerConnection (or aiortc's RTCIceServer) takes them; empty when the
        server has none configured.
        """
        response = await self._request("GET", "/ice-servers")
        if response.status_code != 200:
            raise _error(response)
        servers: list[dict[str, Any]] = response.json()["iceServers"]
        return servers

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request with our credentials; a refused token is renewed once and the request retried."""
        response = await self._http.request(method, url, auth=await self._credentials(), **kwargs)
        if response.status_code == 401 and callable(self._password):
            self._auth = None
            response = await self._http.request(method, url, auth=await self._credentials(), **kwargs)
        return response

    async def _credentials(self) -> httpx.BasicAuth:
        if self._auth is None:
            assert callable(self._password)
            password = self._password()
            if inspect.isawaitable(password):
                password = await password
            self._auth = httpx.BasicAuth(self.username, password)
            self._current_password = password
        return self._auth

    # -- the WebSocket transport ------------------------------------------------------------

    async def _socket(self) -> ClientConnection | None:
        """The open socket, connecting if needed; None once "auto" has fallen back to long polls."""
        if self._ws is not None:
            return self._ws
        try:
            self._ws = await self._connect()
        except SocketRefused:
            if self.transport == "websocket":
                raise
            self.transport = "long-polling"
            return None
        except Unauthorized:
            if not callable(self._password):
                raise
            self._auth = None  # a refused token: renewed once, as for a request
            self._ws = await self._connect()
        return self._ws

    async def _connect(self) -> ClientConnection:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        await self._credentials()
        pair = f"{self.username}:{self._current_password}".encode()
        header = {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        try:
            ws = await connect(
                self._socket_url, ssl=self._ssl, additional_headers=header, open_timeout=self._timeout
            )
        except (InvalidHandshake, OSError, TimeoutError) as error:
            raise SocketRefused(0, f"no WebSocket: {error}") from error
        try:
            with anyio.fail_after(self._timeout):
                ready = json.loads(await ws.recv())
        except ConnectionClosed as closed:
            code, reason = (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (1006, "")
            if code == 4401:
                raise Unauthorized(401, reason) from None
            raise SocketRefused(code, reason) from None
        generation = ready["inbox"]
        if generation != self._generation:
            self._generation = generation
            self._seen_ids.clear()  # ids start over with the inbox
        return ws

    async def _socket_message(self, ws: ClientConnection) -> ReceivedMessage | None:
        """The next message frame, acknowledged; None for a repeat, or when the socket closed."""
        from websockets.exceptions import ConnectionClosed

        try:
            frame = json.loads(await ws.recv())
        except ConnectionClosed as closed:
            self._ws = None  # reconnect on the next read (4409: another reader took over, like a 204)
            if closed.rcvd is not None and closed.rcvd.code == 4401:
                raise Unauthorized(401, closed.rcvd.reason) from None
            return None
        if frame.get("type") != "message":
            return None
        # Shielded: a receive() timing out now must not leave the frame read but unacknowledged
        # (it would only come back once the socket closes). Unacknowledged, it comes again,
        # and is dropped as a repeat.
        with anyio.move_on_after(self._timeout, shield=True), contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps({"type": "ack", "id": frame["id"]}))
        seen = self._seen_ids
        if frame["id"] in seen:
            return None  # delivered before the socket was last cut
        seen[frame["id"]] = None
        if len(seen) > SEEN_IDS:
            del seen[next(iter(seen))]
        body = frame.get("body")
        data = body.encode() if body is not None else base64.b64decode(frame["body_base64"])
        return ReceivedMessage(sender=frame["from"], data=data, content_type=frame.get("content_type"))

    def __aiter__(self) -> AsyncIterator[ReceivedMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[ReceivedMessage]:
        while True:
            message = await self._next()
            if message is not None:
                yield message


def _socket_url(base_url: str) -> str:
    """`/inbox/ws` of the server at `base_url` (http → ws, https → wss)."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + "/inbox/ws"
    return "ws://" + base.removeprefix("http://") + "/inbox/ws"


def _ssl_context(verify: ssl.SSLContext | bool) -> ssl.SSLContext:
    """What httpx's `verify` means, for the socket."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _error(response: httpx.Response) -> InboxClientError:
    kind = _ERRORS.get(response.status_code, UnexpectedResponse)
    return kind(response.status_code, response.text.strip())


def _retry_after(response: httpx.Response, default: float) -> float:
    """Seconds to wait per Retry-After (delta-seconds or an HTTP date)."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default
