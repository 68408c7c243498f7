"""inbox_asgi.client.InboxClient against the app (in-process) and one real HTTPS server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import anyio
import httpx
import pytest

from inbox_asgi import client as client_module
from inbox_asgi.client import (
    InboxClient,
    MessageTooLarge,
    Password,
    ReceivedMessage,
    RecipientNotFound,
    ServerBusy,
    Unauthorized,
    _retry_after,
)
from inbox_asgi.mailbox import errors, interface
from inbox_asgi.tokens import issue

from .support import ServerProcess

pytestmark = pytest.mark.anyio

Clients = Callable[..., AbstractAsyncContextManager[Callable[..., InboxClient]]]


@pytest.fixture
def clients(make_client: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]) -> Clients:
    """`async with clients(**settings) as client:` then `client(name, password="pw")` is an InboxClient."""

    @asynccontextmanager
    async def make(**settings: Any) -> AsyncIterator[Callable[..., InboxClient]]:
        settings.setdefault("long_polling_timeout", 0.5)
        async with make_client(**settings) as http:

            def client(name: str, password: Password = "pw", **options: Any) -> InboxClient:
                return InboxClient("http://testserver", name, password, http=http, **options)

            client.http = http  # type: ignore[attr-defined]
            yield client

    return make


async def test_send_and_receive_keep_bytes_sender_and_content_type(clients: Clients) -> None:
    async with clients() as client:
        alice, bob = client("alice"), client("bøb ✓")
        assert await alice.receive(timeout=0.1) is None  # creates alice's inbox
        await bob.send("alice", b"\x00\xffraw", content_type="application/octet-stream")
        await bob.send("alice", "text ✓")
        await bob.send_json("alice", {"type": "offer", "sdp": "v=0"})

        first = await alice.receive(timeout=5)
        assert first == ReceivedMessage("bøb ✓", b"\x00\xffraw", "application/octet-stream")
        second = await alice.receive(timeout=5)
        assert second is not None
        assert (second.text(), second.content_type) == ("text ✓", "text/plain; charset=utf-8")
        third = await alice.receive(timeout=5)
        assert third is not None
        assert third.json() == {"type": "offer", "sdp": "v=0"}


async def test_receive_returns_none_when_the_time_is_up(clients: Clients) -> None:
    async with clients(long_polling_timeout=0.2) as client:
        started = time.monotonic()
        assert await client("alice").receive(timeout=0.5) is None
        elapsed = time.monotonic() - started
        assert 0.5 <= elapsed < 3  # kept asking across long polls that ended in 204


async def test_receive_waits_for_a_message_sent_later(clients: Clients) -> None:
    async with clients() as client, anyio.create_task_group() as tasks:
        alice = client("alice")
        await alice.receive(timeout=0)  # cancelled at once: the inbox may or may not exist yet
        await client("bob").receive(timeout=0.05)

        async def send_soon() -> None:
            await client("bob").send("alice", "late", wait_for_recipient=5)

        tasks.start_soon(send_soon)
        message = await alice.receive(timeout=5)
        assert message is not None
        assert (message.sender, message.text()) == ("bob", "late")


async def test_iterating_yields_messages_in_order(clients: Clients) -> None:
    async with clients() as client:
        alice, bob = client("alice"), client("bob")
        await alice.receive(timeout=0.1)
        for number in range(3):
            await bob.send("alice", str(number))
        received = []
        with anyio.fail_after(5):
            async for message in alice:
                received.append(message.text())
                if len(received) == 3:
                    break
        assert received == ["0", "1", "2"]


async def test_refusals_raise_clear_errors(clients: Clients) -> None:
    async with clients(max_body_size=8) as client:
        await client("alice").receive(timeout=0.1)
        with pytest.raises(Unauthorized) as wrong:
            await client("alice", password="other").send("alice", "x")
        assert wrong.value.status == 401
        with pytest.raises(RecipientNotFound):
            await client("bob").send("nobody", b"x")  # no Content-Type: it counts against the 8 bytes
        with pytest.raises(MessageTooLarge) as large:
            await client("bob").send("alice", b"123456789")
        assert "413" in str(large.value)


async def test_missing_recipient_is_retried_only_when_asked(clients: Clients) -> None:
    async with clients() as client:
        with pytest.raises(RecipientNotFound):
            await client("bob").send("carol", "x", wait_for_recipient=0.3)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lambda: client("bob").send("carol", "waited", wait_for_recipient=5))
            message = await client("carol").receive(timeout=5)
        assert message is not None
        assert message.text() == "waited"


async def test_full_inbox_is_retried_after_retry_after(clients: Clients) -> None:
    async with clients(inbox_capacity=1) as client:
        alice, bob = client("alice"), client("bob", retry_for=5)
        await alice.receive(timeout=0.1)
        await bob.send("alice", "first")
        with pytest.raises(ServerBusy) as full:
            await client("bob", retry_for=0).send("alice", "refused")
        assert full.value.status == 503

        refused = anyio.Event()

        async def on_response(response: httpx.Response) -> None:
            if response.status_code == 503:
                refused.set()

        client.http.event_hooks["response"].append(on_response)  # type: ignore[attr-defined]
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(bob.send, "alice", "second")  # 503 until alice makes room
            with anyio.fail_after(5):
                await refused.wait()
            started = time.monotonic()
            first = await alice.receive(timeout=5)
        assert time.monotonic() - started >= 0.9  # the server's Retry-After: 1 was honoured
        second = await alice.receive(timeout=5)
        assert [first and first.text(), second and second.text()] == ["first", "second"]


def test_retry_after_reads_seconds_and_dates() -> None:
    def response(value: str | None) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": value} if value else {})

    assert _retry_after(response("3"), 9.0) == 3.0
    assert _retry_after(response(None), 9.0) == 9.0
    assert _retry_after(response("soon"), 9.0) == 9.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < _retry_after(response(later), 9.0) <= 30


def test_client_names_differ_from_the_servers_and_old_names_still_work() -> None:
    public = set(client_module.__all__)
    assert not public & {name for name in dir(errors) if isinstance(getattr(errors, name), type)}
    assert not public & set(dir(interface))
    assert client_module.Message is ReceivedMessage  # the README's name
    assert client_module.InboxFull is ServerBusy


def test_names_with_a_colon_are_refused() -> None:
    with pytest.raises(ValueError, match="':'"):
        InboxClient("http://testserver", "a:b", "pw")


async def test_real_server_over_verified_https(real_server: Callable[..., ServerProcess]) -> None:
    server = real_server()
    assert server.ca_path is not None
    async with (
        InboxClient(server.base_url, "alice", "pw", verify=server.ca_path) as alice,
        InboxClient(server.base_url, "bob", "pw", verify=server.ca_path) as bob,
    ):
        assert await alice.receive(timeout=0.2) is None
        await bob.send("alice", "over TLS")
        message = await alice.receive(timeout=5)
        assert message is not None
        assert (message.sender, message.text()) == ("bob", "over TLS")
    async with InboxClient(server.base_url, "carol", "pw") as untrusting:  # system CAs only
        with pytest.raises(httpx.ConnectError):
            await untrusting.send("alice", "x")


async def test_a_password_function_is_asked_again_once_after_a_401(clients: Clients) -> None:
    """A long-lived client renews its access token: the function runs at first use and after a 401."""
    async with clients(auth_secret="k", long_polling=False) as client:
        handed_out: list[str] = []
        tokens = iter([issue("k", "bob", 1, now=time.time() - 10), issue("k", "bob", 60)])

        async def fetch_token() -> str:  # as a page would fetch one from its backend
            handed_out.append(next(tokens))
            return handed_out[-1]

        bob = client("bob", password=fetch_token)
        assert await bob.poll() is None  # the expired token was refused, the fresh one worked
        assert len(handed_out) == 2
        alice = client("alice", password=lambda: issue("k", "alice", 60))
        await alice.send("bob", b"hi")
        assert await bob.poll() == ReceivedMessage("alice", b"hi")
        assert len(handed_out) == 2  # a working token is kept, not fetched per request


async def test_a_token_that_stays_refused_raises_unauthorized(clients: Clients) -> None:
    calls = 0

    def forged() -> str:
        nonlocal calls
        calls += 1
        return issue("not-the-secret", "bob", 60)

    async with clients(auth_secret="k", long_polling=False) as client:
        with pytest.raises(Unauthorized):
            await client("bob", password=forged).poll()
    assert calls == 2


async def test_ice_servers(clients: Clients) -> None:
    settings = {"stun_urls": ("stun:s.example",), "turn_urls": ("turn:t.example",), "turn_secret": "t"}
    async with clients(**settings) as client:
        servers = await client("bob").ice_servers()
        assert servers[0] == {"urls": ["stun:s.example"]}
        assert servers[1]["urls"] == ["turn:t.example"]
        assert servers[1]["username"].endswith(":bob")
        with pytest.raises(Unauthorized):
            await client("bob", password="other").ice_servers()
