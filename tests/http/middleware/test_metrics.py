from __future__ import annotations

import re

import pytest

from ...conftest import ClientFactory
from ...support import basic

pytestmark = pytest.mark.anyio


def value(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert match, sample
    return float(match.group(1))


async def test_metrics_count_inboxes_messages_and_requests(
    make_client: ClientFactory, backend: dict[str, object]
) -> None:
    async with make_client(metrics=True, long_polling=False, inbox_capacity=1) as client:
        await client.get("/inbox", headers=basic("r"))
        await client.post("/inbox?to=r", headers=basic("s"), content=b"1")
        await client.post("/inbox?to=r", headers=basic("s"), content=b"2")  # full: 503
        await client.post("/inbox?to=nobody", headers=basic("s"), content=b"3")  # 404
        before = (await client.get("/metrics")).text
        assert value(before, "inbox_inboxes") == 2
        if not backend.get("redis_url"):  # Redis mode does not count queued messages
            assert value(before, "inbox_queued_messages") == 1
            assert value(before, "inbox_queued_bytes") > 1  # one byte of body, plus sender and overhead
        assert value(before, "inbox_waiting_readers") == 0
        assert value(before, "inbox_messages_accepted_total") == 1
        assert value(before, 'inbox_messages_rejected_total{status="503"}') == 1
        assert value(before, 'inbox_messages_rejected_total{status="404"}') == 1
        await client.get("/inbox", headers=basic("r"))
        after = (await client.get("/metrics")).text
        assert value(after, "inbox_messages_delivered_total") == 1
        assert value(after, "inbox_queued_bytes") == 0
        assert value(after, 'inbox_requests_total{method="GET",route="/inbox",status="204"}') == 1


async def test_metrics_are_opt_in(make_client: ClientFactory) -> None:
    async with make_client() as client:
        assert (await client.get("/metrics")).status_code == 404
