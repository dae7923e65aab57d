"""Bybit replays nothing after a reconnect: what happened while the worker was away comes back over REST."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx

from shared.enums import ChannelType, Endpoint
from shared.routing import service_queue
from stream_worker.worker import Worker
from tests.e2e.conftest import consuming, delete_queues
from tests.fake_bybit import FakeBybit
from tests.support.waiting import wait_until


def resyncs(worker: Worker) -> int:
    assert worker.account_sync is not None
    runs: int = worker.account_sync.state["runs"]
    return runs


async def test_fill_and_wallet_change_made_while_disconnected_arrive_after_reconnect(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    queues = (service_queue(svc, ChannelType.EXECUTION), service_queue(svc, ChannelType.BALANCE))
    async with start_worker() as worker:
        for channel in ("execution", "balance"):
            response = await api.post(
                "/api/v1/subscriptions", json={"requesting_service": svc, "channel_type": channel}
            )
            assert response.status_code == 201
        private = worker.connections[Endpoint.PRIVATE]
        await wait_until(lambda: {"execution", "wallet"} <= private.protocol.subscribed, what="subscribed")
        await wait_until(lambda: resyncs(worker) >= 1, what="the first re-sync after auth")
        async with consuming(rabbitmq_url, queues[0]) as executions, consuming(rabbitmq_url, queues[1]) as balances:
            fake.refuse_connections(60)
            await fake.drop_connections(close_frame=False)
            await wait_until(lambda: not private.connected, what="the worker disconnected")
            fill = await fake.push_account("execution", category="linear", symbol="BTCUSDT")
            wallet = await fake.push_account("wallet", coins={"USDT": "777.25"})
            assert executions.envelopes == []  # nobody was connected
            assert balances.envelopes == []
            fake.accept_connections()
            await wait_until(lambda: resyncs(worker) >= 2, timeout=20, what="the re-sync after reconnect")
            exec_id = fill["data"][0]["execId"]
            await wait_until(
                lambda: f"execution:{exec_id}" in executions.ids(), what="the missed fill in the execution queue"
            )
            await wait_until(lambda: balances.envelopes, what="the missed wallet change in the balance queue")

            async def balance_stored() -> bool:
                coins = (await api.get("/api/v1/balances")).json()["coins"]
                return any(c["coin"] == "USDT" and c["walletBalance"] == "777.25" for c in coins)

            await wait_until(balance_stored, what="the balance in the API")
    recovered = next(e for e in executions.envelopes if e.event_id == f"execution:{exec_id}")
    assert recovered.snapshot is True
    assert recovered.category == "linear"
    assert recovered.payload["execPrice"] == fill["data"][0]["execPrice"]
    assert all(e.snapshot for e in balances.envelopes)
    assert wallet["data"][0]["coin"][0]["walletBalance"] == "777.25"
    assert "/v5/execution/list" in fake.ledger.requests
    await delete_queues(rabbitmq_url, *queues)


async def test_order_filled_while_disconnected_is_reported_closed_after_reconnect(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    queue = service_queue(svc, ChannelType.ORDER)
    async with start_worker() as worker:
        response = await api.post("/api/v1/subscriptions", json={"requesting_service": svc, "channel_type": "order"})
        assert response.status_code == 201
        private = worker.connections[Endpoint.PRIVATE]
        await wait_until(lambda: "order" in private.protocol.subscribed, what="subscribed")
        await wait_until(lambda: resyncs(worker) >= 1, what="the first re-sync after auth")
        async with consuming(rabbitmq_url, queue) as orders:
            placed = await fake.push_account("order", status="New", symbol="BTCUSDT")
            order_id = placed["data"][0]["orderId"]
            await wait_until(lambda: len(orders.envelopes) == 1, what="the new order, live")
            fake.refuse_connections(60)
            await fake.drop_connections(close_frame=False)
            await wait_until(lambda: not private.connected, what="the worker disconnected")
            await fake.push_account("order", status="Filled", order_id=order_id, symbol="BTCUSDT")
            fake.accept_connections()
            await wait_until(lambda: resyncs(worker) >= 2, timeout=20, what="the re-sync after reconnect")

            def latest_status() -> str | None:
                mine = [e for e in orders.envelopes if e.payload["orderId"] == order_id]
                return max(mine, key=lambda e: int(e.payload["updatedTime"])).payload["orderStatus"] if mine else None

            # The consumer's view of the order must end Filled, as the exchange's does.
            await wait_until(lambda: latest_status() == "Filled", timeout=15, what="the order reported Filled")
    await delete_queues(rabbitmq_url, queue)


async def test_fill_dropped_by_the_exchange_on_a_live_socket_is_recovered_by_a_later_resync(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    queue = service_queue(svc, ChannelType.EXECUTION)
    # Found by the chaos run: a stall shorter than dead_after neither reconnects nor re-authenticates, so only
    # the periodic re-sync can bring the dropped fill back.
    async with start_worker(dead_after=30.0, account_resync_interval=2.0) as worker:
        response = await api.post(
            "/api/v1/subscriptions", json={"requesting_service": svc, "channel_type": "execution"}
        )
        assert response.status_code == 201
        private = worker.connections[Endpoint.PRIVATE]
        await wait_until(lambda: "execution" in private.protocol.subscribed, what="subscribed")
        await wait_until(lambda: resyncs(worker) >= 1, what="the first re-sync after auth")
        async with consuming(rabbitmq_url, queue) as executions:
            fake.stall("private")  # Bybit sends nothing for a moment: the fill pushed now is lost on the way
            lost = await fake.push_account("execution", category="linear", symbol="BTCUSDT")
            fake.unstall("private")
            after = await fake.push_account("execution", category="linear", symbol="BTCUSDT")
            await wait_until(
                lambda: f"execution:{after['data'][0]['execId']}" in executions.ids(), what="the next fill, live"
            )
            assert private.reconnects == 0  # the socket never looked dead: nothing told the worker to re-sync
            lost_id = f"execution:{lost['data'][0]['execId']}"
            await wait_until(lambda: lost_id in executions.ids(), timeout=30, what="the dropped fill, re-synced")
            after_id = f"execution:{after['data'][0]['execId']}"
            # The live fill comes again in the same re-sync, under the id it had: a duplicate consumers drop.
            await wait_until(lambda: executions.ids().count(after_id) >= 2, what="the live fill, re-published")
            assert set(executions.ids()) == {lost_id, after_id}
            assert worker.account_sync is not None
            assert worker.account_sync.state["periodic_runs"] >= 1
            assert private.reconnects == 0
    await delete_queues(rabbitmq_url, queue)
