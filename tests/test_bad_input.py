"""SPEC section 6 over the wire: every malformed request gets a 4xx and the server keeps serving."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable, Iterator

import pytest

from .support import ServerProcess, basic, start_server, tls_socket


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tls_files: tuple[str, str, str]
) -> Iterator[ServerProcess]:
    process = start_server(
        ["-max-header-size", "8192", "-max-body-size", "1024", "-max-inboxes", "50", "-long-polling=false"],
        cwd=tmp_path_factory.mktemp("bad-input"),
        tls=tls_files,
    )
    yield process
    process.stop()


def exchange(server: ServerProcess, data: bytes) -> bytes:
    """Send raw bytes on a fresh TLS connection; return the response head (or b'' if closed)."""
    with tls_socket(server) as sock:
        sock.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            received += chunk
        return received


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    return int(answer.split()[1])


def auth(raw: bytes) -> bytes:
    return b"Authorization: Basic " + base64.b64encode(raw) + b"\r\n"


CASES = {
    "no credentials": b"GET /inbox HTTP/1.1\r\nHost: x\r\n\r\n",
    "not basic": b"GET /inbox HTTP/1.1\r\nHost: x\r\nAuthorization: Digest abc\r\n\r\n",
    "bad base64": b"GET /inbox HTTP/1.1\r\nHost: x\r\nAuthorization: Basic ***\r\n\r\n",
    "non-utf8 username": b"GET /inbox HTTP/1.1\r\nHost: x\r\n" + auth(b"\xc3\x28:pw") + b"\r\n",
    "control char in username": b"GET /inbox HTTP/1.1\r\nHost: x\r\n" + auth(b"a\x1bb:pw") + b"\r\n",
    "empty username": b"GET /inbox HTTP/1.1\r\nHost: x\r\n" + auth(b":pw") + b"\r\n",
    "non-utf8 recipient": b"POST /inbox?to=%ff HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
    + auth(b"a:b")
    + b"\r\n",
    "broken escape": b"GET /inbox?x=%zz HTTP/1.1\r\nHost: x\r\n" + auth(b"a:b") + b"\r\n",
    "declared huge body": b"POST /inbox?to=a HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n"
    + auth(b"a:b")
    + b"\r\n",
    "huge header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"j" * 20000 + b"\r\n\r\n",
    "many headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 3000 + b"\r\n",
    "unknown method": b"BREW /inbox HTTP/1.1\r\nHost: x\r\n\r\n",
    "head": b"HEAD /inbox HTTP/1.1\r\nHost: x\r\n" + auth(b"a:b") + b"\r\n",
    "delete": b"DELETE /inbox HTTP/1.1\r\nHost: x\r\n\r\n",
    "raw traversal": b"GET /../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    "encoded traversal": b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    "garbage request line": b"\x16\x03\x01 nonsense\r\n\r\n",
    "bad content-length": b"POST /inbox?to=a HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "bad chunked body": b"POST /inbox?to=a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    + auth(b"a:b")
    + b"\r\nzz\r\nhello\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_request_gets_4xx_and_server_keeps_serving(server: ServerProcess, name: str) -> None:
    answer = exchange(server, CASES[name])
    assert 400 <= status_of(answer) < 500, answer[:200]
    assert b"Traceback" not in answer
    with server.client() as client:
        assert client.get("/healthz").status_code == 200


def test_millions_of_names_are_bounded_by_max_inboxes(server: ServerProcess) -> None:
    with server.client() as client:
        statuses = [client.get("/inbox", headers=basic(f"flood-{i}")).status_code for i in range(60)]
        assert statuses.count(503) >= 10  # the 50-inbox cap (a few may be held by other cases)
        assert set(statuses) <= {204, 503}
        assert client.get("/inbox", headers=basic("flood-0")).status_code == 204  # existing ones work


def test_flood_into_one_inbox_is_bounded_by_capacity(real_server: Callable[..., ServerProcess]) -> None:
    server = real_server("-long-polling=false")
    with server.client() as client:
        client.get("/inbox", headers=basic("target"))
        statuses = [
            client.post("/inbox?to=target", headers=basic("flooder"), content=b"x").status_code
            for _ in range(110)
        ]
        assert statuses[:100] == [200] * 100
        assert set(statuses[100:]) == {503}
        # Nothing accepted is lost: all 100 are still there, in order.
        bodies = [client.get("/inbox", headers=basic("target")) for _ in range(101)]
        assert [r.status_code for r in bodies] == [200] * 100 + [204]
