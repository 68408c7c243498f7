"""SPEC section 6 over the wire: what one client can make a real server hold, or spend.

Each test attacks an `inbox-asgi` subprocess on loopback, bounded in time and
in bytes, and measures what the attack is about: the server's resident memory
(/proc/PID/status), its CPU time, or how long a bystander waits.
"""

from __future__ import annotations

import os
import re
import resource
import select
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import pytest

from ..support import ServerProcess, basic, memory_bytes, start_server, wait_until

Start = Callable[..., ServerProcess]
MiB = 1024 * 1024


def rss(server: ServerProcess) -> int:
    return memory_bytes(server.process.pid)


def cpu_seconds(server: ServerProcess) -> float:
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latency(server: ServerProcess, timeout: float = 30.0) -> float:
    """Seconds a bystander waits for GET /healthz on a new connection."""
    started = time.monotonic()
    with socket.create_connection(server.address, timeout=timeout) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 200 ")
    return time.monotonic() - started


def settled(server: ServerProcess, timeout: float = 60.0) -> int:
    """The server's RSS once it has caught up with its backlog (a bystander is served at once)."""
    wait_until(lambda: latency(server) < 0.05, timeout=timeout, interval=0.05)
    return rss(server)


def inbox_get(user: str) -> bytes:
    return f"GET /inbox HTTP/1.1\r\nHost: x\r\nAuthorization: {basic(user)['Authorization']}\r\n\r\n".encode()


def closed_or_answered(sock: socket.socket) -> bytes | None:
    """What the server sent (b"" once it closed), or None while it says nothing."""
    if not select.select([sock], [], [], 0)[0]:
        return None
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


# -- requests pipelined behind a long poll ------------------------------------------------

FLOODERS = 40
FLOOD = 256 * 1024


def test_requests_pipelined_behind_long_polls_are_held_not_parsed(real_server: Start) -> None:
    """Each client parks a long poll, then pipelines 256 KiB of tiny GETs behind it.

    uvicorn parsed every one as it arrived and queued its state (~2 KiB each,
    ~40x the bytes sent); the server holds one read's worth, then stops reading.
    """
    server = real_server(tls=False)
    clients = [socket.create_connection(server.address) for _ in range(FLOODERS)]
    try:
        for number, client in enumerate(clients):
            client.sendall(inbox_get(f"parked{number}"))
        before = settled(server)
        flood = inbox_get("flood") * (FLOOD // len(inbox_get("flood")))
        senders = [threading.Thread(target=_send_for, args=(client, flood, 5.0)) for client in clients]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        waited = latency(server)
        growth = settled(server) - before
        print(f"\npipelined flood: RSS +{growth / MiB:.1f} MiB, bystander waited {waited:.3f} s")
        assert growth < 40 * MiB, f"RSS grew by {growth / MiB:.0f} MiB"
        assert waited < 1.0
    finally:
        for client in clients:
            client.close()


def _send_for(sock: socket.socket, data: bytes, seconds: float) -> None:
    """Send what the server takes within `seconds` (a server that stops reading takes less)."""
    sock.settimeout(seconds)
    with suppress(OSError):
        sock.sendall(data)


# -- one header value, streamed -----------------------------------------------------------

STREAM_CHUNK = 1000
STREAM_MAX = 8 * MiB
#: Paces the attacker (not a synchronisation) so that most pieces reach the server
#: as reads of their own, as a slow attacker's would: each one costs httptools a copy
#: of the value so far.
STREAM_PACE = 0.0005


def test_one_header_value_streamed_is_cut_off_at_max_header_size(real_server: Start) -> None:
    """httptools gathers a header value until its line ends: count the raw bytes instead."""
    server = real_server("-header-timeout", "60", tls=False)
    before, cpu_before = settled(server), cpu_seconds(server)
    sent = 0
    answer: bytes | None = None
    with socket.create_connection(server.address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: ")
        deadline = time.monotonic() + 10
        with suppress(BrokenPipeError, ConnectionResetError):
            while sent < STREAM_MAX and time.monotonic() < deadline:
                answer = closed_or_answered(sock)
                if answer is not None:
                    break
                sock.sendall(b"v" * STREAM_CHUNK)
                sent += STREAM_CHUNK
                time.sleep(STREAM_PACE)
        if answer is None:
            answer = closed_or_answered(sock)
    growth, cpu = settled(server) - before, cpu_seconds(server) - cpu_before
    print(f"\nstreamed header: cut after {sent / MiB:.2f} MiB, RSS +{growth / MiB:.1f} MiB, CPU {cpu:.2f} s")
    assert answer is not None, f"still open after {sent / MiB:.1f} MiB"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert sent < 2 * MiB  # -max-header-size is 1 MiB
    assert growth < 5 * MiB
    assert cpu < 1.0


# -- 150,000 tiny header lines ------------------------------------------------------------

ATTACKERS = 4
LINES = 150_000
ATTACK_SECONDS = 3.0


def test_150k_header_lines_get_431_and_block_nobody(real_server: Start) -> None:
    """Each line is a parser callback into Python: -max-header-count stops them early."""
    server = real_server(tls=False)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"a:b\r\n" * LINES + b"\r\n"
    assert len(head) < MiB  # under -max-header-size
    answers: list[bytes] = []
    stop = threading.Event()

    def attack() -> None:
        while not stop.is_set():
            with socket.create_connection(server.address, timeout=10) as sock:
                with suppress(OSError):
                    sock.sendall(head)
                with suppress(OSError):
                    answers.append(sock.recv(64))

    attackers = [threading.Thread(target=attack) for _ in range(ATTACKERS)]
    for attacker in attackers:
        attacker.start()
    waits = []
    try:
        deadline = time.monotonic() + ATTACK_SECONDS
        while time.monotonic() < deadline:
            waits.append(latency(server))
    finally:
        stop.set()
        for attacker in attackers:
            attacker.join()
    mean = sum(waits) / len(waits)
    print(f"\n150k header lines: bystander waited {mean:.3f} s on average, {max(waits):.3f} s at most")
    assert answers and all(answer.startswith(b"HTTP/1.1 431 ") for answer in answers if answer), answers[:3]
    assert max(waits) < 0.25


# -- TLS handshakes ---------------------------------------------------------------------


def test_a_silent_tls_client_is_cut_off_after_header_timeout(real_server: Start) -> None:
    """uvloop gives a TLS handshake 60 s by default; -header-timeout applies instead."""
    server = real_server("-header-timeout", "1")
    with socket.create_connection(server.address, timeout=10) as sock:
        started = time.monotonic()
        sock.settimeout(0.1)
        answer: bytes | None = None
        while answer is None and time.monotonic() < started + 5:
            with suppress(TimeoutError):
                try:
                    answer = sock.recv(1)
                except ConnectionResetError:
                    answer = b""
        waited = time.monotonic() - started
    print(f"\nsilent TLS client: closed after {waited:.2f} s")
    assert answer == b"", "the server kept a silent TLS connection open"
    assert waited < 2.5


# -- open files -------------------------------------------------------------------------


def test_the_soft_open_file_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"hard limit {hard}: nothing to raise to")

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    server = start_server([], cwd=tmp_path, tls=None, preexec_fn=low_soft_limit)
    try:
        limits = Path(f"/proc/{server.process.pid}/limits").read_text()
        [line] = [line for line in limits.splitlines() if line.startswith("Max open files")]
        in_force = line.split()[3]
        expected = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
        print(f"\nopen files: soft limit 256 at start, {in_force} in force")
        if hard != resource.RLIM_INFINITY:
            assert in_force == expected
    finally:
        server.stop()


# -- a long poll answered after its connection closed -------------------------------------


def test_no_traceback_when_a_long_poll_answers_a_closed_connection(real_server: Start) -> None:
    """A long poll, a request pipelined behind it, and the start of a third, then silence.

    uvicorn told only the newest request that the connection had closed: the long
    poll then wrote its 204 into a closed transport and logged a traceback.
    """
    server = real_server("-header-timeout", "1", "-long-polling-timeout", "2", tls=False)
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(inbox_get("closing"))
        sock.sendall(inbox_get("closing") + b"GET /inbox HTTP/1.1\r\nHost: x\r\n")
        received = b""
        with suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    assert set(re.findall(rb"HTTP/1.1 (\d+) ", received)) <= {b"204"}, received
    assert latency(server) < 1.0  # the server is past it; its log has it all
    assert "Traceback" not in server.log(), server.log()
