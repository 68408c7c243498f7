"""Slowloris: clients that trickle their head or body are cut off and block nobody."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable

import pytest

from .support import ServerProcess, basic, tls_socket

Start = Callable[..., ServerProcess]


def closed_by_server(sock: ssl.SSLSocket, trickle: bytes, deadline: float) -> bytes:
    """Send `trickle` every 0.2 s until the server closes; return what it answered."""
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            answer = sock.recv(4096)
            return answer  # b"" (closed) or a response
        except TimeoutError:
            pass
        try:
            sock.sendall(trickle)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return b""
    raise AssertionError("the server kept the slow connection open")


@pytest.fixture
def server(real_server: Start) -> ServerProcess:
    return real_server("-header-timeout", "1", "-body-timeout", "1")


def test_trickled_head_is_cut_off_and_blocks_nobody(server: ServerProcess) -> None:
    with tls_socket(server) as slow, server.client() as other:
        started = time.monotonic()
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert other.get("/healthz").status_code == 200  # served while the slow one trickles
        closed_by_server(slow, b"X-Slow: 1\r\n", deadline=started + 5)
        assert time.monotonic() - started < 3


def test_silent_connection_is_closed(server: ServerProcess) -> None:
    with tls_socket(server) as silent:
        started = time.monotonic()
        assert closed_by_server(silent, b"", deadline=started + 5) == b""
        assert time.monotonic() - started < 3


def test_trickled_body_gets_408(server: ServerProcess) -> None:
    auth = basic("slow")["Authorization"].encode()
    with tls_socket(server) as slow, server.client() as other:
        started = time.monotonic()
        slow.sendall(b"POST /inbox?to=x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n")
        slow.sendall(b"Authorization: " + auth + b"\r\n\r\n" + b"a" * 10)
        assert other.get("/healthz").status_code == 200
        answer = closed_by_server(slow, b"a", deadline=started + 5)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 3
