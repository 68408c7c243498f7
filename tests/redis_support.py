"""A private redis-server for the tests: a free port, no persistence unless asked, killed by PID.

Never the system Redis: every test talks to a server started here. A test run
that cannot start one fails (it does not skip): CI must install redis-server.
"""

from __future__ import annotations

import contextlib
import inspect
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import anyio
import pytest
import redis

from .support import free_port, wait_until


async def until(check: Callable[[], object], within: float = 5.0) -> None:
    """Poll a predicate (sync, or returning an awaitable) until it holds; fail after `within` s."""
    with anyio.fail_after(within):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await anyio.sleep(0.005)


class RedisServer:
    """`redis-server` on 127.0.0.1:<free port> with its files in `directory`, plus command-line `options`."""

    def __init__(self, directory: Path, port: int | None = None, options: Sequence[str] = ()) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.options = tuple(options)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / f"redis-{self.port}.log"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=5)

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server); Redis tests need it")
        command = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--dbfilename", f"dump-{self.port}.rdb",
            "--logfile", str(self.log_path),
            *self.options,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

        def answers() -> bool:
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(f"redis-server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with self.client() as client:
                    return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_until(answers, timeout=10)
        except AssertionError:
            self.kill()
            pytest.fail(f"redis-server did not answer on port {self.port}:\n{self.log()}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()

    def stop(self, save: bool = False) -> None:
        """Shut down (saving a snapshot first if `save`, so a restart keeps the data)."""
        if self.process is None or self.process.poll() is not None:
            return
        if save:
            # The server going away is the expected answer.
            with self.client() as client, contextlib.suppress(redis.ConnectionError):
                client.shutdown(save=True)
        else:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"redis-server did not stop:\n{self.log()}") from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private Redis for the session; tests flush it before use (see the backend fixture)."""
    with tempfile.TemporaryDirectory(prefix="inbox-redis-") as directory:
        server = RedisServer(Path(directory)).start()
        try:
            yield server
        finally:
            server.stop()
            server.kill()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis for one test alone (tests that stop and restart it)."""
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()
        server.kill()
