"""Sibling tasks run until the first ends, and a stop always gets through (unlike Python 3.11's TaskGroup and
wait_for)."""

from __future__ import annotations

import asyncio

import pytest

from shared.tasks import cancel_and_wait, until_first_ends, wait_set


async def forever() -> None:
    await asyncio.Event().wait()


async def test_the_first_task_to_fail_is_returned_and_the_others_are_cancelled() -> None:
    other = asyncio.Event()

    async def fails() -> None:
        raise RuntimeError("boom")

    async def waits() -> None:
        try:
            await forever()
        finally:
            other.set()

    error = await until_first_ends({"fails": fails(), "waits": waits()})
    assert isinstance(error, RuntimeError)
    assert other.is_set()  # cancelled and awaited before returning


async def test_a_task_that_returns_ends_the_run_with_none() -> None:
    async def returns() -> None:
        return None

    assert await until_first_ends({"returns": returns(), "forever": forever()}) is None


async def test_a_stop_that_arrives_as_a_task_fails_still_stops_the_caller() -> None:
    caller: asyncio.Task[BaseException | None] | None = None

    async def fails_as_the_stop_comes() -> None:
        assert caller is not None
        caller.cancel()
        raise RuntimeError("failing at the same moment")

    caller = asyncio.create_task(until_first_ends({"fails": fails_as_the_stop_comes(), "forever": forever()}))
    with pytest.raises(asyncio.CancelledError):
        await caller


async def loop_until_stopped(wake: asyncio.Event, rounds: list[int]) -> None:
    """The shape of the worker's timers: wait for a wake-up or a timeout, do a round, again."""
    while True:
        await wait_set(wake, 30)
        wake.clear()
        rounds.append(1)


async def test_a_stop_that_arrives_as_the_event_is_set_still_stops_the_loop() -> None:
    wake, rounds = asyncio.Event(), list[int]()
    task = asyncio.create_task(loop_until_stopped(wake, rounds))
    await asyncio.sleep(0)  # the task waits on the event
    wake.set()
    task.cancel()  # in the same loop turn: 3.11's wait_for would return True here and the loop would go on
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert rounds == []


async def test_wait_set_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    event.set()
    assert await wait_set(event, 0.01) is True
    assert await wait_set(event, None) is True


async def test_a_task_that_swallows_its_cancel_is_cancelled_again_until_it_ends() -> None:
    cancels = 0

    async def swallows_the_first_cancel() -> None:
        nonlocal cancels
        while True:
            try:
                await forever()
            except asyncio.CancelledError:
                cancels += 1
                if cancels > 1:
                    raise

    task = asyncio.create_task(swallows_the_first_cancel())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait([task], recancel=0.01), 5)
    assert (task.cancelled(), cancels) == (True, 2)
