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

Refusals that retrying cannot fix raise at once (`Unauthorized`, `MessageTooLarge`,
`RecipientNotFound`); a full inbox (503) is retried after its `Retry-After`, and
`ServerBusy` raised once that outlasts `retry_for`.

The names differ from the server's (`inbox_asgi.mailbox`'s `Message` and
`errors.InboxFull`) so code that uses both never mixes them up; `Message` and
`InboxFull` remain here as aliases because the README still uses them.
"""

from __future__ import annotations

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
from typing import Any, Self

import anyio
import httpx

__all__ = [
    "InboxClient",
    "InboxClientError",
    "MessageTooLarge",
    "ReceivedMessage",
    "RecipientNotFound",
    "ServerBusy",
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
    ) -> None:
        if not username or ":" in username:
            raise ValueError("username must be non-empty and cannot contain ':'")
        self.username = username
        self.retry_for = retry_for
        if isinstance(verify, str | Path):
            verify = ssl.create_default_context(cafile=str(verify))
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

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
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
                message = await self.poll()
                if message is not None:
                    return message
        return None

    async def poll(self) -> ReceivedMessage | None:
        """One GET: a message, or None when the server's long poll ended without one."""
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
        return self._auth

    def __aiter__(self) -> AsyncIterator[ReceivedMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[ReceivedMessage]:
        while True:
            message = await self.poll()
            if message is not None:
                yield message


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
