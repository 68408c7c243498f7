"""What each server process sets up for itself: logging, limits and TLS in `-workers`, the uvicorn fence."""

from __future__ import annotations

import ast
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import httpx
import pytest

from ..redis_support import RedisServer
from ..support import ROOT, ServerProcess, basic, clean_env, free_port, start_server, wait_until

SRC = ROOT / "src" / "inbox_asgi"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>[\w.]+): ", re.M)


@pytest.fixture(scope="module")
def workers(
    tmp_path_factory: pytest.TempPathFactory, tls_files: tuple[str, str, str], redis_server: RedisServer
) -> Iterator[ServerProcess]:
    """Two worker processes, spawned: everything they know comes from INBOX_* variables."""
    flags = ["-workers", "2", "-redis-url", redis_server.url, "-access-log", "-log-level", "warning"]
    flags += ["-header-timeout", "1", "-max-header-count", "20"]
    process = start_server(flags, cwd=tmp_path_factory.mktemp("workers"), tls=tls_files)
    yield process
    process.stop()


def test_workers_bound_tls_handshakes_by_header_timeout(workers: ServerProcess) -> None:
    with socket.create_connection(workers.address, timeout=10) as sock:
        started = time.monotonic()
        sock.settimeout(5)
        with suppress(ConnectionResetError):
            assert sock.recv(1) == b""
        assert time.monotonic() - started < 2.5


def test_workers_take_their_limits_from_the_settings(workers: ServerProcess) -> None:
    with workers.client() as client:
        for _ in range(4):  # likely both workers
            assert client.get("/healthz", headers={f"x-{n}": "1" for n in range(10)}).status_code == 200
            assert client.get("/healthz", headers={f"x-{n}": "1" for n in range(25)}).status_code == 431


def test_workers_log_through_the_configured_format(workers: ServerProcess) -> None:
    """-log-level warning, yet -access-log's lines at INFO, from the worker processes."""
    with workers.client() as client:
        assert client.post("/inbox?to=nobody", headers=basic("logged")).status_code == 404
    line = wait_until(lambda: re.search(r"^.*inbox_asgi\.access: .*user=logged.*$", workers.log(), re.M))
    assert LOG_LINE.match(line.group(0)), line.group(0)
    assert "Traceback" not in workers.log()


def test_the_cli_logs_its_settings_in_the_configured_format(tmp_path: Path) -> None:
    server = start_server(["-log-level", "info"], cwd=tmp_path, tls=None)
    try:
        wait_until(lambda: "Application startup complete" in server.log())
    finally:
        server.stop()
    loggers = {match["logger"] for match in LOG_LINE.finditer(server.log())}
    assert {"inbox_asgi", "uvicorn.error"} <= loggers, server.log()
    assert re.search(r"INFO inbox_asgi:   open-files\s+\d+$", server.log(), re.M)


def test_plain_uvicorn_still_shows_inbox_asgi_warnings(tmp_path: Path) -> None:
    """`uvicorn inbox_asgi:app` keeps uvicorn's logging; a warning of ours still reaches stderr."""
    port = free_port()
    env = clean_env({"INBOX_PUBLIC": str(tmp_path / "no-such-directory")})
    command = [sys.executable, "-m", "uvicorn", "inbox_asgi:app", "--port", str(port)]
    with subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) as process:
        try:
            wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz") or process.poll() is not None)
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=10)
    assert "no-such-directory" in stderr and "does not exist" in stderr, stderr


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_building_the_app_imports_no_uvicorn_protocol() -> None:
    """The app runs under any ASGI server: only inbox_asgi.server may lean on uvicorn's internals."""
    code = (
        "import sys\n"
        "from inbox_asgi.app import create_app\n"
        "from inbox_asgi.config import Settings\n"
        "create_app(Settings())\n"
        "print(sorted(m for m in sys.modules if m.startswith(('uvicorn.protocols', 'inbox_asgi.server'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), timeout=60, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_only_the_server_package_imports_uvicorn() -> None:
    """Outside inbox_asgi.server, uvicorn appears only as cli's public `uvicorn.run`."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if SRC / "server" in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                if name.split(".")[0] == "uvicorn" and (path.name, name) != ("cli.py", "uvicorn"):
                    offenders.append(f"{path.relative_to(SRC)}: {name}")
    assert offenders == []
