"""Hundreds of peer pairs at once over long polling, against a real server over TLS."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from .support import RawConnection, ServerProcess, basic, metric

pytestmark = pytest.mark.anyio

PAIRS = 200
MESSAGES = 5


async def test_every_accepted_message_arrives_once_in_order(
    real_server: Callable[..., ServerProcess],
) -> None:
    server = real_server("-long-polling-timeout", "10", "-metrics")
    received: dict[int, list[tuple[bytes, bytes]]] = {i: [] for i in range(PAIRS)}
    accepted = 0

    async def receiver(i: int) -> None:
        connection = await RawConnection.open(server)
        while len(received[i]) < MESSAGES:
            response = await connection.request("GET", "/inbox", basic(f"r{i}"))
            if response.status == 200:
                received[i].append((response.headers[b"x-from"], response.body))
            else:
                assert response.status == 204
        await connection.close()

    async def sender(i: int) -> None:
        nonlocal accepted
        connection = await RawConnection.open(server)
        for n in range(MESSAGES):
            response = await connection.request("POST", f"/inbox?to=r{i}", basic(f"s{i}"), b"%d:%d" % (i, n))
            assert response.status == 200, response
            accepted += 1
        await connection.close()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tasks:
            for i in range(PAIRS):
                tasks.start_soon(receiver, i)
            # Every receiver has created its inbox and waits: now the senders go.
            while metric(server, "inbox_waiting_readers") < PAIRS:
                await anyio.sleep(0.05)
            for i in range(PAIRS):
                tasks.start_soon(sender, i)

    assert accepted == PAIRS * MESSAGES
    for i in range(PAIRS):
        assert received[i] == [(b"s%d" % i, b"%d:%d" % (i, n)) for n in range(MESSAGES)]
