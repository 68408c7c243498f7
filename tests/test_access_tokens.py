"""Access tokens over the wire (SPEC section 7): a real server over TLS, on both backends.

Every rule is checked against a running `inbox-asgi` process; in Redis mode a
token minted once opens the same inbox on two processes sharing the store.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inbox_asgi.app import create_app
from inbox_asgi.config import Settings
from inbox_asgi.tokens import issue

from .redis_support import RedisServer
from .support import ServerProcess, basic, clean_env, metric, run_cli

pytestmark = pytest.mark.anyio

Start = Callable[..., ServerProcess]
SECRET = "first-secret-0123456789"
OLD_SECRET = "rotated-out-secret-9876"
TURN_SECRET = "turn-secret-abcdef"


@pytest.fixture(params=["memory", "redis"])
def store_flags(request: pytest.FixtureRequest) -> tuple[str, ...]:
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        redis.flush()
        return ("-redis-url", redis.url)
    return ()


def token(user: str, ttl: float = 60, secret: str = SECRET) -> str:
    return issue(secret, user, ttl)


async def post(http: httpx.AsyncClient, user: str, password: str, to: str, body: bytes) -> int:
    response = await http.post("/inbox", params={"to": to}, headers=basic(user, password), content=body)
    return response.status_code


async def test_token_rules(real_server: Start, store_flags: tuple[str, ...]) -> None:
    server = real_server("-auth-secret", f"{SECRET},{OLD_SECRET}", "-long-polling=false", *store_flags)
    async with server.async_client() as http:
        # A valid token opens the inbox; a password that is not a token does not.
        assert (await http.get("/inbox", headers=basic("bob", token("bob")))).status_code == 204
        assert (await http.get("/inbox", headers=basic("carol", "plain-password"))).status_code == 401
        # Expired, forged (unknown secret), another user's: all 401, with the Basic challenge.
        expired = f"{int(time.time()) - 5}:{token('bob').split(':')[1]}"
        past = issue(SECRET, "bob", 1, now=time.time() - 10)
        for bad in (expired, past, token("bob", secret="guessed"), token("alice")):
            response = await http.get("/inbox", headers=basic("bob", bad))
            assert response.status_code == 401, bad
            assert response.headers["www-authenticate"].startswith("Basic")
        # Rotation: the previous secret still verifies.
        assert await post(http, "alice", token("alice", secret=OLD_SECRET), "bob", b"hi") == 200
        # A renewed token (another expiry, hence another signature) opens the same inbox.
        renewed = token("bob", ttl=3600)
        response = await http.get("/inbox", headers=basic("bob", renewed))
        assert (response.status_code, response.content, response.headers["x-from"]) == (200, b"hi", "alice")
        # Every refusal reached nobody's inbox.
        assert (await http.get("/inbox", headers=basic("bob", renewed))).status_code == 204


async def test_a_waiting_reader_renews_its_token_mid_session(
    real_server: Start, store_flags: tuple[str, ...]
) -> None:
    server = real_server("-auth-secret", SECRET, "-long-polling-timeout", "10", *store_flags)
    short = issue(SECRET, "bob", 2)
    async with server.async_client(timeout=30) as http:
        async with anyio.create_task_group() as tasks:
            received: list[httpx.Response] = []

            async def read() -> None:
                received.append(await http.get("/inbox", headers=basic("bob", short)))

            tasks.start_soon(read)
            async with httpx.AsyncClient(base_url=server.base_url, verify=server.verify) as sender:
                with anyio.fail_after(10):
                    while await post(sender, "alice", token("alice"), "bob", b"first") == 404:
                        await anyio.sleep(0.02)
        assert received[0].content == b"first"
        # The first token runs out (a POST shows when: it does not wait like a GET)...
        with anyio.fail_after(10):
            while await post(http, "bob", short, "alice", b"") != 401:
                await anyio.sleep(0.1)
        # ...the page fetches a new one and carries on with the same inbox.
        assert await post(http, "alice", token("alice"), "bob", b"second") == 200
        response = await http.get("/inbox", headers=basic("bob", token("bob")))
        assert response.content == b"second"


async def test_secret_from_file_and_from_the_environment(real_server: Start, tmp_path: Path) -> None:
    secrets = tmp_path / "auth-secret"
    secrets.write_text(f"  {SECRET} ,\n {OLD_SECRET}\n")
    from_file = real_server("-auth-secret-file", str(secrets), "-long-polling=false")
    from_env = real_server("-long-polling=false", env={"INBOX_AUTH_SECRET": SECRET})
    for server in (from_file, from_env):
        async with server.async_client() as http:
            assert (await http.get("/inbox", headers=basic("bob", token("bob")))).status_code == 204
            assert (await http.get("/inbox", headers=basic("bob", "pw"))).status_code == 401
    async with from_file.async_client() as http:
        old = token("carol", secret=OLD_SECRET)
        assert (await http.get("/inbox", headers=basic("carol", old))).status_code == 204


async def test_one_token_opens_the_inbox_on_every_process(
    real_server: Start, redis_server: RedisServer
) -> None:
    redis_server.flush()
    flags = ("-auth-secret", SECRET, "-redis-url", redis_server.url, "-long-polling-timeout", "10")
    first, second = real_server(*flags), real_server(*flags)
    bob = token("bob")
    async with first.async_client(timeout=30) as one, second.async_client(timeout=30) as two:
        assert await post(one, "bob", bob, "bob", b"") == 200  # bob's inbox, made on the first process
        assert (await one.get("/inbox", headers=basic("bob", bob))).status_code == 200
        assert await post(two, "alice", token("alice"), "bob", b"across") == 200
        response = await one.get("/inbox", headers=basic("bob", bob))
        assert response.content == b"across"
        # The other process refuses what this one refuses.
        assert (await two.get("/inbox", headers=basic("bob", "pw"))).status_code == 401


async def test_secrets_stay_out_of_logs_and_metrics_count(real_server: Start) -> None:
    server = real_server(
        "-log-level", "info", "-access-log", "-metrics",
        "-auth-secret", SECRET,
        "-turn-urls", "turn:127.0.0.1:3478?transport=udp",
        "-turn-secret", TURN_SECRET,
    )  # fmt: skip
    async with server.async_client() as http:
        for _ in range(3):
            assert (await http.get("/ice-servers", headers=basic("bob", "forged"))).status_code == 401
        response = await http.get("/ice-servers", headers=basic("bob", token("bob")))
        assert response.status_code == 200
        assert TURN_SECRET not in response.text
    assert metric(server, "inbox_tokens_refused_total") == 3
    assert metric(server, "inbox_ice_credentials_issued_total") == 1
    server.stop()
    log = server.log()
    assert "auth-secret" in log and "(set)" in log  # the start-up log says it is set...
    assert SECRET not in log and TURN_SECRET not in log  # ...and nothing more
    assert "Traceback" not in log


def test_token_command_mints_what_the_server_accepts(real_server: Start, tmp_path: Path) -> None:
    server = real_server("-auth-secret", f"{SECRET},{OLD_SECRET}", "-long-polling=false")
    command = [sys.executable, "-m", "inbox_asgi", "token", "--user", "zoë", "--ttl", "60"]
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    by_flag = run([*command, "-auth-secret", f"{SECRET},{OLD_SECRET}"])
    by_env = run(command, {"INBOX_AUTH_SECRET": SECRET})
    by_file = run([*command, "--auth-secret-file", str(secret_file)])
    for result in (by_flag, by_env, by_file):
        assert result.returncode == 0, result.stderr
        minted = result.stdout.strip()
        with server.client() as http:
            assert http.get("/inbox", headers=basic("zoë", minted)).status_code == 204
    missing = run(command)
    assert missing.returncode == 2
    assert "no secret" in missing.stderr


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, env=clean_env(env), timeout=30)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("-auth-secret", "x", "-auth-secret-file", "/dev/null"), "not both"),
        (("-auth-secret-file", "/nonexistent/secret"), "cannot read -auth-secret-file"),
        (("-auth-secret-file", "/dev/null"), "holds no secret"),
        (("-turn-urls", "turn:127.0.0.1:3478"), "needs -turn-secret"),
        (("-turn-secret", "shh-its-a-secret"), "without -turn-urls"),
        (("-turn-urls", "http://127.0.0.1:3478", "-turn-secret", "k"), "turn:"),
        (("-stun-urls", "turn:127.0.0.1"), "stun:"),
    ],
)
def test_bad_configuration_stops_start_up_without_echoing_secrets(
    tmp_path: Path, flags: tuple[str, ...], message: str
) -> None:
    result = run_cli(["-https=false", "-bind", "127.0.0.1:0", *flags], cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "shh-its-a-secret" not in result.stderr


@given(position=st.integers(min_value=0), replacement=st.characters(codec="utf-8", exclude_characters="\r\n"))
@settings(max_examples=150, deadline=None)
def test_random_tampering_of_a_valid_token_is_always_401(position: int, replacement: str) -> None:
    """In-process through the whole app: one changed character anywhere, never a way in."""
    valid = issue(SECRET, "bob", 600)
    index = position % len(valid)
    tampered = valid[:index] + replacement + valid[index + 1 :]
    if tampered == valid:
        return

    async def check() -> None:
        transport = httpx.ASGITransport(app=TAMPERING_APP)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            assert (await http.get("/inbox", headers=basic("bob", tampered))).status_code == 401
            assert (await http.get("/inbox", headers=basic("bob", valid))).status_code == 204

    anyio.run(check)


TAMPERING_APP = create_app(Settings(auth_secret=SECRET, long_polling=False))
