"""Claiming a worker id: a crashed predecessor's lease is waited out, a running twin's is not."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stream_worker.cluster.identity import DuplicateWorkerId, claim_worker_id
from stream_worker.cluster.membership import Member


class ManualClock:
    """Monotonic seconds that move only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Rows:
    """A member row held by `holder` until `expires_at` (the test's clock); `renewing` keeps pushing it on."""

    def __init__(self, clock: ManualClock, *, expires_at: float, renewing: bool, ttl: float = 5.0) -> None:
        self.clock, self.expires_at, self.renewing, self.ttl = clock, expires_at, renewing, ttl
        self.worker_id = "host-1"
        self.claims = 0

    async def claim(self) -> Member | None:
        self.claims += 1
        now = self.clock()
        if self.renewing:
            self.expires_at = now + self.ttl
        if now >= self.expires_at:
            return None
        return Member(worker_id="host-1", instance_id="other", lease_age_s=0.0, expires_in_s=self.expires_at - now)


async def claim(rows: Rows, clock: ManualClock, stop: asyncio.Event | None = None) -> bool:
    async def sleep(delay: float) -> None:
        clock.advance(delay)

    store: Any = rows
    return await claim_worker_id(store, stop or asyncio.Event(), poll=1.0, sleep=sleep, clock=clock)


async def test_a_crashed_predecessors_id_is_claimed_once_its_lease_expires() -> None:
    clock = ManualClock()
    started = clock()
    rows = Rows(clock, expires_at=started + 4.0, renewing=False)
    assert await claim(rows, clock) is True
    assert clock() - started == 4.0  # polled each second until the lease ran out, no longer


async def test_a_running_twin_that_keeps_renewing_makes_the_newcomer_refuse() -> None:
    clock = ManualClock()
    rows = Rows(clock, expires_at=clock() + 5.0, renewing=True)
    with pytest.raises(DuplicateWorkerId, match="WS_GATEWAY_WORKER_ID"):
        await claim(rows, clock)
    assert rows.claims <= 8  # refused one lease and one renewal after first seeing it


async def test_a_free_id_is_claimed_at_once_and_a_stop_ends_the_wait() -> None:
    clock = ManualClock()
    assert await claim(Rows(clock, expires_at=clock(), renewing=False), clock) is True
    stop = asyncio.Event()
    stop.set()
    assert await claim(Rows(clock, expires_at=clock() + 5.0, renewing=True), clock, stop) is False
