"""One trace id follows a REST call into the worker: the notice, the subscribe op and its ack."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from loguru import logger

from shared.enums import Endpoint
from tests.fake_bybit import FakeBybit
from tests.support.waiting import wait_until


@pytest.fixture
def records() -> Iterator[list[dict[str, Any]]]:
    captured: list[dict[str, Any]] = []
    sink = logger.add(lambda message: captured.append(dict(message.record)), level="DEBUG")
    yield captured
    logger.remove(sink)


def messages_with(records: list[dict[str, Any]], trace_id: str) -> set[str]:
    return {r["message"] for r in records if r["extra"].get("trace_id") == trace_id}


async def test_trace_id_of_a_post_follows_the_notice_the_subscribe_and_its_ack(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], records: list[dict[str, Any]]
) -> None:
    trace_id = f"trace-{uuid.uuid4().hex[:12]}"
    # No timer re-read during the test: it could apply the new row before the notice does (correct, but then
    # the notice is skipped as already applied and this test would not see the path it is about).
    async with start_worker(reconcile_interval=60.0) as worker:
        # Start-up re-reads twice: the timer's first round and the command listener's connect.
        # ... and the worker has joined the cluster, so the notice's own converge is what subscribes the topic.
        await wait_until(
            lambda: worker.commands.connected and worker.convergence.reloads >= 2 and worker.cluster.ready,
            what="start-up re-reads done and the cluster joined",
        )
        response = await api.post(
            "/api/v1/subscriptions",
            json={"requesting_service": "svc-trace", "channel_type": "kline", "symbol": "BTCUSDT", "interval": 5},
            headers={"X-Trace-Id": trace_id},
        )
        assert response.headers["X-Trace-Id"] == trace_id
        await wait_until(
            lambda: "kline.5.BTCUSDT" in worker.connections[Endpoint.LINEAR].protocol.subscribed, what="acked"
        )
        await wait_until(lambda: "subscribe acked" in messages_with(records, trace_id), what="the ack's log line")
    seen = messages_with(records, trace_id)
    assert {"request", "change notice applied", "subscribe requested", "subscribe acked"} <= seen
