"""Helpers shared by the test modules: real server processes, polling, credentials."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from uvicorn.server import ServerState

from inbox_asgi.app import create_app
from inbox_asgi.config import Settings
from inbox_asgi.mailbox.interface import Mailbox
from inbox_asgi.server.protocol import HttpProtocol

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


class ManualClock:
    """A clock a test moves by hand (`clock.now += 61`), for code that takes a `clock`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def basic(username: str, password: str = "secret") -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Poll `check` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {check}")
        time.sleep(interval)


@dataclass
class ServerProcess:
    """An `inbox-asgi` subprocess; `stop()` sends SIGTERM and waits for the exit code."""

    process: subprocess.Popen[bytes]
    base_url: str
    ca_path: str | None
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=self.ca_path) if self.ca_path else False

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.base_url.rsplit("/", 1)[1].rsplit(":", 1)
        return host, int(port)

    async def raw_status(self, request: bytes) -> int:
        """Send one raw request on a new connection and return the status code.

        Far lighter than httpx, so a test can hold thousands of requests open.
        """
        host, port = self.address
        context = ssl.create_default_context(cafile=self.ca_path) if self.ca_path else None
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
        try:
            writer.write(request)
            status_line = await reader.readline()
            return int(status_line.split()[1])
        finally:
            writer.close()

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, verify=self.verify, **kwargs)  # type: ignore[arg-type]

    def async_client(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, verify=self.verify, **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"server did not exit within {timeout} s\n{self.log()}") from None
        return self.process.returncode


@dataclass
class RawResponse:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


class RawConnection:
    """A minimal keep-alive HTTP/1.1 client over asyncio streams.

    httpx spends most of a test's CPU once hundreds of connections are open;
    this one costs next to nothing, so load tests measure the server.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: ServerProcess) -> RawConnection:
        host, port = server.address
        context = ssl.create_default_context(cafile=server.ca_path) if server.ca_path else None
        return cls(*await asyncio.open_connection(host, port, ssl=context))

    async def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes = b""
    ) -> RawResponse:
        self.send_request(method, target, headers, body)
        return await self.read_response()

    def send_request(self, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> None:
        lines = [f"{method} {target} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    async def read_response(self) -> RawResponse:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].split(b"\r\n")
        parsed = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            parsed[name.strip().lower()] = value.strip()
        content = await self.reader.readexactly(int(parsed.get(b"content-length", b"0")))
        return RawResponse(int(status_line.split()[1]), parsed, content)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()


@contextlib.contextmanager
def tls_socket(server: ServerProcess) -> Iterator[ssl.SSLSocket]:
    """A blocking TLS connection to the server, verified against its CA."""
    host, port = server.address
    context = ssl.create_default_context(cafile=server.ca_path)
    with (
        socket.create_connection((host, port), timeout=10) as plain,
        context.wrap_socket(plain, server_hostname=host) as sock,
    ):
        yield sock


def metric(server: ServerProcess, name: str) -> float:
    """One value from the server's /metrics (started with -metrics)."""
    text = httpx.get(f"{server.base_url}/metrics", verify=server.verify).text
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


def server_command(flags: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "inbox_asgi", *flags]


def run_cli(flags: Sequence[str], cwd: Path, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion (for start-up errors)."""
    return subprocess.run(
        server_command(flags), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=clean_env()
    )


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without INBOX_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOX_")}
    env.update(extra or {})
    return env


def start_server(
    flags: Sequence[str],
    *,
    cwd: Path,
    tls: tuple[str, str, str] | None,
    env: dict[str, str] | None = None,
    startup_timeout: float = 20.0,
    preexec_fn: Callable[[], None] | None = None,
) -> ServerProcess:
    """Start `inbox-asgi` on a free port; `tls` is (cert, key, ca) or None for plain HTTP.

    `preexec_fn` runs in the child before it starts (e.g. to lower a resource limit).
    """
    port = free_port()
    args = ["-bind", f"127.0.0.1:{port}", "-log-level", "warning", *flags]
    if tls is None:
        args += ["-https=false"]
        scheme, ca = "http", None
    else:
        cert, key, ca = tls
        args += ["-server-cert", cert, "-server-key", key]
        scheme = "https"
    log_path = cwd / f"server-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            server_command(args),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(env),
            preexec_fn=preexec_fn,
        )
    server = ServerProcess(process, f"{scheme}://127.0.0.1:{port}", ca, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            return httpx.get(f"{server.base_url}/healthz", verify=server.verify, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout=startup_timeout, interval=0.05)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    return server


# -- in-process: inbox-asgi's protocol over a recording transport -------------------------


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def connect_in_process(
    mailbox: Mailbox | None = None, **settings: Any
) -> tuple[asyncio.Protocol, RecordingTransport]:
    configured = Settings(**{"long_polling": False, **settings})
    app = create_app(configured, mailbox=mailbox)
    HttpProtocol.configure(configured)
    config = uvicorn.Config(
        app, http=HttpProtocol, log_level="warning", lifespan="off", access_log=False
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


async def until(check: Callable[[], T], timeout: float = 5.0) -> T:
    """Let the loop run (the app's tasks, a Redis round trip) until `check` holds, or fail."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {check}")
        await asyncio.sleep(0)
    return result


async def exchange(protocol: asyncio.Protocol, transport: RecordingTransport, raw: bytes) -> list[bytes]:
    """Feed one request; return the writes its response took."""
    before = len(transport.writes)
    protocol.data_received(raw)
    cycle = protocol.cycle  # type: ignore[attr-defined]
    await until(lambda: cycle.response_complete)
    return transport.writes[before:]


class UpgradeStrippingProxy:
    """A TCP proxy that, like an old HTTP proxy, drops the Upgrade and Connection headers.

    A WebSocket handshake then reaches the server as a plain GET and fails; every
    other request passes through unchanged.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.upgrades_refused = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            if any(line.lower().startswith(b"upgrade:") for line in lines):
                self.upgrades_refused += 1
                kept = [line for line in lines if not line.lower().startswith((b"upgrade:", b"connection:"))]
                head = b"\r\n".join([*kept[:1], b"Connection: close", *kept[1:]])
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            up_writer.write(head)

            async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
                with contextlib.suppress(Exception):
                    while data := await source.read(65536):
                        sink.write(data)
                        await sink.drain()
                with contextlib.suppress(Exception):
                    sink.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except Exception:
            writer.close()


def memory_bytes(pid: int, field: str = "VmRSS") -> int:
    """A process's memory from /proc, in bytes: VmRSS resident now, VmHWM its peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} line")
