from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from inbox_asgi.app import create_app
from inbox_asgi.config import Settings

from .redis_support import RedisServer, own_redis, redis_server
from .support import ServerProcess, start_server

__all__ = ["RedisServer", "own_redis", "redis_server"]  # fixtures shared with every test module

PUBLIC = Path(__file__).resolve().parents[1] / "public"
ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """A trustme CA and a server certificate for 127.0.0.1/localhost: (cert, key, ca)."""
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
    cert, key, ca_path = directory / "server.crt", directory / "server.key", directory / "ca.pem"
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(cert))
    server_cert.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_path))
    return str(cert), str(key), str(ca_path)


@pytest.fixture
def real_server(tls_files: tuple[str, str, str], tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: `real_server(*flags, tls=True, env=None)` starts inbox-asgi over verified TLS."""
    started: list[ServerProcess] = []

    def start(*flags: str, tls: bool = True, env: dict[str, str] | None = None) -> ServerProcess:
        server = start_server(flags, cwd=tmp_path, tls=tls_files if tls else None, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings that select a mailbox backend; protocol tests run once per backend.

    "redis" uses the session's private redis-server (tests/redis_support.py),
    emptied before each test.
    """
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        return {"redis_url": server.url}
    return {}


@pytest.fixture
def make_client(backend: dict[str, Any]) -> ClientFactory:
    """Factory: an httpx client talking in-process (ASGITransport) to an app with these settings."""

    @asynccontextmanager
    async def make(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
        values = {"public": str(PUBLIC), **backend, **settings}
        app = create_app(Settings(**values))
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
        ):
            client.app = app  # type: ignore[attr-defined]
            yield client

    return make
