"""The connection budget is one sliding window per (scope, domain) in PostgreSQL, shared by every worker."""

from __future__ import annotations

import asyncio

import pytest

from stream_worker.exchange.connect_budget import ConnectBudget
from stream_worker.state.persistence import create_engine


class Spent(Exception):
    """Raised by the test's sleep: the budget asked to wait."""


def budget(engine: object, waits: list[float], *, scope: str = "host-a", limit: int = 3) -> ConnectBudget:
    async def sleep(delay: float) -> None:
        waits.append(delay)
        raise Spent

    return ConnectBudget(engine, scope=scope, limit=limit, window=20.0, timeout=5.0, sleep=sleep)  # type: ignore[arg-type]


async def test_two_workers_budgets_draw_on_one_window(database_url: str) -> None:
    engine = create_engine(database_url, 5.0)
    waits: list[float] = []
    try:
        first, second = budget(engine, waits), budget(engine, waits)
        await first.acquire("stream.example:443")
        await second.acquire("stream.example:443")
        await first.acquire("stream.example:443")
        with pytest.raises(Spent):
            await second.acquire("stream.example:443")
        assert 19.0 < waits[0] <= 21.0  # until the first connect leaves the 20 s window
        # Another domain, and workers of another scope (another IP), count on their own.
        await second.acquire("stream-demo.example:443")
        await budget(engine, waits, scope="host-b").acquire("stream.example:443")
        assert (first.taken, second.taken, second.waits) == (2, 2, 1)
        assert (first.shared, second.shared) == (True, True)
    finally:
        await engine.dispose()


async def test_concurrent_acquires_from_two_workers_never_overdraw_the_window(database_url: str) -> None:
    engine = create_engine(database_url, 5.0)
    waits: list[float] = []
    try:
        workers = [budget(engine, waits, limit=5), budget(engine, waits, limit=5)]
        results = await asyncio.gather(
            *(workers[i % 2].acquire("stream.example:443") for i in range(12)), return_exceptions=True
        )
    finally:
        await engine.dispose()
    assert sum(1 for r in results if r is None) == 5
    assert all(isinstance(r, Spent) for r in results if r is not None)


async def test_without_postgres_each_worker_still_keeps_the_limit_alone() -> None:
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none", 1.0)  # nothing listens on port 1
    waits: list[float] = []
    try:
        alone = budget(engine, waits)
        for _ in range(3):
            await alone.acquire("stream.example:443")
        with pytest.raises(Spent):
            await alone.acquire("stream.example:443")
    finally:
        await engine.dispose()
    assert alone.taken == 3
    assert not alone.shared
    assert 19.0 < waits[0] <= 21.0
