"""inbox-asgi's HTTP protocol, driven in-process: gone clients, held pipelines, limits, freed state."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import weakref
from typing import Any

import pytest

from inbox_asgi.app import build_mailbox
from inbox_asgi.config import Settings
from inbox_asgi.server import fences
from inbox_asgi.server.protocol import HOLD_LIMIT, PIECE, HttpProtocol
from inbox_asgi.server.websocket_protocol import WebSocketProtocol

from .. import support
from ..support import RecordingTransport, connect_in_process, exchange, request, until

pytestmark = pytest.mark.anyio


async def test_a_message_is_not_taken_for_a_reader_already_gone(backend: dict[str, Any]) -> None:
    """The client sent its GET and vanished before the server got to it: the message stays."""
    mailbox = build_mailbox(Settings(**backend))
    protocol, transport = connect_in_process(mailbox=mailbox)
    await exchange(protocol, transport, request("GET", "/inbox", "r"))
    await exchange(protocol, transport, request("POST", "/inbox?to=r", "s", b"keep me"))
    vanishing, vanishing_transport = connect_in_process(mailbox=mailbox)
    vanishing.data_received(request("GET", "/inbox", "r"))  # its task has not run yet
    vanishing.connection_lost(None)
    await until(lambda: not vanishing.tasks)  # type: ignore[attr-defined]  # its request has run
    assert vanishing_transport.writes == []
    [delivered] = await exchange(protocol, transport, request("GET", "/inbox", "r"))
    assert delivered.endswith(b"\r\n\r\nkeep me")
    await mailbox.aclose()


def statuses(writes: list[bytes]) -> list[int]:
    return [int(write.split(b" ", 2)[1]) for write in writes if write.startswith(b"HTTP/1.1 ")]


async def test_requests_behind_a_long_poll_are_held_then_answered_in_order() -> None:
    mailbox = build_mailbox(Settings())
    protocol, transport = connect_in_process(mailbox=mailbox, long_polling=True)
    protocol.data_received(request("GET", "/inbox", "r"))  # parks
    waiting = protocol.cycle  # type: ignore[attr-defined]
    behind = [b"OPTIONS /inbox HTTP/1.1\r\nHost: x\r\n\r\n", b"DELETE /inbox HTTP/1.1\r\nHost: x\r\n\r\n"]
    pipelined = b"".join(behind) * (HOLD_LIMIT // 60)
    assert len(pipelined) > PIECE
    protocol.data_received(pipelined[:10000])
    assert protocol.cycle is waiting and not protocol.queued  # type: ignore[attr-defined]  # none parsed
    assert len(protocol.held) == 10000 and transport.reading  # type: ignore[attr-defined]  # held, still reading
    protocol.data_received(pipelined[10000:])
    assert not transport.reading  # past HOLD_LIMIT: stops reading

    sender, sender_transport = connect_in_process(mailbox=mailbox)
    await exchange(sender, sender_transport, request("POST", "/inbox?to=r", "s", b"hi"))
    expected = [200] + [204, 405] * (HOLD_LIMIT // 60)
    await until(lambda: len(statuses(transport.writes)) == len(expected))
    assert statuses(transport.writes) == expected
    assert transport.reading and protocol.held is None and not transport.closed  # type: ignore[attr-defined]
    await mailbox.aclose()


async def test_a_pipelined_batch_in_one_small_read_is_answered_in_order() -> None:
    protocol, transport = connect_in_process()
    batch = (
        request("GET", "/inbox", "r")
        + request("POST", "/inbox?to=r", "s", b"one")
        + request("GET", "/inbox", "r")
    )
    assert len(batch) <= PIECE
    protocol.data_received(batch)
    await until(lambda: len(statuses(transport.writes)) == 3)
    assert statuses(transport.writes) == [204, 200, 200]
    assert transport.writes[-1].endswith(b"\r\n\r\none")


async def test_large_reads_of_pipelined_bodies_are_parsed_exactly() -> None:
    """Bodies of declared length, chunked bodies with CRLF CRLF inside, pipelined in reads > PIECE."""
    protocol, transport = connect_in_process()
    body = b"x\r\n\r\n" * 400
    chunked = request("POST", "/inbox?to=r", "s").replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
    chunked += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    batch = request("GET", "/inbox", "r") + request("POST", "/inbox?to=r", "s", body) + chunked
    batch += request("GET", "/inbox", "r") * 3
    assert len(batch) > 2 * PIECE
    protocol.data_received(batch[:3000])
    protocol.data_received(batch[3000:])
    await until(lambda: len(statuses(transport.writes)) == 6)
    assert statuses(transport.writes) == [204, 200, 200, 200, 200, 204]
    assert [write.endswith(b"\r\n\r\n" + body) for write in transport.writes[3:5]] == [True, True]


async def test_blank_lines_cost_one_parser_call_per_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    parse = HttpProtocol._parse

    def counted(self: Any, data: bytes, phase: int) -> None:
        nonlocal calls
        calls += 1
        parse(self, data, phase)

    monkeypatch.setattr(HttpProtocol, "_parse", counted)
    protocol, transport = connect_in_process()
    protocol.data_received(b"\r\n" * 100_000 + request("GET", "/inbox", "r"))
    await until(lambda: statuses(transport.writes) == [204])
    assert calls <= 200_000 // PIECE + 3, calls


async def test_a_request_whole_in_one_read_leaves_nothing_armed_or_held() -> None:
    protocol: Any
    protocol, transport = connect_in_process()
    protocol.data_received(request("POST", "/inbox?to=nobody", "s", b"x"))
    assert protocol.timer is None and protocol.held is None
    await until(lambda: statuses(transport.writes) == [404])
    assert protocol.timer is None and protocol.keep_alive and protocol.held is None  # keep-alive only
    protocol.data_received(request("POST", "/inbox?to=nobody", "s", b"x"))
    assert protocol.timer is None and protocol.held is None


async def test_one_header_value_streamed_is_cut_off_at_max_header_size() -> None:
    protocol, transport = connect_in_process(max_header_size=4096)
    protocol.data_received(b"GET /inbox HTTP/1.1\r\nHost: x\r\nX-Long: ")
    sent = 0
    while not transport.closed and sent < 100_000:
        protocol.data_received(b"v" * 100)
        sent += 100
    assert transport.closed and 4000 < sent <= 4100, sent
    assert transport.writes[-1].startswith(b"HTTP/1.1 431 ")


async def test_header_lines_beyond_max_header_count_get_431() -> None:
    protocol, transport = connect_in_process(max_header_count=20)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"a: b\r\n" * 19
    protocol.data_received(head + b"\r\n")
    await until(lambda: transport.writes)
    assert transport.writes[0].startswith(b"HTTP/1.1 200 ")
    protocol.data_received(head + b"a: b\r\n\r\n")
    assert transport.writes[-1].startswith(b"HTTP/1.1 431 ") and transport.closed


async def test_a_response_for_a_closing_transport_is_dropped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    protocol, transport = connect_in_process(long_polling=True, long_polling_timeout=0.05)
    protocol.data_received(request("GET", "/inbox", "r"))
    cycle = protocol.cycle  # type: ignore[attr-defined]
    protocol._head_timed_out()  # type: ignore[attr-defined]  # connection_lost comes a loop turn later
    await until(lambda: cycle.response_complete or cycle.disconnected)
    await until(lambda: not protocol.tasks)  # type: ignore[attr-defined]
    assert transport.writes == [] and cycle.disconnected
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_without_a_fenced_name_uvicorn_serves_with_its_own_protocol(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A uvicorn that renamed something the protocol uses: one warning, uvicorn's protocol, no 500."""
    assert fences.probe() == ()
    assert fences.http_protocol(HttpProtocol) is HttpProtocol
    monkeypatch.setattr(fences, "STATE_ATTRIBUTES", (*fences.STATE_ATTRIBUTES, "renamed_in_a_later_uvicorn"))
    with caplog.at_level(logging.WARNING, logger="inbox_asgi"):
        assert fences.http_protocol(HttpProtocol) == "httptools"
    [warning] = [record for record in caplog.records if record.name == "inbox_asgi"]
    assert "ServerState.renamed_in_a_later_uvicorn" in warning.getMessage()


class UpgradableTransport(RecordingTransport):
    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol


@pytest.mark.parametrize("ending", ["answered", "parked", "upgraded"])
async def test_a_closed_connection_is_freed_without_the_collector(
    ending: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No reference cycle outlives a connection, so its request head (up to -max-header-size)
    goes with it: the collector thresholds while serving (app.GC_THRESHOLD) rely on that."""
    monkeypatch.setattr(support, "RecordingTransport", UpgradableTransport)
    mailbox = build_mailbox(Settings())
    protocol, transport = connect_in_process(mailbox=mailbox, long_polling=True)
    if ending == "answered":
        await exchange(protocol, transport, request("POST", "/inbox?to=r", "s", b"hi"))
    elif ending == "parked":  # its client leaves while it waits
        protocol.data_received(request("GET", "/inbox", "r"))
        await until(lambda: mailbox._waiting == 1)  # type: ignore[attr-defined]
    else:  # the WebSocket protocol takes the transport over
        protocol.data_received(
            b"GET /inbox/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert isinstance(transport.protocol, WebSocketProtocol)  # type: ignore[attr-defined]
    gone = weakref.ref(protocol)
    gc.disable()
    try:
        if ending != "upgraded":
            protocol.connection_lost(None)
        del protocol
        await until(lambda: mailbox._waiting == 0)  # type: ignore[attr-defined]
        await asyncio.sleep(0)  # the request's task ends
        assert gone() is None, "the protocol waits for the collector"
    finally:
        gc.enable()
    await mailbox.aclose()


async def test_reading_paused_for_a_big_body_resumes_when_its_response_completes() -> None:
    """A body over the high-water mark in one read pauses reading; the app reads it whole and
    never calls receive() again, so the response's completion must resume reading."""
    protocol, transport = connect_in_process(max_body_size=200_000)
    protocol.data_received(request("POST", "/inbox?to=nobody", "s", b"x" * 150_000))
    assert not transport.reading
    await until(lambda: statuses(transport.writes) == [404])
    assert transport.reading
    protocol.data_received(request("GET", "/inbox", "s"))
    await until(lambda: statuses(transport.writes) == [404, 204])


async def test_one_task_serves_a_connections_requests_and_ends_when_it_closes() -> None:
    protocol: Any
    protocol, transport = connect_in_process()
    await exchange(protocol, transport, request("GET", "/inbox", "r"))
    [task] = protocol.tasks
    for _ in range(3):
        await exchange(protocol, transport, request("POST", "/inbox?to=r", "s", b"x"))
        assert protocol.tasks == {task}  # no task per request
    protocol.connection_lost(None)
    await until(lambda: not protocol.tasks)  # done, and discarded from the server's tasks
    assert task.done() and task.exception() is None


async def test_a_connections_task_cancelled_mid_request_is_replaced_by_the_next_request() -> None:
    mailbox = build_mailbox(Settings())
    protocol: Any
    protocol, transport = connect_in_process(mailbox=mailbox, long_polling=True)
    protocol.data_received(request("GET", "/inbox", "r"))  # parks
    await until(lambda: mailbox._waiting == 1)  # type: ignore[attr-defined]
    [task] = protocol.tasks
    task.cancel()  # as uvicorn does to what is left when it is forced to exit
    await until(lambda: task.done() and not protocol.tasks)
    assert statuses(transport.writes) == [500] and transport.closed
    await mailbox.aclose()


async def test_a_body_of_one_byte_chunks_costs_cpu_in_proportion_to_its_size() -> None:
    """Body pieces the app has not read yet are gathered without copying all so far per piece
    (bytes += bytes did: 160k one-byte chunks in one read cost 16x what 40k cost, not 4x)."""

    def cpu_to_parse(chunks: int) -> float:
        protocol, _ = connect_in_process(max_body_size=10_000_000)
        head = request("POST", "/inbox?to=r", "s")
        protocol.data_received(head.replace(b"Content-Length: 0", b"Transfer-Encoding: chunked"))
        body = b"1\r\nx\r\n" * chunks
        started = time.process_time()
        protocol.data_received(body)
        spent = time.process_time() - started
        protocol.connection_lost(None)
        return spent

    cpu_to_parse(10_000)  # warm-up
    small, large = cpu_to_parse(40_000), cpu_to_parse(160_000)
    assert large < 6 * small, (small, large)
