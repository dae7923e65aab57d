"""Sibling tasks run until the first ends, and a stop always gets through (unlike Python 3.11's TaskGroup)."""

from __future__ import annotations

import asyncio

import pytest

from shared.tasks import until_first_ends, wait_event
from tests.support.waiting import wait_until


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


async def test_a_wake_or_timeout_loop_stops_when_cancelled_as_its_event_is_set() -> None:
    # Python 3.11's wait_for swallowed this cancel (the event's wait had just finished), so the loop waited on and
    # the worker's shutdown hung in its TaskGroup until the next timeout, again and again.
    wake, rounds = asyncio.Event(), [0]

    async def loop() -> None:
        while True:
            wake.clear()
            rounds[0] += 1
            await wait_event(wake, 30)

    task = asyncio.create_task(loop())
    await wait_until(lambda: rounds[0] == 1, what="the loop waits")
    wake.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), 5)


async def test_wait_event_returns_when_set_and_when_the_timeout_passes() -> None:
    wake = asyncio.Event()
    await wait_event(wake, 0.01)  # not set: returns after the timeout, no error
    wake.set()
    await wait_event(wake, None)
