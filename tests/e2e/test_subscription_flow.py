"""POST a subscription, and the worker subscribes on Bybit and delivers every event to the service's queue."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx

from shared.enums import ChannelType
from shared.routing import service_queue
from tests.e2e.conftest import consuming, delete_queues
from tests.fake_bybit import FakeBybit
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"


def service() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


async def subscribe(api: httpx.AsyncClient, svc: str, **fields: Any) -> dict[str, Any]:
    response = await api.post(URL, json={"requesting_service": svc, **fields})
    assert response.status_code in (200, 201), response.text
    return response.json()  # type: ignore[no-any-return]


async def has_status(api: httpx.AsyncClient, subscription_id: str, expected: str) -> bool:
    return bool((await api.get(f"{URL}/{subscription_id}")).json()["status"] == expected)


async def test_posted_subscription_reaches_the_services_queue(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = service()
    queue = service_queue(svc, ChannelType.TRADES)
    async with start_worker():
        row = await subscribe(api, svc, channel_type="trades", symbol="BTCUSDT")
        await wait_until(lambda: fake.subscribe_requests("publicTrade.BTCUSDT") == 1, what="bybit subscribe")
        await wait_until(lambda: has_status(api, row["id"], "active"), what="status active")
        async with consuming(rabbitmq_url, queue) as inbox:
            await wait_until(lambda: len(inbox.envelopes) >= 5, what="five trade events")
    envelope = inbox.envelopes[0]
    assert envelope.event_type == "trades"
    assert (envelope.category, envelope.symbol, envelope.topic) == (
        "linear",
        "BTCUSDT",
        "publicTrade.BTCUSDT",
    )
    assert envelope.event_id.startswith("trades:linear:BTCUSDT:")
    assert envelope.received_ts <= envelope.published_ts
    assert isinstance(envelope.payload, dict)
    assert isinstance(envelope.payload["p"], str)  # decimal strings, never floats
    message = inbox.messages[0]
    assert message.message_id == envelope.event_id
    assert message.headers["trace_id"] == envelope.trace_id
    assert len(set(inbox.ids())) == len(inbox.ids())
    await delete_queues(rabbitmq_url, queue)


async def test_two_services_share_one_bybit_subscription_until_both_cancel(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc_a, svc_b = service(), service()
    topic = "publicTrade.ETHUSDT"
    async with start_worker():
        row_a = await subscribe(api, svc_a, channel_type="trades", symbol="ETHUSDT")
        row_b = await subscribe(api, svc_b, channel_type="trades", symbol="ETHUSDT")
        async with (
            consuming(rabbitmq_url, service_queue(svc_a, ChannelType.TRADES)) as inbox_a,
            consuming(rabbitmq_url, service_queue(svc_b, ChannelType.TRADES)) as inbox_b,
        ):
            await wait_until(lambda: len(inbox_a.envelopes) >= 20 and len(inbox_b.envelopes) >= 20, what="events")
            assert fake.subscribe_requests(topic) == 1
            # Every event published once both were bound reaches both queues. B's first event was published
            # after B's binding; A sees events in publish order, so everything from there on is B's too.
            first_b = inbox_b.ids()[0]
            await wait_until(lambda: first_b in inbox_a.ids(), what="B's first event in A's queue")
            start = inbox_a.ids().index(first_b)
            await wait_until(lambda: len(inbox_a.ids()) >= start + 10, what="ten shared events in A")
            shared = set(inbox_a.ids()[start : start + 10])
            await wait_until(lambda: shared <= set(inbox_b.ids()), what="the same ten events in B")

            await api.delete(f"{URL}/{row_a['id']}")
            received_b = len(inbox_b.envelopes)
            await wait_until(lambda: len(inbox_b.envelopes) >= received_b + 10, what="B keeps receiving")
            assert _unsubscribes(fake, topic) == 0

            await api.delete(f"{URL}/{row_b['id']}")
            await wait_until(lambda: _unsubscribes(fake, topic) == 1, what="the unsubscribe after the last cancel")
    await delete_queues(
        rabbitmq_url, service_queue(svc_a, ChannelType.TRADES), service_queue(svc_b, ChannelType.TRADES)
    )


def _unsubscribes(fake: FakeBybit, topic: str) -> int:
    return sum(
        1
        for record in fake.connections
        for request in record.requests
        if request.op == "unsubscribe" and topic in request.args
    )


async def test_worker_started_after_the_subscriptions_converges_from_postgres_alone(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = service()
    await subscribe(api, svc, channel_type="ticker", symbol="BTCUSDT")
    await subscribe(api, svc, channel_type="orderbook", symbol="BTCUSDT", category="spot")
    async with start_worker():
        await wait_until(
            lambda: (
                fake.subscribe_requests("tickers.BTCUSDT") == 1 and fake.subscribe_requests("orderbook.50.BTCUSDT") == 1
            ),
            what="both topics subscribed from the database",
        )
        async with consuming(rabbitmq_url, service_queue(svc, ChannelType.ORDERBOOK)) as inbox:
            await wait_until(lambda: inbox.envelopes, what="a book event")
    assert inbox.envelopes[0].category == "spot"
    await delete_queues(rabbitmq_url, service_queue(svc, ChannelType.TICKER), service_queue(svc, ChannelType.ORDERBOOK))


async def test_topic_bybit_rejects_is_failed_with_its_message_in_the_api(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any]
) -> None:
    fake.reject_topic("tickers.NOPEUSDT", "Invalid symbol :[tickers.NOPEUSDT]")
    async with start_worker():
        row = await subscribe(api, service(), channel_type="ticker", symbol="NOPEUSDT")
        await wait_until(lambda: has_status(api, row["id"], "failed"), what="status failed")
        failed = (await api.get(f"{URL}/{row['id']}")).json()
        assert failed["last_error"] == "Invalid symbol :[tickers.NOPEUSDT]"
        assert fake.subscribe_requests("tickers.NOPEUSDT") == 1
