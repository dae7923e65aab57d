"""The one retry loop: retries only the errors it is told, reports each wait, and starts over after a success."""

from __future__ import annotations

import random

import pytest

from shared.backoff import Backoff, retry


async def test_retry_waits_out_listed_errors_with_growing_capped_delays_then_returns() -> None:
    outcomes: list[Exception | str] = [OSError("a"), OSError("b"), OSError("c"), "done"]
    slept: list[float] = []
    reported: list[str] = []

    async def attempt() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def sleep(delay: float) -> None:
        slept.append(delay)

    backoff = Backoff(1.0, 2.0, random.Random(7))
    result = await retry(
        attempt, errors=(OSError,), backoff=backoff, on_error=lambda e, _d: reported.append(str(e)), sleep=sleep
    )
    assert (result, reported) == ("done", ["a", "b", "c"])
    assert slept[0] <= 1.0
    assert all(delay <= 2.0 for delay in slept)
    assert backoff.next_delay() <= 1.0, "a success resets the backoff to its first step"


async def test_retry_lets_other_errors_through() -> None:
    async def attempt() -> None:
        raise KeyError("bug")

    async def sleep(_delay: float) -> None:
        raise AssertionError("must not wait on an unlisted error")

    with pytest.raises(KeyError):
        await retry(attempt, errors=(OSError,), backoff=Backoff(1, 2, random.Random()), on_error=print, sleep=sleep)
