"""Capped exponential backoff with full jitter: workers that lost the same socket must not return together."""

from __future__ import annotations

import random


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
