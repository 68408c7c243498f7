from __future__ import annotations

import logging

import pytest

from ...conftest import ClientFactory
from ...support import basic

pytestmark = pytest.mark.anyio


async def test_one_logfmt_line_per_request_with_user_and_never_the_password(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="inbox_asgi.access")
    async with make_client(access_log=True, long_polling=False) as client:
        await client.get("/inbox", headers=basic("bob", "hunter2"))
        await client.post("/inbox?to=bob", headers=basic("zoë smith", "s3cret"), content=b"hi")
        await client.get("/inbox", headers={"Authorization": "Basic !!"})
    lines = [r.getMessage() for r in caplog.records if r.name == "inbox_asgi.access"]
    assert len(lines) == 3
    assert "method=GET path=/inbox user=bob status=204" in lines[0]
    assert 'query="to=bob" user="zoë smith" status=200' in lines[1]
    assert "user=? status=401" in lines[2]
    assert all(line.startswith("client=127.0.0.1 ") for line in lines)
    text = caplog.text
    assert "hunter2" not in text and "s3cret" not in text


async def test_off_by_default(make_client: ClientFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="inbox_asgi.access")
    async with make_client() as client:
        await client.get("/healthz")
    assert not [r for r in caplog.records if r.name == "inbox_asgi.access"]
