"""Capped exponential backoff with full jitter, and the one retry loop built on it. Pure: no logging, no clock.

Full jitter: processes that lost the same dependency at the same moment must not come back together. The caller
passes `sleep` (tests pass a fake) and `on_error` (which logs), so this module stays free of I/O and side effects.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class Backoff:
    def __init__(self, first: float, cap: float, rng: random.Random) -> None:
        self._first = first
        self._cap = cap
        self._rng = rng
        self._ceiling = first

    def next_delay(self) -> float:
        delay = self._rng.uniform(0, self._ceiling)
        self._ceiling = min(self._cap, self._ceiling * 2)
        return delay

    def reset(self) -> None:
        self._ceiling = self._first


async def retry(
    attempt: Callable[[], Awaitable[T]],
    *,
    errors: tuple[type[BaseException], ...],
    backoff: Backoff,
    on_error: Callable[[BaseException, float], None],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Call `attempt` until it returns; after each failure in `errors`, tell `on_error(error, delay)` and wait
    `delay`. Anything else propagates. A success resets the backoff for the next outage."""
    while True:
        try:
            result = await attempt()
        except errors as error:
            delay = backoff.next_delay()
            on_error(error, delay)
            await sleep(delay)
            continue
        backoff.reset()
        return result
