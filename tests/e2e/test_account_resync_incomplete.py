"""A re-sync that cannot complete is never silent: consumers of every wanted account channel receive a
`resync_incomplete` event saying why, and the worker counts it per cause."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.exposition import generate_latest

from shared.enums import ChannelType, Endpoint
from shared.routing import service_queue
from stream_worker.worker import Worker
from tests.e2e.conftest import Inbox, consuming, delete_queues
from tests.fake_bybit import FakeBybit
from tests.support.waiting import wait_until


def incomplete(inbox: Inbox, reason: str) -> list[dict[str, Any]]:
    return [e.payload for e in inbox.envelopes if e.event_type == "resync_incomplete" and e.payload["reason"] == reason]


async def subscribe(api: httpx.AsyncClient, service: str, channel: str, **fields: str) -> None:
    body = {"requesting_service": service, "channel_type": channel, **fields}
    assert (await api.post("/api/v1/subscriptions", json=body)).status_code == 201


def resyncs(worker: Worker) -> int:
    assert worker.account_sync is not None
    runs: int = worker.account_sync.state["runs"]
    return runs


async def test_a_rest_ban_is_announced_on_every_wanted_channel_and_waits_ten_minutes(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    queues = (service_queue(service, ChannelType.ORDER), service_queue(service, ChannelType.BALANCE))
    fake.ban_rest(3600)
    async with start_worker() as worker:
        await subscribe(api, service, "order", category="linear")
        await subscribe(api, service, "balance")
        async with consuming(rabbitmq_url, queues[0]) as orders, consuming(rabbitmq_url, queues[1]) as coins:
            await wait_until(
                lambda: incomplete(orders, "banned") and incomplete(coins, "banned"),
                timeout=15,
                what="a banned re-sync announced to both queues",
            )
            assert worker.account_sync is not None
            metrics = generate_latest(worker.metrics).decode()
            assert worker.connections[Endpoint.PRIVATE].protocol.authenticated  # the stream itself goes on
    (order_event,) = incomplete(orders, "banned")
    assert order_event["retry_in_s"] >= 600  # rate-limit.mdx: "wait for at least 10 minutes"
    assert "HTTP 403" in order_event["detail"]
    assert resyncs(worker) == 0
    # Once per query and gap, not again on every retry. The worker holds Bybit's all-in-one `order` topic (one
    # subscription serves `order` and `order.linear` alike), so the re-sync reads orders in all four categories,
    # plus the wallet: five queries.
    assert worker.account_sync.incomplete["banned"] == 5
    assert 'ws_gateway_worker_account_resync_incomplete_total{cause="banned"} 5.0' in metrics
    await delete_queues(rabbitmq_url, *queues)


async def test_a_rate_limited_resync_is_announced_then_retried_until_it_lands(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    queue = service_queue(service, ChannelType.EXECUTION)
    fake.throttle_rest(1)
    async with start_worker() as worker:
        await subscribe(api, service, "execution", category="spot")
        async with consuming(rabbitmq_url, queue) as executions:
            await wait_until(lambda: resyncs(worker) >= 1, timeout=15, what="the re-sync landed after a retry")
            await wait_until(lambda: incomplete(executions, "rate_limited"), what="the rate limit announced")
    (event,) = incomplete(executions, "rate_limited")
    assert "10006" in event["detail"]
    assert worker.account_sync is not None
    # One per category of the all-in-one `execution` topic the worker holds; this queue saw its own category's.
    assert worker.account_sync.incomplete == {"rate_limited": 4}
    await delete_queues(rabbitmq_url, queue)
