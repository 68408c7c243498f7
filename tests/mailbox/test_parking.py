"""The parked-reader primitive both backends wait with: why it wakes, and what it leaves behind."""

from __future__ import annotations

import asyncio
import gc
import warnings

import anyio
import anyio.lowlevel
import pytest

from inbox_asgi.mailbox.parking import CLOSED, LEFT, MAIL, SUPERSEDED, WAITING, ParkedReader

pytestmark = pytest.mark.anyio


async def never() -> None:
    await anyio.sleep_forever()


async def park(reader: ParkedReader, seconds: float, disconnected: object = never) -> int:
    with reader.parked(seconds, disconnected):  # type: ignore[arg-type]
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
        with pytest.raises(KeyError), reader.parked(60, leaves.wait):
            raise KeyError("the caller failed before it waited: the disconnect was never awaited")
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]


async def test_an_outside_cancellation_is_not_swallowed() -> None:
    reader = ParkedReader()
    with anyio.move_on_after(0.05) as outer:
        await park(reader, 60)
        pytest.fail("the wait swallowed a cancellation that was not its own")
    assert outer.cancelled_caught


async def test_a_client_gone_before_the_reader_parks_ends_the_wait_at_once() -> None:
    closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    closed.set_result(None)
    reader = ParkedReader()
    with anyio.fail_after(1):
        assert await park(reader, 60, lambda: closed) == LEFT
    await anyio.lowlevel.checkpoint()  # a done-callback, had one been added, would run now
    assert reader.reason == WAITING  # nothing woke it after the wait: the next one waits


async def test_the_deadline_timer_goes_with_the_wait() -> None:
    """A woken reader cancels its deadline's timer: no timer outlives a wait (one per parked reader)."""
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    reader = ParkedReader()
    timers: list[asyncio.TimerHandle] = []
    call_later = loop.call_later

    def recording_call_later(*args: object, **kwargs: object) -> asyncio.TimerHandle:
        timers.append(call_later(*args, **kwargs))  # type: ignore[arg-type]
        return timers[-1]

    loop.call_later = recording_call_later  # type: ignore[method-assign]
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(park, reader, 60, lambda: closed)
            await anyio.wait_all_tasks_blocked()
            reader.wake(MAIL)
    finally:
        del loop.call_later  # type: ignore[method-assign]
    assert len(timers) == 1 and timers[0].cancelled()
