from __future__ import annotations

import pytest

from inbox_asgi.http.middleware.ratelimit import SWEEP_INTERVAL, TokenBuckets

from ...conftest import ClientFactory
from ...support import ManualClock, basic


def test_burst_then_rate() -> None:
    clock = ManualClock(100.0)
    buckets = TokenBuckets(rate=2, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0  # per key
    clock.now += 0.5
    assert buckets.take("a") == 0
    assert buckets.take("a") > 0


def test_idle_buckets_are_swept() -> None:
    clock = ManualClock(100.0)
    buckets = TokenBuckets(rate=10, burst=5, clock=clock)
    for i in range(1000):
        buckets.take(f"client-{i}")
    assert len(buckets) == 1000
    clock.now += SWEEP_INTERVAL + 1
    buckets.take("newcomer")
    assert len(buckets) == 1


@pytest.mark.anyio
async def test_over_the_rate_is_429_with_retry_after(make_client: ClientFactory) -> None:
    async with make_client(rate_limit=0.5, rate_burst=3, long_polling=False) as client:
        statuses = [(await client.get("/inbox", headers=basic("r"))).status_code for _ in range(3)]
        assert statuses == [204, 204, 204]
        refused = await client.get("/inbox", headers=basic("r"))
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) == 2
        assert (await client.get("/healthz")).status_code == 200  # only /inbox is limited


@pytest.mark.anyio
async def test_forwarded_for_counts_only_behind_a_trusted_proxy(make_client: ClientFactory) -> None:
    async with make_client(rate_limit=0.1, rate_burst=1, long_polling=False) as client:
        first = await client.get("/inbox", headers=basic("r") | {"X-Forwarded-For": "10.0.0.1"})
        spoofed = await client.get("/inbox", headers=basic("r") | {"X-Forwarded-For": "10.0.0.2"})
        assert (first.status_code, spoofed.status_code) == (204, 429)
    async with make_client(rate_limit=0.1, rate_burst=1, long_polling=False, trust_proxy=True) as client:
        codes = []
        for forwarded in ("6.6.6.6, 10.0.0.1", "6.6.6.6, 10.0.0.2", "7.7.7.7, 10.0.0.1"):
            response = await client.get("/inbox", headers=basic("r") | {"X-Forwarded-For": forwarded})
            codes.append(response.status_code)
        # The proxy's own (last) entry decides; what the client put before it does not.
        assert codes == [204, 204, 429]


@pytest.mark.anyio
async def test_ice_servers_share_the_inbox_budget(make_client: ClientFactory) -> None:
    """/ice-servers claims names and signs credentials: it draws on the same per-client budget."""
    async with make_client(rate_limit=0.1, rate_burst=2, long_polling=False) as client:
        assert (await client.get("/inbox", headers=basic("alice"))).status_code == 204
        assert (await client.get("/ice-servers", headers=basic("alice"))).status_code == 200
        refused = await client.get("/ice-servers", headers=basic("alice"))
        assert refused.status_code == 429
        assert "retry-after" in refused.headers
        assert (await client.get("/inbox", headers=basic("alice"))).status_code == 429
