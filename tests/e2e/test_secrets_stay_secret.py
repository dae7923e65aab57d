"""Credentials never leave the process: no log line, error or health body carries the API key or the secret."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from loguru import logger

from shared.config import Secret
from shared.enums import Endpoint
from tests.conftest import API_KEY
from tests.e2e.conftest import BYBIT_SECRET
from tests.fake_bybit import FakeBybit
from tests.support.waiting import wait_until


@pytest.fixture
def captured_logs() -> Iterator[list[str]]:
    """Every log record of the run, rendered with all its bound fields, at debug level."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(f"{message} {message.record['extra']}"), level="DEBUG")
    yield lines
    logger.remove(sink)


async def test_no_log_line_or_response_carries_the_api_key_or_the_bybit_secret(
    api: httpx.AsyncClient,
    fake: FakeBybit,
    start_worker: Callable[..., Any],
    captured_logs: list[str],
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    bodies: list[str] = []
    async with start_worker() as worker:
        for channel in ("order", "balance"):
            response = await api.post(
                "/api/v1/subscriptions", json={"requesting_service": svc, "channel_type": channel}
            )
            bodies.append(response.text)
        await wait_until(lambda: "wallet" in worker.connections[Endpoint.PRIVATE].protocol.subscribed, what="private")
        await fake.push_account("wallet")
        bodies.append((await api.get("/api/v1/subscriptions", headers={"X-API-Key": "wrong-" + API_KEY})).text)
        bodies.append((await api.get("/health")).text)
    # A second worker with a wrong secret: rejected auth must not print what it tried either.
    async with start_worker(bybit_api_secret=Secret("wrong-" + BYBIT_SECRET)) as rejected:
        await wait_until(lambda: rejected.connections[Endpoint.PRIVATE].auth_failures >= 1, what="rejected auth")
        bodies.append((await api.get("/health")).text)
    everything = "\n".join(captured_logs + bodies)
    assert len(captured_logs) > 20  # the run really logged
    for secret in (API_KEY, BYBIT_SECRET, "wrong-" + BYBIT_SECRET):
        assert secret not in everything, f"{secret!r} leaked"
