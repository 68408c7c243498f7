"""The store limits over HTTP, in-process, once per backend (the `backend` fixture).

-inbox-capacity 0 (hand-off only), -max-inboxes-per-ip (429); -max-queued-bytes
is a memory-mode limit (in Redis mode Redis's maxmemory bounds the store: see
tests/mailbox/redis/test_mailbox.py), tested here over the wire with a real
server, and in test_memory.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import anyio
import httpx
import pytest

from ..conftest import ClientFactory
from ..support import RawConnection, ServerProcess, basic, memory_bytes

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

                async def read(got: list[httpx.Response] = got) -> None:
                    got.append(await get(client, "r"))

                tasks.start_soon(read)
                await until_waiting(client, 1)
                assert (await post(client, "s", "r", body)).status_code == 200
                # The reader was handed a message and waits no more: the next one is refused.
                assert (await post(client, "s", "r", b"too late")).status_code == 503
            assert (got[0].status_code, got[0].content) == (200, body)


async def test_inboxes_per_client_address_are_limited(make_client: ClientFactory) -> None:
    async with make_client(max_inboxes_per_ip=2, long_polling=False) as client:  # clients: 127.0.0.1
        for name in ("a", "b"):
            assert (await post(client, name, "nobody")).status_code == 404  # creates its inbox
        refused = await get(client, "c")
        assert refused.status_code == 429 and refused.headers["retry-after"]
        assert (await post(client, "c", "a")).status_code == 429  # nothing sent: c has no inbox
        assert (await post(client, "b", "a", b"hi")).status_code == 200  # existing inboxes work
        assert (await get(client, "a")).content == b"hi"


def rss_mib(pid: int) -> float:
    return memory_bytes(pid) / 2**20


async def test_a_flood_gets_503_beyond_max_queued_bytes_and_memory_stays_bounded(
    real_server: Callable[..., ServerProcess],
) -> None:
    """Over the wire: 1000 messages of 64 KiB (62.5 MiB) into a server that may queue 4 MiB.

    Without the limit the server's RSS grows by the whole flood (measured: +125 MiB
    for 2000 such messages); with it, by about the limit.
    """
    cap_mib, body = 4, b"x" * 65536
    server = real_server("-max-queued-bytes", str(cap_mib << 20), "-max-body-size", "65536", tls=False)
    connection = await RawConnection.open(server)
    recipients = 50  # 5000 places at the default capacity: the byte limit is what refuses
    for i in range(recipients):
        assert (await connection.request("POST", "/inbox?to=nobody", basic(f"r{i}"))).status == 404
    before = rss_mib(server.process.pid)
    statuses: Counter[int] = Counter()
    for n in range(1000):
        response = await connection.request("POST", f"/inbox?to=r{n % recipients}", basic("s"), body)
        statuses[response.status] += 1
        if response.status == 503:
            assert response.headers[b"retry-after"] and b"queued message bytes" in response.body
    await connection.close()
    grown = rss_mib(server.process.pid) - before
    assert set(statuses) == {200, 503}
    assert statuses[200] * len(body) <= cap_mib << 20 < (statuses[200] + 1) * (len(body) + 300)
    assert grown < cap_mib + 12, f"RSS grew by {grown:.1f} MiB"
