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
