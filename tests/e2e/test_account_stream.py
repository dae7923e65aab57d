"""The private stream end to end: account events reach quorum queues, wallet pushes reach the balances API."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import httpx

from shared.enums import ChannelType
from shared.routing import service_queue
from stream_worker.worker import Worker
from tests.e2e.conftest import consuming, delete_queues
from tests.fake_bybit import FakeBybit
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"


async def subscribe(api: httpx.AsyncClient, svc: str, **fields: Any) -> dict[str, Any]:
    response = await api.post(URL, json={"requesting_service": svc, **fields})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def private_ready(worker: Worker, fake: FakeBybit, *topics: str) -> bool:
    """Subscribed, and the REST reads that follow a subscribe are done (the re-sync after auth, a later topic's
    join snapshot): a push landing before one of them ends is read back by it and published a second time
    (at-least-once, same event id), which tests that count updates must not see."""
    connection = worker.connections[next(e for e in worker.connections if e.private)]
    resynced = worker.account_sync is not None and worker.account_sync.state["runs"] >= 1
    subscribed = all(topic in connection.protocol.subscribed for topic in topics)
    return subscribed and resynced and worker.snapshots.waiting == 0


async def test_wallet_push_is_published_and_lands_in_the_balances_api(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    async with start_worker() as worker:
        await subscribe(api, svc, channel_type="balance")
        await wait_until(lambda: private_ready(worker, fake, "wallet"), what="wallet subscribed")
        async with consuming(rabbitmq_url, service_queue(svc, ChannelType.BALANCE)) as inbox:
            message = await fake.push_account("wallet", coins={"USDT": "1234.5678", "BTC": "0.00102964"})
            await wait_until(lambda: len(inbox.envelopes) == 2, what="one balance event per coin")

            async def stored() -> bool:
                body = (await api.get("/api/v1/balances")).json()
                return len(body["coins"]) == 2

            await wait_until(stored, what="balances stored")
    body = (await api.get("/api/v1/balances")).json()
    coins = {c["coin"]: c for c in body["coins"]}
    assert coins["USDT"]["walletBalance"] == "1234.5678"
    assert coins["BTC"]["equity"] == "0.00102964"
    assert coins["USDT"]["message_id"] == message["id"]
    (account,) = body["accounts"]
    assert account["totalEquity"] == "1234.56882964"
    assert {e.event_id for e in inbox.envelopes} == {
        f"balance:{message['id']}:UNIFIED:USDT",
        f"balance:{message['id']}:UNIFIED:BTC",
    }
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in inbox.messages)
    history = (await api.get("/api/v1/balances/history", params={"coin": "USDT"})).json()
    assert history["total"] == 1
    await delete_queues(rabbitmq_url, service_queue(svc, ChannelType.BALANCE))


async def test_order_and_execution_events_reach_quorum_queues_once_per_update(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    async with start_worker() as worker:
        await subscribe(api, svc, channel_type="order", category="linear")
        await subscribe(api, svc, channel_type="execution")
        await wait_until(lambda: private_ready(worker, fake, "order", "execution"), what="subscribed")
        async with (
            consuming(rabbitmq_url, service_queue(svc, ChannelType.ORDER)) as orders,
            consuming(rabbitmq_url, service_queue(svc, ChannelType.EXECUTION)) as executions,
        ):
            await fake.push_account("order", category="linear", symbol="BTCUSDT")
            await fake.push_account("execution", category="linear", symbol="BTCUSDT", fills=3)
            await fake.push_account("order", category="spot", symbol="BTCUSDT")  # not asked for
            await wait_until(lambda: len(orders.envelopes) == 1 and len(executions.envelopes) == 3, what="events")
    assert orders.envelopes[0].category == "linear"
    assert len({e.event_id for e in executions.envelopes}) == 3
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            service_queue(svc, ChannelType.ORDER), durable=True, arguments={"x-queue-type": "quorum"}
        )
        assert queue.name == service_queue(svc, ChannelType.ORDER)  # same arguments: it is a quorum queue
    await delete_queues(rabbitmq_url, service_queue(svc, ChannelType.ORDER), service_queue(svc, ChannelType.EXECUTION))
