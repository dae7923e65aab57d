"""PostgreSQL cut under the worker: it keeps streaming and publishing; status and balance writes land later."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from shared.enums import ChannelType, Endpoint
from shared.routing import service_queue
from tests.e2e.conftest import consuming, delete_queues
from tests.fake_bybit import FakeBybit
from tests.support.fault_proxy import FaultProxy, Mode
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"


async def test_worker_streams_through_a_postgres_outage_and_writes_what_it_owes_afterwards(
    api: httpx.AsyncClient,
    fake: FakeBybit,
    start_worker: Callable[..., Any],
    database_url: str,
    rabbitmq_url: str,
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    parts = urlsplit(database_url)
    async with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        worker_db = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
        async with start_worker(database_url=worker_db) as worker:
            await api.post(URL, json={"requesting_service": svc, "channel_type": "trades", "symbol": "BTCUSDT"})
            await api.post(URL, json={"requesting_service": svc, "channel_type": "balance"})
            await wait_until(lambda: "wallet" in worker.connections[Endpoint.PRIVATE].protocol.subscribed, what="sub")
            async with (
                consuming(rabbitmq_url, service_queue(svc, ChannelType.TRADES)) as trades,
                consuming(rabbitmq_url, service_queue(svc, ChannelType.BALANCE)) as balances,
            ):
                await proxy.set_mode(Mode.REFUSE)
                # A subscription made during the outage: the API has PostgreSQL, the worker does not.
                late = await api.post(
                    URL, json={"requesting_service": svc, "channel_type": "ticker", "symbol": "ETHUSDT"}
                )
                await fake.push_account("wallet", coins={"USDT": "4242"})
                seen = len(trades.envelopes)
                await wait_until(lambda: len(trades.envelopes) > seen + 20, what="trades keep flowing")
                await wait_until(lambda: balances.envelopes, what="the wallet event is still published")
                await wait_until(
                    lambda: "tickers.ETHUSDT" in worker.connections[Endpoint.LINEAR].protocol.subscribed,
                    what="the notice applied without PostgreSQL",
                )
                assert (await api.get(f"{URL}/{late.json()['id']}")).json()["status"] == "pending"

                await proxy.set_mode(Mode.FORWARD)

                async def balance_landed() -> bool:
                    coins = (await api.get("/api/v1/balances")).json()["coins"]
                    return any(c["coin"] == "USDT" and c["walletBalance"] == "4242" for c in coins)

                async def status_landed() -> bool:
                    return bool((await api.get(f"{URL}/{late.json()['id']}")).json()["status"] == "active")

                await wait_until(balance_landed, timeout=30, what="the balance written after the outage")
                await wait_until(status_landed, timeout=30, what="the status written after the outage")
            assert worker.state.failed_flushes + worker.balances.failed_writes >= 1
    await delete_queues(
        rabbitmq_url,
        service_queue(svc, ChannelType.TRADES),
        service_queue(svc, ChannelType.BALANCE),
        service_queue(svc, ChannelType.TICKER),
    )
