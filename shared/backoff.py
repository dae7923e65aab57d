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


class EscalatingBackoff(Backoff):
    """A `Backoff` whose cap grows while failures go on: after `patience` delays at the cap, the cap doubles, up to
    `cap * escalation`. A short blip still retries within `cap`; a long outage of many sockets and workers stops
    spending Bybit's budget of new connections (rate-limit.mdx: "Do not connect and disconnect frequently")."""

    def __init__(
        self, first: float, cap: float, rng: random.Random, *, escalation: float = 10.0, patience: int = 10
    ) -> None:
        super().__init__(first, cap, rng)
        self._base_cap = cap
        self._long_cap = cap * max(escalation, 1.0)
        self._patience = patience
        self._at_cap = 0

    def next_delay(self) -> float:
        if self._ceiling >= self._cap:
            self._at_cap += 1
            if self._at_cap > self._patience and self._cap < self._long_cap:
                self._cap = min(self._long_cap, self._cap * 2)
                self._ceiling = self._cap
                self._at_cap = 0
        return super().next_delay()

    @property
    def cap(self) -> float:
        return self._cap

    def reset(self) -> None:
        super().reset()
        self._cap = self._base_cap
        self._at_cap = 0


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
