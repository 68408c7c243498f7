"""SPEC section 6's limits over the wire: what one client can make a real server hold or do.

Each test attacks a real `inbox-asgi` process on loopback, bounded in requests
and time, and measures what the attack costs the server: its resident memory
(VmRSS from /proc) where memory is the point, or how long a connection it
refused stays open.
"""

from __future__ import annotations

import base64
import select
import socket
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest

from .support import (
    RawConnection,
    ServerProcess,
    basic,
    connect_in_process,
    memory_bytes,
    request,
    wait_until,
)
from .support import exchange as in_process_exchange

Start = Callable[..., ServerProcess]
MiB = 1024 * 1024
#: What an attack may add to the server's RSS when the limit holds: allocator slack,
#: not a copy of what was sent (the attacks below send 60-90 MiB).
RSS_SLACK = 16 * MiB

pytestmark = pytest.mark.anyio


def rss(server: ServerProcess) -> int:
    return memory_bytes(server.process.pid)


def cpu_seconds(server: ServerProcess) -> float:
    """User plus system CPU time the server process has used."""
    with open(f"/proc/{server.process.pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks (USER_HZ = 100)


async def rss_growth(
    server: ServerProcess, attack: Callable[[int], Awaitable[int]], count: int
) -> tuple[int, set[int]]:
    """The server's RSS growth over `count` attacks (after a warm-up), and their statuses.

    A closed connection's request head goes back at the server's next cyclic
    garbage collection, not at once, so a single sample can sit 30 MiB above
    the settled size. Both ends are therefore the lowest of several samples
    (the tail spans more requests than lie between two collections, and the
    server runs with MALLOC_ENV so freed buffers leave RSS at once): memory the
    server keeps grows with every request, and no sample undercuts it.
    """
    warm = []
    for number in range(WARM_UP):
        await attack(number)
        warm.append(rss(server))
    statuses = set()
    tail = []
    for number in range(WARM_UP, WARM_UP + count):
        statuses.add(await attack(number))
        if number >= WARM_UP + count - TAIL:
            tail.append(rss(server))
    return min(tail) - min(warm), statuses


WARM_UP = 5
TAIL = 40
#: glibc: every block over 64 KiB its own mapping, unmapped when freed. Without it the
#: threshold adapts upwards and freed request heads stay in the heap, so RSS would not
#: show what the server lets go of.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def authorization(username: str, password: str) -> bytes:
    return b"Authorization: Basic " + base64.b64encode(f"{username}:{password}".encode()) + b"\r\n"


async def exchange(server: ServerProcess, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """One raw request on a new connection: (status, response body)."""
    connection = await RawConnection.open(server)
    try:
        connection.writer.write(head + body)
        response = await connection.read_response()
        return response.status, response.body
    finally:
        await connection.close()


# -- 1. the stored Content-Type counts against -max-body-size ----------------------------


async def test_content_type_counts_against_max_body_size(real_server: Start) -> None:
    """One-byte bodies with ~900 KB Content-Types: refused, and the server does not grow.

    Before the fix each was stored (200) with its Content-Type, ~0.9 MB a message.
    """
    server = real_server("-long-polling=false", "-max-body-size", "10240", tls=False, env=MALLOC_ENV)
    with server.client() as client:
        assert client.get("/inbox", headers=basic("r")).status_code == 204
    content_type = b"application/x-" + b"a" * 900_000
    head = (
        b"POST /inbox?to=r HTTP/1.1\r\nHost: x\r\n"
        + authorization("s", "secret")
        + b"Content-Type: "
        + content_type
        + b"\r\nContent-Length: 1\r\n\r\n"
    )

    async def send(number: int) -> int:
        return (await exchange(server, head, b"x"))[0]

    grown, statuses = await rss_growth(server, send, 100)
    assert grown < RSS_SLACK, f"RSS grew {grown / MiB:.1f} MiB over 100 messages"
    assert statuses == {413}


# -- 2. no credentials cache ---------------------------------------------------------------


async def test_big_wrong_passwords_leave_no_trace_in_memory(real_server: Start) -> None:
    """~700 KB wrong passwords, each different: 401, and the server's RSS stays flat.

    Before the fix auth's lru_cache kept every header and its decoded password.
    """
    server = real_server("-long-polling=false", tls=False, env=MALLOC_ENV)
    async with server.async_client() as client:
        assert (await client.get("/inbox", headers=basic("victim", "right"))).status_code == 204

        async def guess(number: int) -> int:
            password = f"{number:08d}" + "p" * 700_000
            return (await client.get("/inbox", headers=basic("victim", password))).status_code

        grown, statuses = await rss_growth(server, guess, 60)
        assert (await client.get("/inbox", headers=basic("victim", "right"))).status_code == 204
    assert grown < RSS_SLACK, f"RSS grew {grown / MiB:.1f} MiB over 60 wrong passwords"
    assert statuses == {401}


# -- 3. two Authorization headers ----------------------------------------------------------


async def test_two_authorization_headers_get_400_and_touch_nothing(real_server: Start) -> None:
    server = real_server("-long-polling=false", "-access-log", tls=False)
    with server.client() as client:
        assert client.get("/inbox", headers=basic("owner", "right")).status_code == 204
    two = authorization("owner", "right") + authorization("intruder", "pw")
    get = b"GET /inbox HTTP/1.1\r\nHost: x\r\n" + two + b"\r\n"
    post = b"POST /inbox?to=owner HTTP/1.1\r\nHost: x\r\n" + two + b"Content-Length: 5\r\n\r\nhello"
    assert await exchange(server, get) == (400, b"two Authorization headers\n")
    assert await exchange(server, post) == (400, b"two Authorization headers\n")
    with server.client() as client:
        # Nothing was delivered, and the intruder's name was not claimed.
        assert client.get("/inbox", headers=basic("owner", "right")).status_code == 204
        assert client.post("/inbox?to=intruder", headers=basic("owner", "right")).status_code == 404

    def refused_lines() -> list[str]:
        lines = [line for line in server.log().splitlines() if "status=400" in line]
        return lines if len(lines) == 2 else []

    for line in wait_until(refused_lines):
        assert " user=- " in line, line


# -- 4. a 413 decided from Content-Length closes the connection -------------------------


def test_413_from_content_length_closes_instead_of_draining(real_server: Start) -> None:
    """A 100 MB declared body, streamed: 413 at once, then the server closes the connection.

    Before the fix the connection stayed open and the server read and dropped the
    whole body (at full CPU) before it would answer anything else on it.
    """
    server = real_server("-long-polling=false", "-max-body-size", "1024", tls=False)
    with server.client() as client:
        assert client.get("/inbox", headers=basic("r")).status_code == 204
    declared = 100_000_000
    head = (
        b"POST /inbox?to=r HTTP/1.1\r\nHost: x\r\n"
        + authorization("s", "secret")
        + b"Content-Length: %d\r\n\r\n" % declared
    )
    chunk = b"x" * 65536
    received = b""
    sent = 0
    closed = False
    cpu_before = cpu_seconds(server)
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        started = time.monotonic()
        deadline = started + 5
        sending = True
        while not closed and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock] if sending else [], [], 0.1)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                received += data
                closed = not data
            if writable:
                try:
                    sent += sock.send(chunk[: declared - sent])
                except (BrokenPipeError, ConnectionResetError):
                    sending = False  # the server is gone; read what it said
                sending = sending and sent < declared
        elapsed = time.monotonic() - started
    cpu = cpu_seconds(server) - cpu_before
    assert received.startswith(b"HTTP/1.1 413 "), received[:200]
    assert closed, (
        f"still open after {elapsed:.1f} s, {sent / MiB:.0f} MiB of body sent, {cpu:.1f} s server CPU"
    )
    assert elapsed < 2, f"closed only after {elapsed:.1f} s"
    assert b"connection: close" in received.lower()
    with server.client() as client:
        assert client.get("/healthz").status_code == 200


async def test_413_from_content_length_closes_in_process() -> None:
    """The same through uvicorn's protocol on a recording transport: the close is the server's."""
    protocol, transport = connect_in_process(max_body_size=1024)
    head = b"POST /inbox?to=s HTTP/1.1\r\nHost: x\r\n" + authorization("s", "secret")
    writes = await in_process_exchange(protocol, transport, head + b"Content-Length: 100000000\r\n\r\n")
    assert writes[0].startswith(b"HTTP/1.1 413 ")
    assert transport.closed


@pytest.mark.parametrize(("body", "status"), [(b"x" * 10, 200), (b"x" * 11, 413)])
async def test_content_type_counts_for_a_body_already_in(body: bytes, status: int) -> None:
    """The hot path that takes a complete body without `receive` applies the same limit."""
    protocol, transport = connect_in_process(max_body_size=20)
    await in_process_exchange(protocol, transport, request("GET", "/inbox", "r"))
    head = b"POST /inbox?to=r HTTP/1.1\r\nHost: x\r\n" + authorization("s", "secret")
    head += b"Content-Type: text/x-abc\r\nContent-Length: %d\r\n\r\n" % len(body)
    writes = await in_process_exchange(protocol, transport, head + body)
    assert writes[0].startswith(b"HTTP/1.1 %d " % status)


# -- 5. inboxes per client IP -----------------------------------------------------------------


def test_max_inboxes_per_ip_counts_each_client_address(real_server: Start) -> None:
    """With -max-inboxes-per-ip 3 a fourth new name from 127.0.0.1 is refused; 127.0.0.2 is not."""
    server = real_server("-long-polling=false", "-max-inboxes-per-ip", "3", tls=False)
    with server.client() as local:
        assert [local.get("/inbox", headers=basic(f"name-{i}")).status_code for i in range(3)] == [204] * 3
        refused = local.get("/inbox", headers=basic("name-3"))
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert local.get("/inbox", headers=basic("name-0")).status_code == 204  # its own still open
    other_address = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=server.base_url, transport=other_address) as other:
        sent = other.post("/inbox?to=name-0", headers=basic("elsewhere"), content=b"hi")
        assert sent.status_code == 200, sent.text


# -- 6. an idle keep-alive connection keeps nothing of its last request -------------------


async def test_idle_keep_alive_connections_let_go_of_their_last_request_head(real_server: Start) -> None:
    """60 connections each send one request with a 500 KB head, are answered, and stay open.

    Each would hold its head (30 MB in all) until its next request or -keep-alive-timeout
    if the protocol kept its last request; idle, it keeps nothing of it.
    """
    server = real_server("-long-polling=false", tls=False, env=MALLOC_ENV)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 500_000 + b"\r\n\r\n"
    idle: list[RawConnection] = []

    async def send(number: int) -> int:
        connection = await RawConnection.open(server)
        idle.append(connection)
        connection.writer.write(head)
        return (await connection.read_response()).status

    try:
        assert {await send(number) for number in range(WARM_UP)} == {200}
        before = rss(server)
        assert {await send(number) for number in range(60)} == {200}
        grown = rss(server) - before
        assert grown < RSS_SLACK, f"RSS grew {grown / MiB:.1f} MiB over 60 idle connections"
        for connection in idle:  # every one still open and serving
            assert (await connection.request("GET", "/healthz", {})).status == 200
    finally:
        for connection in idle:
            await connection.close()
