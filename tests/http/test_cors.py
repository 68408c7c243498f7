from __future__ import annotations

import pytest

from ..conftest import ClientFactory
from ..support import basic

pytestmark = pytest.mark.anyio

PREFLIGHT = {
    "Origin": "https://peer.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


async def test_off_by_default(make_client: ClientFactory) -> None:
    async with make_client() as client:
        response = await client.get("/inbox", headers={"Origin": "https://peer.example"})
        assert response.status_code == 401
        assert "access-control-allow-origin" not in response.headers
        assert (await client.options("/inbox", headers=PREFLIGHT)).status_code == 204


async def test_true_allows_any_origin_without_credentials(make_client: ClientFactory) -> None:
    async with make_client(cors=("*",), long_polling=False) as client:
        preflight = await client.options("/inbox", headers=PREFLIGHT)
        assert preflight.status_code in (200, 204)
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in preflight.headers
        methods = {m.strip() for m in preflight.headers["access-control-allow-methods"].split(",")}
        assert methods == {"GET", "POST", "OPTIONS"}
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed

        refused = await client.get("/inbox", headers={"Origin": "https://peer.example"})
        assert refused.status_code == 401  # a browser can read errors too
        assert refused.headers["access-control-allow-origin"] == "*"

        origin = {"Origin": "https://peer.example"}
        await client.get("/inbox", headers=basic("r") | origin)
        await client.post("/inbox?to=r", headers=basic("s") | origin, content=b"m")
        delivered = await client.get("/inbox", headers=basic("r") | origin)
        assert delivered.headers["access-control-allow-origin"] == "*"
        assert "x-from" in delivered.headers["access-control-expose-headers"].lower()


async def test_preflight_touches_no_inbox(make_client: ClientFactory) -> None:
    async with make_client(cors=("*",)) as client:
        await client.options("/inbox", headers=PREFLIGHT | basic("ghost"))
        stats = await client.app.state.mailbox.stats()  # type: ignore[attr-defined]
        assert stats.inboxes == 0


async def test_origin_list_echoes_listed_origins_only(make_client: ClientFactory) -> None:
    async with make_client(cors=("https://peer.example", "http://other.example:8080")) as client:
        listed = await client.get("/inbox", headers={"Origin": "http://other.example:8080"})
        assert listed.headers["access-control-allow-origin"] == "http://other.example:8080"
        assert "origin" in listed.headers["vary"].lower()

        stranger = await client.get("/inbox", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in stranger.headers

        preflight = await client.options("/inbox", headers=PREFLIGHT)
        assert preflight.headers["access-control-allow-origin"] == "https://peer.example"
        bad_preflight = await client.options("/inbox", headers=PREFLIGHT | {"Origin": "https://evil.example"})
        assert bad_preflight.status_code == 400
