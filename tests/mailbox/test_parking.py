"""The parked-reader primitive both backends wait with: why it wakes, and what it leaves behind."""

from __future__ import annotations

import asyncio
import gc
import warnings

import anyio
import pytest

from inbox_asgi.mailbox.parking import CLOSED, LEFT, MAIL, SUPERSEDED, WAITING, ParkedReader

pytestmark = pytest.mark.anyio


async def never() -> None:
    await anyio.sleep_forever()


async def park(reader: ParkedReader, seconds: float, disconnected: object = never) -> int:
    with reader.parked(anyio.current_time() + seconds, disconnected):  # type: ignore[arg-type]
        await reader.woken()
    return reader.woke()


async def test_the_deadline_ends_the_wait() -> None:
    with anyio.fail_after(5):
        assert await park(ParkedReader(), 0.05) == WAITING


async def test_wake_ends_the_wait_with_the_strongest_reason_and_rearms() -> None:
    reader = ParkedReader()
    async with anyio.create_task_group() as tasks:
        woke: list[int] = []

        async def wait() -> None:
            woke.append(await park(reader, 60))

        tasks.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        reader.wake(SUPERSEDED)
        reader.wake(MAIL)  # weaker, later: does not hide SUPERSEDED
    assert woke == [SUPERSEDED]
    reader.wake(CLOSED)  # woken before it parks: the next wait returns at once
    with anyio.fail_after(1):
        assert await park(reader, 60) == CLOSED
    assert await park(reader, 0.01) == WAITING  # and the one after waits again


async def test_a_closed_future_wakes_it_and_keeps_no_callback() -> None:
    """inbox-asgi's server: the connection's closed-future, no second task."""
    reader = ParkedReader()
    closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    before = len(asyncio.all_tasks())
    async with anyio.create_task_group() as tasks:
        woke: list[int] = []

        async def wait() -> None:
            woke.append(await park(reader, 60, lambda: closed))

        tasks.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        assert len(asyncio.all_tasks()) == before + 1  # the reader's, and no watcher task
        closed.set_result(None)
    assert woke == [LEFT]
    other: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    assert await park(reader, 0.01, lambda: other) == WAITING
    assert other.remove_done_callback(reader) == 0  # the reader unhooked itself


@pytest.mark.parametrize("ending", ["client leaves", "woken"])
async def test_any_other_disconnect_is_awaited_by_the_reader_itself(ending: str) -> None:
    """Other servers tell of a disconnect only through an awaitable: no second task either."""
    reader = ParkedReader()
    leaves = anyio.Event()
    before = len(asyncio.all_tasks())
    async with anyio.create_task_group() as tasks:
        woke: list[int] = []

        async def wait() -> None:
            woke.append(await park(reader, 60, leaves.wait))

        tasks.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        assert len(asyncio.all_tasks()) == before + 1
        if ending == "client leaves":
            leaves.set()
        else:
            reader.wake(MAIL)
    assert woke == [LEFT if ending == "client leaves" else MAIL]


async def test_a_wait_cut_short_leaves_no_unawaited_coroutine() -> None:
    leaves = anyio.Event()
    reader = ParkedReader()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(KeyError), reader.parked(anyio.current_time() + 60, leaves.wait):
            raise KeyError("the caller failed before it waited: the disconnect was never awaited")
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]


async def test_an_outside_cancellation_is_not_swallowed() -> None:
    reader = ParkedReader()
    with anyio.move_on_after(0.05) as outer:
        await park(reader, 60)
        pytest.fail("the wait swallowed a cancellation that was not its own")
    assert outer.cancelled_caught
