"""The store limits over HTTP, in-process, once per backend (the `backend` fixture).

-inbox-capacity 0 (hand-off only), -max-inboxes-per-ip (429); -max-queued-bytes
is a memory-mode limit (in Redis mode Redis's maxmemory bounds the store: see
tests/mailbox/redis/test_mailbox.py) and is tested here and in test_memory.py.
"""

from __future__ import annotations

import anyio
import httpx
import pytest

from ..conftest import ClientFactory
from ..support import basic

pytestmark = pytest.mark.anyio


async def post(client: httpx.AsyncClient, sender: str, to: str, body: bytes = b"") -> httpx.Response:
    return await client.post("/inbox", params={"to": to}, headers=basic(sender), content=body)


async def get(client: httpx.AsyncClient, user: str) -> httpx.Response:
    return await client.get("/inbox", headers=basic(user))


async def until_waiting(client: httpx.AsyncClient, count: int) -> None:
    mailbox = client.app.state.mailbox  # type: ignore[attr-defined]
    with anyio.fail_after(5):
        while (await mailbox.stats()).waiting_readers != count:
            await anyio.sleep(0.005)


async def test_capacity_zero_only_hands_messages_to_a_waiting_reader(make_client: ClientFactory) -> None:
    async with make_client(inbox_capacity=0, long_polling_timeout=10) as client:
        assert (await post(client, "r", "nobody")).status_code == 404  # creates r
        refused = await post(client, "s", "r", b"nobody waits")
        assert refused.status_code == 503 and refused.headers["retry-after"]
        # Twice: the second reader would get "too late" at once had it been queued.
        for body in (b"handed over", b"handed over again"):
            got: list[httpx.Response] = []
            async with anyio.create_task_group() as tasks:

                async def read() -> None:
                    got.append(await get(client, "r"))

                tasks.start_soon(read)
                await until_waiting(client, 1)
                assert (await post(client, "s", "r", body)).status_code == 200
                # The reader was handed a message and waits no more: the next one is refused.
                assert (await post(client, "s", "r", b"too late")).status_code == 503
            assert (got[0].status_code, got[0].content) == (200, body)
