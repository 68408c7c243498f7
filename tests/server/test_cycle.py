"""The endpoint's hot path on uvicorn's cycle: one write per response."""

from __future__ import annotations

import asyncio

import pytest

from inbox_asgi.app import build_mailbox
from inbox_asgi.config import Settings

from ..support import connect_in_process, exchange, request

pytestmark = pytest.mark.anyio


async def test_endpoint_responses_take_one_write_each() -> None:
    protocol, transport = connect_in_process()
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
    protocol, transport = connect_in_process()
    writes = await exchange(protocol, transport, request("POST", "/inbox?to=nobody", "s", b"x"))
    assert writes[0].startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"".join(writes).endswith(b"\r\n\r\nrecipient inbox does not exist\n")


async def test_with_middleware_wrapping_send_the_response_goes_through_asgi() -> None:
    protocol, transport = connect_in_process(cors=("https://app.example",))
    raw = request("GET", "/inbox", "r").replace(b"Host: x\r\n", b"Host: x\r\nOrigin: https://app.example\r\n")
    writes = await exchange(protocol, transport, raw)
    assert len(writes) == 2  # head, then the (empty) body: uvicorn's own path
    assert b"access-control-allow-origin: https://app.example\r\n" in writes[0]


async def test_a_chunked_body_is_limited_and_a_413_ends_the_connection() -> None:
    mailbox = build_mailbox(Settings())
    protocol, transport = connect_in_process(mailbox=mailbox, max_body_size=10)
    await exchange(protocol, transport, request("GET", "/inbox", "r"))
    chunked = request("POST", "/inbox?to=r", "s").replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
    refused = await exchange(protocol, transport, chunked + b"b\r\n" + b"x" * 11 + b"\r\n0\r\n\r\n")
    assert refused[0].startswith(b"HTTP/1.1 413 ")
    assert transport.closed  # a 413 ends the connection
    protocol, transport = connect_in_process(mailbox=mailbox, max_body_size=10)
    [accepted] = await exchange(protocol, transport, chunked + b"a\r\n" + b"y" * 10 + b"\r\n0\r\n\r\n")
    assert accepted.startswith(b"HTTP/1.1 200 ")
    [delivered] = await exchange(protocol, transport, request("GET", "/inbox", "r"))
    assert delivered.endswith(b"\r\n\r\n" + b"y" * 10)
    await mailbox.aclose()


async def test_expect_100_continue_is_answered_before_the_body_is_read() -> None:
    protocol, transport = connect_in_process()
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
