"""The endpoint's no-loss rule at the ASGI level, where a test can time a disconnect exactly."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from inbox_asgi.http.endpoint import InboxEndpoint
from inbox_asgi.mailbox.credentials import Credentials
from inbox_asgi.mailbox.interface import Message
from inbox_asgi.mailbox.memory import MemoryMailbox
from inbox_asgi.server.protocol import CONNECTION_GONE

from ..support import basic

pytestmark = pytest.mark.anyio


async def test_message_for_a_reader_that_just_left_stays_in_the_queue() -> None:
    mailbox = MemoryMailbox(inbox_timeout=60, inbox_capacity=10, max_inboxes=10)
    endpoint = InboxEndpoint(mailbox, long_poll_wait=10, max_body_size=100)
    connection_gone = False
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": "GET",
        "query_string": b"",
        "headers": [(b"authorization", basic("r")["Authorization"].encode())],
        "extensions": {CONNECTION_GONE: lambda: connection_gone},
    }

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(endpoint, scope, receive, send)
        await anyio.wait_all_tasks_blocked()
        assert (await mailbox.stats()).waiting_readers == 1
        # The connection drops, and before the reader's task runs again a message
        # is handed to it: the server must not write it into the dead connection.
        connection_gone = True
        await mailbox.send("s", "r", Message("s", b"precious"))

    # Nothing but an empty 204 went to the dead connection (the server drops even that).
    assert [event.get("status") for event in sent if event["type"] == "http.response.start"] == [204]
    kept = await mailbox.receive(Credentials("r", "secret"), wait=0, disconnected=anyio.sleep_forever)
    assert kept is not None and kept.body == b"precious"


def get_scope(**extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "query_string": b"",
        "headers": [(b"authorization", basic("r")["Authorization"].encode())],
        **extra,
    }


async def never_disconnects() -> dict[str, Any]:
    await anyio.sleep_forever()
    raise AssertionError


@pytest.mark.parametrize("error", [ConnectionResetError, BrokenPipeError, OSError])
async def test_a_write_that_fails_for_a_closed_connection_puts_the_message_back(
    error: type[OSError],
) -> None:
    mailbox = MemoryMailbox(inbox_timeout=60, inbox_capacity=10, max_inboxes=10)
    endpoint = InboxEndpoint(mailbox, long_poll_wait=0, max_body_size=100)
    await mailbox.open(Credentials("r", "secret"))
    await mailbox.send("s", "r", Message("s", b"precious"))

    async def send(event: dict[str, Any]) -> None:
        raise error("connection closed")

    await endpoint(get_scope(), never_disconnects, send)
    kept = await mailbox.receive(Credentials("r", "secret"), wait=0, disconnected=anyio.sleep_forever)
    assert kept is not None and kept.body == b"precious"


async def test_a_bug_while_writing_surfaces_instead_of_requeueing() -> None:
    """Requeueing on any error would hand the same message to the same bug on every GET, silently."""
    mailbox = MemoryMailbox(inbox_timeout=60, inbox_capacity=10, max_inboxes=10)
    endpoint = InboxEndpoint(mailbox, long_poll_wait=0, max_body_size=100)
    await mailbox.open(Credentials("r", "secret"))
    await mailbox.send("s", "r", Message("s", b"poison"))

    async def send(event: dict[str, Any]) -> None:
        raise RuntimeError("Invalid HTTP header value.")

    with pytest.raises(RuntimeError, match="Invalid HTTP header value"):
        await endpoint(get_scope(), never_disconnects, send)
    assert (await mailbox.stats()).queued_messages == 0


class RecordingMailbox(MemoryMailbox):
    """Remembers the credentials each request opened its inbox with."""

    def __init__(self) -> None:
        super().__init__(inbox_timeout=60, inbox_capacity=10, max_inboxes=10)
        self.seen: list[Credentials] = []

    async def open(self, credentials: Credentials) -> None:
        self.seen.append(credentials)
        await super().open(credentials)

    async def receive(self, credentials: Credentials, **kwargs: Any) -> Message | None:
        self.seen.append(credentials)
        return await super().receive(credentials, **kwargs)


@pytest.mark.parametrize(
    ("client", "forwarded", "trust_proxy", "network"),
    [
        (("203.0.113.7", 5000), None, False, "203.0.113.7"),
        (("2001:db8:1:2:3:4:5:6", 5000), None, False, "2001:db8:1:2::/64"),
        (("::ffff:203.0.113.7", 5000), None, False, "203.0.113.7"),
        (("127.0.0.1", 5000), b"198.51.100.1, 203.0.113.9", True, "203.0.113.9"),
        (("127.0.0.1", 5000), b"203.0.113.9", False, "127.0.0.1"),  # not trusted: the peer
        (None, None, False, ""),  # no peer address: unknown, no per-client limit
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_credentials_carry_the_client_network(
    client: tuple[str, int] | None, forwarded: bytes | None, trust_proxy: bool, network: str, method: str
) -> None:
    mailbox = RecordingMailbox()
    endpoint = InboxEndpoint(mailbox, long_poll_wait=0, max_body_size=100, trust_proxy=trust_proxy)
    scope = get_scope(method=method, client=client, query_string=b"to=r")
    if forwarded is not None:
        scope["headers"].append((b"x-forwarded-for", forwarded))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"hi", "more_body": False}

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    await endpoint(scope, receive, send)
    assert sent[0]["status"] in (200, 204)
    assert [credentials.network for credentials in mailbox.seen] == [network]
