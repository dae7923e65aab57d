"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from stream_worker.state.persistence import Store, create_engine


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    engine = create_engine(database_url, 5.0)
    try:
        yield Store(engine, 5.0)
    finally:
        await engine.dispose()
