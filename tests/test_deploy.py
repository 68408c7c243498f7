"""deploy/docker-compose.yml, kept honest without a Docker engine.

Its coturn command line runs here as it is (Debian's `turnserver` is the
image's entrypoint), and inbox-asgi runs with its environment; only what a
loopback test must change is swapped, each listed in COTURN_TEST_ONLY and
`loopback`. Then the TURN credentials inbox-asgi hands out must open an
allocation on that coturn, and credentials under another secret must not.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from aioice import stun
from aioice.turn import create_turn_endpoint

from inbox_asgi.tokens import issue, turn_credential

from .support import ROOT, ServerProcess, basic, free_port, wait_until
from .turn_support import TURNSERVER, answers_stun

pytestmark = pytest.mark.anyio

COMPOSE = ROOT / "deploy" / "docker-compose.yml"
ENV = {
    "PUBLIC_HOST": "127.0.0.1",
    "PUBLIC_IP": "127.0.0.1",
    "AUTH_SECRET": "compose-auth-secret",
    "TURN_SECRET": "compose-turn-secret",
}
#: What only a test needs: loopback addresses, and files a container would keep in its own /var.
COTURN_TEST_ONLY = ["--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", "--relay-threads=1"]
RELAY_PORTS = (49400, 49450)


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}`."""

    def value(match: re.Match[str]) -> str:
        name, operator, rest = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if operator == ":?":
            raise AssertionError(f"compose needs {name}: {rest}")
        return rest or ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", value, text)


def compose(env: dict[str, str]) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE.read_text(), env))
    return document


def loopback(text: str, port: int) -> str:
    """The file's public TURN port (3478) swapped for a free one."""
    return text.replace(":3478", f":{port}").replace("=3478", f"={port}")


@pytest.fixture
def coturn_from_compose(tmp_path: Path) -> Iterator[int]:
    """coturn started with the compose file's command; yields its port."""
    if shutil.which(TURNSERVER) is None:
        message = f"{TURNSERVER} not found (apt-get install coturn)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    command = [loopback(str(argument), port) for argument in compose(ENV)["services"]["coturn"]["command"]]
    command = [argument for argument in command if not argument.startswith(("--min-port", "--max-port"))]
    command += [f"--min-port={RELAY_PORTS[0]}", f"--max-port={RELAY_PORTS[1]}", *COTURN_TEST_ONLY]
    command += [f"--userdb={tmp_path / 'turndb'}", f"--pidfile={tmp_path / 'turn.pid'}"]
    log = tmp_path / "coturn.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([TURNSERVER, *command], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            assert process.poll() is None, f"coturn exited:\n{log.read_text(errors='replace')}"
            return answers_stun(port)

        wait_until(ready, timeout=10)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def allocate(port: int, transport: str, username: str, credential: str) -> tuple[str, int]:
    """A TURN Allocate on coturn with these credentials: the relayed address it grants."""

    turn, _ = await create_turn_endpoint(
        asyncio.DatagramProtocol, ("127.0.0.1", port), username, credential, transport=transport
    )
    try:
        host, relay_port = turn.get_extra_info("sockname")
        return host, relay_port
    finally:
        turn.close()


def inbox_environment(port: int) -> dict[str, str]:
    environment = compose(ENV)["services"]["inbox"]["environment"]
    # An empty value (`${REDIS_URL:-}`) is YAML's null; compose passes it as "".
    return {name: loopback(str(value or ""), port) for name, value in environment.items()}


def test_compose_file_refuses_to_start_without_its_secrets() -> None:
    with pytest.raises(AssertionError, match="TURN_SECRET"):
        compose({**ENV, "TURN_SECRET": ""})
    services = compose(ENV)["services"]
    assert set(services) == {"inbox", "coturn", "redis"}
    assert services["redis"]["profiles"] == ["redis"]
    assert services["inbox"]["build"] == ".."
    assert (COMPOSE.parent / services["inbox"]["build"] / "Dockerfile").exists()


async def test_credentials_from_ice_servers_open_a_relay_on_the_composed_coturn(
    coturn_from_compose: int, real_server: Callable[..., ServerProcess]
) -> None:
    port = coturn_from_compose
    server = real_server(env=inbox_environment(port))
    token = issue(ENV["AUTH_SECRET"], "alice", 60)
    async with server.async_client() as http:
        refused = await http.get("/ice-servers", headers=basic("alice", "not-a-token"))
        response = await http.get("/ice-servers", headers=basic("alice", token))
    assert refused.status_code == 401
    assert response.status_code == 200
    stun_entry, turn_entry = response.json()["iceServers"]
    assert stun_entry == {"urls": [f"stun:127.0.0.1:{port}"]}
    turn_url = f"turn:127.0.0.1:{port}"
    assert turn_entry["urls"] == [f"{turn_url}?transport=udp", f"{turn_url}?transport=tcp"]
    credentials = turn_entry["username"], turn_entry["credential"]
    with anyio.fail_after(20):
        for transport in ("udp", "tcp"):
            host, relay_port = await allocate(port, transport, *credentials)
            assert host == "127.0.0.1" and RELAY_PORTS[0] <= relay_port <= RELAY_PORTS[1]
        wrong = turn_credential("another-secret", "alice", 60)
        with pytest.raises(stun.TransactionFailed, match="401"):
            await allocate(port, "udp", *wrong)
