"""After a gap in the private stream, consumers and `/api/v1/balances` end up with the exchange's true state,
even where Bybit's REST lists are silent: an order cancelled, a position closed and a coin emptied while the
worker was away are resolved, and more executions than fit one page all arrive. Two services consume."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx

from shared.enums import ChannelType, Endpoint
from shared.routing import service_queue
from stream_worker.worker import Worker
from tests.e2e.conftest import Inbox, consuming, delete_queues
from tests.fake_bybit import FakeBybit
from tests.support.waiting import wait_until

CHANNELS = (ChannelType.ORDER, ChannelType.EXECUTION, ChannelType.POSITION, ChannelType.BALANCE)
FILLS_DURING_GAP = 150  # the worker asks for 100 a page


def resyncs(worker: Worker) -> int:
    assert worker.account_sync is not None
    runs: int = worker.account_sync.state["runs"]
    return runs


def payloads(inbox: Inbox, event_type: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e.event_id, e.payload) for e in inbox.envelopes if e.event_type == event_type]


@asynccontextmanager
async def inboxes(rabbitmq_url: str, services: list[str]) -> AsyncIterator[dict[tuple[str, ChannelType], Inbox]]:
    async with AsyncExitStack() as stack:
        opened = {}
        for service in services:
            for channel in CHANNELS:
                opened[(service, channel)] = await stack.enter_async_context(
                    consuming(rabbitmq_url, service_queue(service, channel))
                )
        yield opened


async def balances(api: httpx.AsyncClient) -> dict[str, str]:
    coins = (await api.get("/api/v1/balances")).json()["coins"]
    return {coin["coin"]: coin["walletBalance"] for coin in coins}


async def has_balance(api: httpx.AsyncClient, coin: str, balance: str) -> bool:
    return (await balances(api)).get(coin) == balance


async def test_order_cancelled_position_closed_coin_emptied_and_many_fills_during_a_gap_reach_every_consumer(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    services = [f"svc-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    async with start_worker() as worker:
        for service in services:
            for channel in CHANNELS:
                body = {"requesting_service": service, "channel_type": channel.value}
                assert (await api.post("/api/v1/subscriptions", json=body)).status_code in (200, 201)
        private = worker.connections[Endpoint.PRIVATE]
        wanted = {"order", "execution", "position", "wallet"}
        await wait_until(lambda: wanted <= private.protocol.subscribed, what="private topics subscribed")
        await wait_until(lambda: resyncs(worker) >= 1, what="the first re-sync after auth")
        async with inboxes(rabbitmq_url, services) as inbox:
            # Before the gap: two open orders, two open positions, two coins; every consumer sees them.
            doomed = (await fake.push_account("order", status="New", symbol="BTCUSDT"))["data"][0]
            kept = (await fake.push_account("order", status="New", symbol="ETHUSDT"))["data"][0]
            await fake.push_account("position", symbol="BTCUSDT", size="0.5")
            await fake.push_account("position", symbol="ETHUSDT", size="2")
            await fake.push_account("wallet", coins={"USDT": "1000", "BTC": "0.5"})
            for service in services:
                await wait_until(
                    lambda s=service: (
                        len(inbox[(s, ChannelType.ORDER)].envelopes) >= 2
                        and len(inbox[(s, ChannelType.POSITION)].envelopes) >= 2
                        and len(inbox[(s, ChannelType.BALANCE)].envelopes) >= 2
                    ),
                    what=f"{service} saw the state before the gap",
                )
            await wait_until(lambda: has_balance(api, "BTC", "0.5"), what="BTC stored")

            fake.refuse_connections(60)
            await fake.drop_connections(close_frame=False)
            await wait_until(lambda: not private.connected, what="the worker disconnected")
            cancelled = (await fake.push_account("order", status="Cancelled", order_id=doomed["orderId"]))["data"][0]
            closed = (await fake.push_account("position", symbol="BTCUSDT", size="0"))["data"][0]
            await fake.push_account("wallet", coins={"BTC": "0"})
            fills = (await fake.push_account("execution", symbol="SOLUSDT", fills=FILLS_DURING_GAP))["data"]
            fake.accept_connections()

            await wait_until(lambda: resyncs(worker) >= 2, timeout=20, what="the re-sync after reconnect")
            fill_ids = {f"execution:{fill['execId']}" for fill in fills}
            for service in services:
                got = {channel: inbox[(service, channel)] for channel in CHANNELS}
                await wait_until(
                    lambda got=got: (
                        fill_ids <= set(got[ChannelType.EXECUTION].ids())
                        and any(p["orderStatus"] == "Cancelled" for _, p in payloads(got[ChannelType.ORDER], "order"))
                        and any(p["size"] == "0" for _, p in payloads(got[ChannelType.POSITION], "position"))
                        and any(
                            p["coin"] == "BTC" and p["walletBalance"] == "0"
                            for _, p in payloads(got[ChannelType.BALANCE], "balance")
                        )
                    ),
                    what=f"{service} saw every change made during the gap",
                )
            await wait_until(lambda: has_balance(api, "BTC", "0"), what="BTC zero in the balances API")
            final = await balances(api)

    assert final["USDT"] == "1000"
    for service in services:
        orders, positions = inbox[(service, ChannelType.ORDER)], inbox[(service, ChannelType.POSITION)]
        coins, executions = inbox[(service, ChannelType.BALANCE)], inbox[(service, ChannelType.EXECUTION)]
        # Each change arrives exactly once, under one event id, flagged as fetched state.
        cancels = [(i, p) for i, p in payloads(orders, "order") if p["orderStatus"] == "Cancelled"]
        assert [p["orderId"] for _, p in cancels] == [cancelled["orderId"]]
        flats = [(i, p) for i, p in payloads(positions, "position") if p["size"] == "0"]
        assert [(p["symbol"], p["updatedTime"]) for _, p in flats] == [("BTCUSDT", closed["updatedTime"])]
        zeros = [(i, p) for i, p in payloads(coins, "balance") if p["walletBalance"] == "0"]
        assert [p["coin"] for _, p in zeros] == ["BTC"]
        counts = Counter(executions.ids())
        assert all(counts[event_id] == 1 for event_id in fill_ids)
        for envelopes, event_id in ((orders, cancels[0][0]), (positions, flats[0][0]), (coins, zeros[0][0])):
            (envelope,) = [e for e in envelopes.envelopes if e.event_id == event_id]
            assert envelope.snapshot is True
        # The order that stayed open is still open; nothing was reported incomplete.
        assert not any(
            p["orderId"] == kept["orderId"] and p["orderStatus"] != "New" for _, p in payloads(orders, "order")
        )
        assert all(
            e.event_type != "resync_incomplete" for i in (orders, positions, coins, executions) for e in i.envelopes
        )
    assert worker.account_sync is not None
    assert dict(worker.account_sync.state["resolved"]) == {"orders": 1, "positions": 1, "coins": 1}
    assert "/v5/order/history" in fake.ledger.requests
    assert any("cursor=page_token%3D100" in query for query in fake.ledger.queries)  # the cursor as it came
    await delete_queues(rabbitmq_url, *(service_queue(s, c) for s in services for c in CHANNELS))
