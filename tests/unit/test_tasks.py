"""Sibling tasks run until the first ends, and a stop always gets through (unlike Python 3.11's TaskGroup)."""

from __future__ import annotations

import asyncio

import pytest

from shared.tasks import until_first_ends


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
