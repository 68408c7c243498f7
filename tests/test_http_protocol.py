"""inbox-asgi's uvicorn protocol class, driven in-process through a recording transport."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from inbox_asgi.app import build_mailbox, create_app
from inbox_asgi.config import Settings
from inbox_asgi.mailbox import Mailbox
from inbox_asgi.protocol import _lean, limited_protocol

from .support import basic

pytestmark = pytest.mark.anyio


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connect(mailbox: Mailbox | None = None, **settings: Any) -> tuple[asyncio.Protocol, RecordingTransport]:
    app = create_app(Settings(long_polling=False, **settings), mailbox=mailbox)
    config = uvicorn.Config(
        app, http=limited_protocol(65536, 10, 10), log_level="warning", lifespan="off", access_log=False
    )
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", b"Mon, 23 Nov 2026 00:00:00 GMT")]
    protocol = config.http_protocol_class(config=config, server_state=state, app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


def request(method: str, target: str, user: str, body: bytes = b"") -> bytes:
    auth = basic(user)["Authorization"]
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def exchange(protocol: asyncio.Protocol, transport: RecordingTransport, raw: bytes) -> list[bytes]:
    """Feed one request; return the writes its response took."""
    before = len(transport.writes)
    protocol.data_received(raw)
    cycle = protocol.cycle  # type: ignore[attr-defined]
    for _ in range(1000):  # the app runs as a task on this loop: let it
        if cycle.response_complete:
            return transport.writes[before:]
        await asyncio.sleep(0)
    raise AssertionError("no complete response")


async def test_endpoint_responses_take_one_write_each() -> None:
    protocol, transport = connect()
    [empty] = await exchange(protocol, transport, request("GET", "/inbox", "r"))
    [posted] = await exchange(protocol, transport, request("POST", "/inbox?to=r", "s", b"hello"))
    [delivered] = await exchange(protocol, transport, request("GET", "/inbox", "r"))
    assert empty.startswith(b"HTTP/1.1 204 No Content\r\n") and b"content-length" not in empty
    assert posted.startswith(b"HTTP/1.1 200 OK\r\n") and posted.endswith(b"content-length: 0\r\n\r\n")
    assert delivered.startswith(b"HTTP/1.1 200 OK\r\ndate: Mon, 23 Nov 2026 00:00:00 GMT\r\n")
    assert b"\r\nx-from: s\r\n" in delivered
    assert delivered.endswith(b"content-length: 5\r\n\r\nhello")
    assert not transport.closed


async def test_error_responses_still_go_through_asgi() -> None:
    protocol, transport = connect()
    writes = await exchange(protocol, transport, request("POST", "/inbox?to=nobody", "s", b"x"))
    assert writes[0].startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"".join(writes).endswith(b"\r\n\r\nrecipient inbox does not exist\n")


async def test_with_middleware_wrapping_send_the_response_goes_through_asgi() -> None:
    protocol, transport = connect(cors=("https://app.example",))
    raw = request("GET", "/inbox", "r").replace(b"Host: x\r\n", b"Host: x\r\nOrigin: https://app.example\r\n")
    writes = await exchange(protocol, transport, raw)
    assert len(writes) == 2  # head, then the (empty) body: uvicorn's own path
    assert b"access-control-allow-origin: https://app.example\r\n" in writes[0]


async def test_body_already_in_is_taken_without_receive_and_still_limited() -> None:
    protocol, transport = connect(max_body_size=10)
    await exchange(protocol, transport, request("GET", "/inbox", "r"))
    chunked = request("POST", "/inbox?to=r", "s").replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
    refused = await exchange(protocol, transport, chunked + b"b\r\n" + b"x" * 11 + b"\r\n0\r\n\r\n")
    assert refused[0].startswith(b"HTTP/1.1 413 ")
    [accepted] = await exchange(protocol, transport, chunked + b"a\r\n" + b"y" * 10 + b"\r\n0\r\n\r\n")
    assert accepted.startswith(b"HTTP/1.1 200 ")
    [delivered] = await exchange(protocol, transport, request("GET", "/inbox", "r"))
    assert delivered.endswith(b"\r\n\r\n" + b"y" * 10)


async def test_expect_100_continue_is_answered_before_the_body_is_read() -> None:
    protocol, transport = connect()
    await exchange(protocol, transport, request("GET", "/inbox", "r"))
    head = request("POST", "/inbox?to=r", "s", b"12345")[:-5].replace(
        b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"
    )
    before = len(transport.writes)
    protocol.data_received(head)
    for _ in range(100):
        if transport.writes[before:]:
            break
        await asyncio.sleep(0)
    assert transport.writes[before:] == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    [posted] = await exchange(protocol, transport, b"12345")
    assert posted.startswith(b"HTTP/1.1 200 ")
    [delivered] = await exchange(protocol, transport, request("GET", "/inbox", "r"))
    assert delivered.endswith(b"\r\n\r\n12345")


async def test_lean_events_still_wake_their_waiters() -> None:
    protocol, transport = connect()
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
    protocol, transport = connect(mailbox=mailbox)
    await exchange(protocol, transport, request("GET", "/inbox", "r"))
    await exchange(protocol, transport, request("POST", "/inbox?to=r", "s", b"keep me"))
    vanishing, vanishing_transport = connect(mailbox=mailbox)
    vanishing.data_received(request("GET", "/inbox", "r"))  # its task has not run yet
    vanishing.connection_lost(None)
    for _ in range(10):
        await asyncio.sleep(0)
    assert vanishing_transport.writes == []
    [delivered] = await exchange(protocol, transport, request("GET", "/inbox", "r"))
    assert delivered.endswith(b"\r\n\r\nkeep me")
    await mailbox.aclose()
