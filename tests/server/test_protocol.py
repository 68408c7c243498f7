"""inbox-asgi's uvicorn protocol class, driven in-process: lean state, gone clients."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inbox_asgi.app import build_mailbox
from inbox_asgi.config import Settings
from inbox_asgi.server.protocol import _lean

from ..support import connect_in_process, exchange, request

pytestmark = pytest.mark.anyio


async def test_lean_events_still_wake_their_waiters() -> None:
    protocol, transport = connect_in_process()
    await exchange(protocol, transport, request("GET", "/inbox", "r"))
    events = [protocol.flow._is_writable_event, protocol.cycle.message_event]  # type: ignore[attr-defined]
    assert [type(event._waiters) for event in events] == [list, list]
    event = asyncio.Event()
    _lean(event)
    waiters = [asyncio.ensure_future(event.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    assert len(event._waiters) == 2  # type: ignore[attr-defined]
    event.set()
    assert await asyncio.gather(*waiters) == [True, True]
    assert event._waiters == []  # type: ignore[attr-defined]


async def test_a_message_is_not_taken_for_a_reader_already_gone(backend: dict[str, Any]) -> None:
    """The client sent its GET and vanished before the server got to it: the message stays."""
    mailbox = build_mailbox(Settings(**backend))
    protocol, transport = connect_in_process(mailbox=mailbox)
    await exchange(protocol, transport, request("GET", "/inbox", "r"))
    await exchange(protocol, transport, request("POST", "/inbox?to=r", "s", b"keep me"))
    vanishing, vanishing_transport = connect_in_process(mailbox=mailbox)
    vanishing.data_received(request("GET", "/inbox", "r"))  # its task has not run yet
    vanishing.connection_lost(None)
    for _ in range(10):
        await asyncio.sleep(0)
    assert vanishing_transport.writes == []
    [delivered] = await exchange(protocol, transport, request("GET", "/inbox", "r"))
    assert delivered.endswith(b"\r\n\r\nkeep me")
    await mailbox.aclose()
