"""GET /ice-servers in process, on both backends (SPEC section 8)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from inbox_asgi.http.ice_servers import IceServers
from inbox_asgi.tokens import issue

from ..conftest import ClientFactory
from ..support import basic

pytestmark = pytest.mark.anyio

TURN = ("turn:127.0.0.1:3478?transport=udp", "turns:turn.example:5349")
STUN = ("stun:stun.example:3478",)


async def test_nothing_configured_is_an_empty_list(make_client: ClientFactory) -> None:
    async with make_client() as client:
        response = await client.get("/ice-servers", headers=basic("alice"))
    assert response.status_code == 200
    assert response.json() == {"iceServers": [], "ttl": 0}
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json"


async def test_stun_only(make_client: ClientFactory) -> None:
    async with make_client(stun_urls=STUN) as client:
        response = await client.get("/ice-servers", headers=basic("alice"))
    assert response.json() == {"iceServers": [{"urls": list(STUN)}], "ttl": 86400}


async def test_turn_credentials_are_the_rest_api_formula_for_the_caller(make_client: ClientFactory) -> None:
    before = int(time.time())
    async with make_client(stun_urls=STUN, turn_urls=TURN, turn_secret="turn-key", turn_ttl=600) as client:
        response = await client.get("/ice-servers", headers=basic("alice"))
    after = int(time.time())
    document = response.json()
    assert document["ttl"] == 600
    stun, turn = document["iceServers"]
    assert stun == {"urls": list(STUN)}
    assert turn["urls"] == list(TURN)
    expiry, _, username = turn["username"].partition(":")
    assert username == "alice"
    assert before + 600 <= int(expiry) <= after + 600
    expected = hmac.new(b"turn-key", turn["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(turn["credential"]) == expected
    assert "turn-key" not in response.text


async def test_the_caller_is_authenticated_like_a_sender(make_client: ClientFactory) -> None:
    async with make_client(turn_urls=TURN, turn_secret="k") as client:
        assert (await client.get("/ice-servers")).status_code == 401
        # The call claims the name: the inbox exists afterwards, with this password.
        assert (await client.get("/ice-servers", headers=basic("alice", "pw"))).status_code == 200
        assert (await client.post("/inbox?to=alice", headers=basic("bob"))).status_code == 200
        wrong = await client.get("/ice-servers", headers=basic("alice", "other"))
        assert wrong.status_code == 401
        assert "username" not in wrong.text


async def test_with_access_tokens_only_a_valid_token_gets_credentials(make_client: ClientFactory) -> None:
    async with make_client(auth_secret="auth-key", turn_urls=TURN, turn_secret="turn-key") as client:
        assert (await client.get("/ice-servers", headers=basic("alice", "pw"))).status_code == 401
        token = issue("auth-key", "alice", 60)
        response = await client.get("/ice-servers", headers=basic("alice", token))
        assert response.status_code == 200
        assert response.json()["iceServers"][0]["username"].endswith(":alice")
        assert (await client.get("/ice-servers", headers=basic("bob", token))).status_code == 401


async def test_cors_like_inbox(make_client: ClientFactory) -> None:
    origin = {"Origin": "https://peer.example"}
    async with make_client(cors=("https://peer.example",)) as client:
        response = await client.get("/ice-servers", headers={**basic("alice"), **origin})
        assert response.headers["access-control-allow-origin"] == "https://peer.example"
        request = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
        preflight = await client.options("/ice-servers", headers={**origin, **request})
        assert preflight.status_code == 200
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
async def test_other_methods_get_405(make_client: ClientFactory, method: str) -> None:
    async with make_client() as client:
        response = await client.request(method, "/ice-servers", headers=basic("alice"))
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, OPTIONS"


def test_counts_what_it_issues_and_uses_the_clock() -> None:
    servers = IceServers(turn_urls=["turn:h"], turn_secret="k", ttl=10, clock=lambda: 1000.0)
    assert servers.for_user("a")["iceServers"][0]["username"] == "1010:a"
    assert IceServers(stun_urls=["stun:h"]).for_user("a")["ttl"] == 86400
    assert servers.issued == 1


def test_turn_urls_without_a_secret_are_a_programming_error() -> None:
    with pytest.raises(ValueError):
        IceServers(turn_urls=["turn:h"])
