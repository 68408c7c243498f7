"""Private redis-servers for the tests: free ports, no persistence unless asked, killed by PID.

Never the system Redis: every test talks to a server started here. A test run
that cannot start one fails (it does not skip): CI must install redis-server.
A Redis Cluster (three primaries, `RedisCluster`) that cannot start fails the
run under CI (env CI=true) and skips its tests, with the reason, elsewhere.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

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
        directory.mkdir(parents=True, exist_ok=True)
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


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port P whose cluster bus port P + 10000 is free too (so P <= 55535)."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        if _free(port) and _free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisCluster:
    """Three redis-servers in cluster mode, every slot assigned, no replicas.

    `cluster-require-full-coverage no`: while one node is down the others keep
    serving their slots (what inbox-asgi's docs recommend), and a short node
    timeout so a restarted node is taken back quickly.
    """

    OPTIONS = (
        "--cluster-enabled", "yes",
        "--cluster-node-timeout", "2000",
        "--cluster-require-full-coverage", "no",
    )  # fmt: skip

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.nodes = []
        for _ in range(size):
            port = cluster_port()
            options = (*self.OPTIONS, "--cluster-config-file", f"nodes-{port}.conf")
            self.nodes.append(RedisServer(directory / str(port), port, options))

    @property
    def url(self) -> str:
        """The first node's URL: inbox-asgi finds the rest."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        create = [
            "redis-cli", "--cluster", "create",
            *(f"127.0.0.1:{node.port}" for node in self.nodes),
            "--cluster-replicas", "0", "--cluster-yes",
        ]  # fmt: skip
        done = subprocess.run(create, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
        wait_until(self.healthy, timeout=20)
        return self

    def healthy(self) -> bool:
        """Every node sees the cluster as ok."""
        try:
            for node in self.nodes:
                with node.client() as client:
                    if client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                        return False
        except redis.RedisError:
            return False
        return True

    def node_of(self, key: bytes) -> RedisServer:
        """The node serving a key's slot."""
        with self.nodes[0].client() as client:
            slot = int(client.execute_command("CLUSTER KEYSLOT", key))
            for first, last, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                if first <= slot <= last:
                    return next(node for node in self.nodes if node.port == int(primary[1]))
        raise AssertionError(f"slot of {key!r} not served")

    def flush(self) -> None:
        for node in self.nodes:
            with node.client() as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
            node.kill()


def start_cluster_or_skip(directory: Path) -> RedisCluster:
    """A running cluster; without one the tests skip (with the reason), except under CI, where they fail."""
    cluster = RedisCluster(directory)
    try:
        if shutil.which("redis-cli") is None:
            raise RuntimeError("redis-cli is not installed")
        return cluster.start()
    except (
        RuntimeError,
        OSError,
        subprocess.SubprocessError,
        AssertionError,
        pytest.fail.Exception,
    ) as error:
        cluster.stop()
        reason = f"cannot start a 3-node Redis Cluster: {error}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """One private 3-node Redis Cluster for the session; tests flush it before use."""
    with tempfile.TemporaryDirectory(prefix="inbox-cluster-") as directory:
        cluster = start_cluster_or_skip(Path(directory))
        try:
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A cluster for one test alone (tests that stop and restart a node)."""
    cluster = start_cluster_or_skip(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


@contextlib.asynccontextmanager
async def running(boxes: Sequence[Any]) -> AsyncIterator[None]:
    """Run each RedisMailbox's upkeep until the block ends, each subscribed before it starts; closed after."""
    try:
        async with anyio.create_task_group() as tasks:
            for box in boxes:
                tasks.start_soon(box.run)
            await until(lambda: all(box.subscribed for box in boxes))
            yield
            tasks.cancel_scope.cancel()
    finally:
        for box in boxes:
            await box.aclose()
