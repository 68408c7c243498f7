"""What only a real `inbox-asgi` process over real TLS shows."""

from __future__ import annotations

import asyncio
import signal
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from .support import RawConnection, ServerProcess, basic, metric, run_cli, tls_socket, wait_until

Start = Callable[..., ServerProcess]


def raw_request(server: ServerProcess, data: bytes) -> bytes:
    """Send bytes over a fresh TLS connection and return all the server answers."""
    with tls_socket(server) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_serves_verified_tls(real_server: Start) -> None:
    server = real_server()
    assert server.base_url.startswith("https://")
    with server.client() as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/").status_code == 200
    with pytest.raises(httpx.ConnectError):  # the client really checks the certificate
        httpx.get(f"{server.base_url}/healthz", verify=True)


def test_streamed_chunked_body_over_limit_is_413(real_server: Start) -> None:
    server = real_server("-max-body-size", "1000", "-long-polling=false")

    def body() -> Iterator[bytes]:
        for _ in range(100):
            yield b"y" * 100

    with server.client() as client:
        assert client.get("/inbox", headers=basic("r")).status_code == 204
        assert client.post("/inbox?to=r", headers=basic("s"), content=body()).status_code == 413
        assert client.post("/inbox?to=r", headers=basic("s"), content=b"z" * 1001).status_code == 413
        assert client.post("/inbox?to=r", headers=basic("s"), content=b"ok").status_code == 200
        assert client.get("/inbox", headers=basic("r")).content == b"ok"


def test_huge_header_is_431_and_server_keeps_serving(real_server: Start) -> None:
    server = real_server("-max-header-size", "4096")
    answer = raw_request(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431")
    with server.client() as client:
        assert client.get("/healthz", headers={"X-Fits": "a" * 2000}).status_code == 200


def test_client_disconnect_mid_long_poll_consumes_nothing(real_server: Start) -> None:
    server = real_server("-metrics")
    auth = basic("r")["Authorization"].encode()
    with tls_socket(server) as sock:
        sock.sendall(b"GET /inbox HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth + b"\r\n\r\n")
        wait_until(lambda: metric(server, "inbox_waiting_readers") == 1)
    wait_until(lambda: metric(server, "inbox_waiting_readers") == 0)
    with server.client() as client:
        assert client.post("/inbox?to=r", headers=basic("s"), content=b"survivor").status_code == 200
        response = client.get("/inbox", headers=basic("r"))
        assert (response.status_code, response.content) == (200, b"survivor")


@pytest.mark.anyio
async def test_sigterm_answers_waiting_readers_and_completes_posts(real_server: Start) -> None:
    server = real_server(
        "-metrics", "-long-polling-timeout", "60", "-inbox-capacity", "100000", "-max-inboxes-per-ip", "0"
    )
    readers = 1000
    statuses: list[int] = []
    post_outcomes: list[int | str] = []
    stopping = anyio.Event()

    async def read(i: int) -> None:
        auth = basic(f"r{i}")["Authorization"].encode()
        request = b"GET /inbox HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth + b"\r\n\r\n"
        statuses.append(await server.raw_status(request))

    async def send_until_refused(j: int) -> None:
        """Post on fresh connections until the server stops accepting them."""
        while True:
            try:
                connection = await RawConnection.open(server)
            except OSError:
                post_outcomes.append("refused")
                return
            try:
                response = await connection.request("POST", "/inbox?to=sink", basic(f"s{j}"), b"m")
                post_outcomes.append(response.status)
            except asyncio.IncompleteReadError as error:
                # Closed before answering is fine (nothing was accepted); half an answer is not.
                assert error.partial == b"", error.partial
                post_outcomes.append("closed")
            except (ConnectionResetError, ssl.SSLError):
                post_outcomes.append("closed")
            finally:
                await connection.close()
            if stopping.is_set() and post_outcomes[-1] != 200:
                return

    with server.client() as client:
        # Sending creates the sender's inbox without a long poll.
        assert client.post("/inbox?to=nobody", headers=basic("sink")).status_code == 404
    async with anyio.create_task_group() as tasks:
        for i in range(readers):
            tasks.start_soon(read, i)
        with anyio.fail_after(60):
            while metric(server, "inbox_waiting_readers") < readers:
                await anyio.sleep(0.1)
        for j in range(10):
            tasks.start_soon(send_until_refused, j)
        with anyio.fail_after(10):
            while len(post_outcomes) < 50:
                await anyio.sleep(0.01)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        stopping.set()
    answered_in = time.monotonic() - started
    code = await anyio.to_thread.run_sync(server.process.wait, 10)
    exited_in = time.monotonic() - started
    assert statuses == [204] * readers
    assert answered_in < 5, answered_in
    assert exited_in < 5, exited_in
    assert code == 0
    assert set(post_outcomes) <= {200, "refused", "closed"}, set(post_outcomes)
    assert post_outcomes.count(200) >= 50


def test_sigterm_with_idle_tls_keep_alive_connections_exits_quickly(real_server: Start) -> None:
    server = real_server()
    with server.client() as client:  # keeps its TLS connection open and idle
        assert client.get("/healthz").status_code == 200
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 4


def test_missing_certificate_is_a_clear_startup_error(tmp_path: Path) -> None:
    result = run_cli(["-bind", "127.0.0.1:0", "-server-cert", "nope.crt"], cwd=tmp_path)
    assert result.returncode == 2
    assert "nope.crt" in result.stderr
    assert "certs/README.md" in result.stderr
    assert "-https=false" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unreadable_key_is_a_clear_startup_error(tmp_path: Path, tls_files: tuple[str, str, str]) -> None:
    cert, _, _ = tls_files
    (tmp_path / "bad.key").write_text("not a key")
    result = run_cli(["-server-cert", cert, "-server-key", str(tmp_path / "bad.key")], cwd=tmp_path)
    assert result.returncode == 2
    assert "bad.key" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-max-body-size", "-5"], "max-body-size"),
        (["--bind", "not-an-address"], "bind"),
        (["-https=maybe"], "https"),
        (["--workers", "3"], "redis-url"),
        (["-no-such-flag"], "unrecognized"),
    ],
)
def test_invalid_flags_exit_2_with_a_message(tmp_path: Path, flags: list[str], message: str) -> None:
    result = run_cli(flags, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_go_style_flags(real_server: Start) -> None:
    server = real_server(
        "--inbox-capacity", "5", "-cors", "-long-polling=false", "--max-body-size=64", tls=False
    )
    assert server.base_url.startswith("http://")
    with server.client() as client:
        assert client.get("/inbox", headers=basic("r")).status_code == 204  # no waiting
        codes = [client.post("/inbox?to=r", headers=basic("s"), content=b"m").status_code for _ in range(6)]
        assert codes == [200] * 5 + [503]
        assert client.post("/inbox?to=r", headers=basic("s"), content=b"x" * 65).status_code == 413
        cors = client.get("/healthz", headers={"Origin": "https://a.example"})
        assert cors.headers["access-control-allow-origin"] == "*"


def test_environment_configures_the_server(real_server: Start) -> None:
    server = real_server(env={"INBOX_INBOX_CAPACITY": "1", "INBOX_LONG_POLLING": "false"})
    with server.client() as client:
        client.get("/inbox", headers=basic("r"))
        codes = [client.post("/inbox?to=r", headers=basic("s")).status_code for _ in range(2)]
        assert codes == [200, 503]


def test_self_signed_mode_serves_https(tmp_path: Path) -> None:
    from .support import free_port, server_command

    port = free_port()
    import subprocess

    log = tmp_path / "log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            server_command(["-self-signed", "-bind", f"127.0.0.1:{port}"]),
            cwd=tmp_path,
            stdout=out,
            stderr=out,
        )
    server = ServerProcess(process, f"https://127.0.0.1:{port}", None, log)
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{server.base_url}/healthz", verify=False).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, timeout=20)
        pem = ssl.get_server_certificate(("127.0.0.1", port))
        assert "BEGIN CERTIFICATE" in pem
        assert "self-signed" in server.log()
    finally:
        assert server.stop() == 0


def split_responses(data: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Consecutive HTTP/1.x responses off one connection (Content-Length bodies only)."""
    responses = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            assert name.lower() not in headers, f"{name!r} sent twice"
            headers[name.lower()] = value.strip()
        size = int(headers.get(b"content-length", b"0"))
        responses.append((int(status_line.split()[1]), headers, data[:size]))
        data = data[size:]
    return responses


def test_inbox_responses_on_the_wire_pipelined(real_server: Start) -> None:
    """The endpoint's one-write responses: exact headers, pipelining, Connection: close."""
    server = real_server("-long-polling=false")
    reader, sender = basic("r")["Authorization"].encode(), basic("s")["Authorization"].encode()
    requests = [
        b"GET /inbox HTTP/1.1\r\nHost: x\r\nAuthorization: " + reader + b"\r\n\r\n",
        b"POST /inbox?to=r HTTP/1.1\r\nHost: x\r\nAuthorization: " + sender
        + b"\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
        b"GET /inbox HTTP/1.1\r\nHost: x\r\nAuthorization: " + reader + b"\r\n\r\n",
        b"GET /inbox HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + reader + b"\r\n\r\n",
    ]  # fmt: skip
    responses = split_responses(raw_request(server, b"".join(requests)))  # returns once the server closes
    assert [status for status, _, _ in responses] == [204, 200, 200, 204]
    empty, posted, delivered, last = (headers for _, headers, _ in responses)
    for headers in (empty, last):
        assert b"content-length" not in headers and b"transfer-encoding" not in headers  # RFC 9110 §8.6
        assert headers[b"cache-control"] == b"no-store"
    assert posted[b"content-length"] == b"0"
    assert responses[2][2] == b'{"a":1}'
    assert delivered[b"x-from"] == b"s"
    assert delivered[b"content-type"] == b"application/json"
    assert delivered[b"content-length"] == b"7"
    assert all(b"date" in headers for headers in (empty, posted, delivered, last))  # uvicorn's defaults
    assert b"connection" not in delivered
    assert last[b"connection"] == b"close"


def test_http_1_0_request_gets_its_answer_and_a_close(real_server: Start) -> None:
    server = real_server("-long-polling=false")
    auth = basic("old")["Authorization"].encode()
    answer = raw_request(server, b"GET /inbox HTTP/1.0\r\nAuthorization: " + auth + b"\r\n\r\n")
    [(status, headers, _)] = split_responses(answer)
    assert status == 204
    assert headers[b"connection"] == b"close"


def test_inbox_responses_through_cors_middleware(real_server: Start) -> None:
    """With middleware wrapping `send`, responses go through ASGI and keep every header."""
    server = real_server("-cors", "https://app.example", "-long-polling=false")
    origin = {"Origin": "https://app.example"}
    with server.client() as client:
        empty = client.get("/inbox", headers={**basic("r"), **origin})
        posted = client.post("/inbox?to=r", headers={**basic("s"), **origin}, content=b"hi")
        delivered = client.get("/inbox", headers={**basic("r"), **origin})
    assert (empty.status_code, posted.status_code, delivered.status_code) == (204, 200, 200)
    assert "content-length" not in empty.headers
    assert delivered.content == b"hi"
    assert delivered.headers["x-from"] == "s"
    for response in (empty, posted, delivered):
        assert response.headers["access-control-allow-origin"] == "https://app.example"


def test_keep_alive_timeout_closes_only_an_idle_connection(real_server: Start) -> None:
    """-keep-alive-timeout counts from the end of the last response, however many came before."""
    server = real_server("-keep-alive-timeout", "1", "-long-polling=false")
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

    def healthz(sock: ssl.SSLSocket) -> bytes:
        sock.sendall(request)
        answer = b""
        while not answer.endswith(b"\r\n\r\nok\n") and (chunk := sock.recv(65536)):
            answer += chunk
        return answer

    with tls_socket(server) as busy, tls_socket(server) as idle:
        for sock in (busy, idle):
            assert healthz(sock).startswith(b"HTTP/1.1 200 ")
        idle_since = time.monotonic()
        # The busy one asks every 0.4 s for 2.4 s: past two keep-alive periods, never idle for one.
        for _ in range(6):
            time.sleep(0.4)
            assert healthz(busy).startswith(b"HTTP/1.1 200 "), "closed while in use"
        idle.settimeout(3)
        assert idle.recv(65536) == b""  # closed by the server (TLS: EOF, no answer)
        assert time.monotonic() - idle_since < 3.0
        busy.settimeout(3)
        busy_since = time.monotonic()
        assert busy.recv(65536) == b""
        assert 0.6 < time.monotonic() - busy_since < 2.0  # ~1 s after its last response
