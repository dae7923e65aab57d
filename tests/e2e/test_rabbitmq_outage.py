"""RabbitMQ cut under the worker while Bybit keeps pushing: no execution is lost, market loss is counted."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from shared.enums import ChannelType, Endpoint
from shared.routing import service_queue
from stream_worker.broker.publisher import Publisher, PublisherStats
from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.state.persistence import Store, create_engine
from stream_worker.worker import Worker
from tests.e2e.conftest import FAST_SOCKETS, consuming, delete_queues, worker_settings
from tests.fake_bybit import FakeBybit
from tests.support.fault_proxy import FaultProxy, Mode
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"
OUTAGE_SECONDS = 30.0  # the issue asks for 30 s; how long RabbitMQ is unreachable for the worker
EXECUTIONS = 50  # pushed during the outage, spread evenly over it
# Small enough that the trades generated during the outage overflow it, so the drop accounting is exercised.
MARKET_BUFFER = 100


@asynccontextmanager
async def worker_with_market_buffer(settings: Any, market_buffer: int) -> AsyncIterator[Worker]:
    engine = create_engine(settings.database_url, 5.0)
    publisher = Publisher(settings.rabbitmq_url, reconnect_cap=0.5, market_buffer=market_buffer)
    worker = Worker(settings, store=Store(engine, 5.0), publisher=publisher, connection_settings=FAST_SOCKETS)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop), name="worker-under-test")
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await engine.dispose()


def count_market_offers(publisher: Publisher) -> list[int]:
    """Wrap `offer_market` so the test knows how many market events the worker handed to the publisher."""
    offered = [0]
    offer = publisher.offer_market

    def counting(item: Outgoing) -> None:
        offered[0] += 1
        offer(item)

    publisher.offer_market = counting  # type: ignore[method-assign]
    return offered


async def test_executions_pushed_during_a_rabbitmq_outage_all_arrive_and_market_loss_is_counted(
    api: httpx.AsyncClient, fake: FakeBybit, database_url: str, rabbitmq_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    queues = (service_queue(svc, ChannelType.EXECUTION), service_queue(svc, ChannelType.TRADES))
    parts = urlsplit(rabbitmq_url)
    async with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5672) as proxy:
        netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{proxy.port}"
        settings = worker_settings(fake, database_url, urlunsplit(parts._replace(netloc=netloc)))
        async with worker_with_market_buffer(settings, MARKET_BUFFER) as worker:
            offered = count_market_offers(worker.publisher)
            for fields in ({"channel_type": "execution"}, {"channel_type": "trades", "symbol": "BTCUSDT"}):
                response = await api.post(URL, json={"requesting_service": svc, **fields})
                assert response.status_code == 201, response.text
            private = worker.connections[Endpoint.PRIVATE]
            await wait_until(
                lambda: (
                    "execution" in private.protocol.subscribed
                    and "publicTrade.BTCUSDT" in worker.connections[Endpoint.LINEAR].protocol.subscribed
                ),
                what="both topics subscribed",
            )
            private_records = [r for r in fake.connections if r.category == "private"]
            async with consuming(rabbitmq_url, queues[0]) as executions, consuming(rabbitmq_url, queues[1]) as trades:
                await wait_until(lambda: len(trades.envelopes) > 5, what="trades flowing before the cut")
                await proxy.cut()
                await proxy.set_mode(Mode.REFUSE)
                await wait_until(lambda: not worker.publisher.connected, what="the publisher saw the cut")
                before = worker.publisher.stats
                exec_ids: list[str] = []
                for _ in range(EXECUTIONS):
                    # Pacing of the scenario, not synchronisation: the fills are spread over the outage.
                    await asyncio.sleep(OUTAGE_SECONDS / EXECUTIONS)
                    message = await fake.push_account("execution", category="linear", symbol="BTCUSDT")
                    exec_ids.extend(fill["execId"] for fill in message["data"])
                during = worker.publisher.stats
                assert not during.connected, "the proxy refused every connection during the outage"
                await proxy.set_mode(Mode.FORWARD)

                wanted = {f"execution:{exec_id}" for exec_id in exec_ids}
                await wait_until(
                    lambda: wanted <= set(executions.ids()), timeout=20, what="every execution after the outage"
                )

                async def health_shows_the_drops() -> bool:
                    body = (await api.get("/health")).json()
                    publisher = (body.get("worker") or {}).get("publisher") or {}
                    return bool((publisher.get("dropped") or {}).get("market_buffer_full", 0) > 0)

                await wait_until(health_shows_the_drops, timeout=15, what="/health shows the market drops")
                # Stop the market feed, let the publisher empty its buffer, then settle the books.
                fake.auto_push = False

                def balanced() -> tuple[PublisherStats, int] | None:
                    # The count offered and the publisher's counters are read together: pushes already on their way
                    # when auto_push went off are still offered afterwards, so a later read of one would not match.
                    stats, total = worker.publisher.stats, offered[0]
                    # not in_flight: those were published too (written, then the link died under them)
                    dropped = stats.dropped["market_buffer_full"] + stats.dropped["connection_lost"]
                    accounted = stats.published["market"] + dropped
                    return (stats, total) if stats.market_depth == 0 and accounted == total else None

                stats, offered_total = await wait_until(
                    balanced, what="every offered market event published or counted as dropped"
                )
            assert private.reconnects == 0
            assert [r for r in fake.connections if r.category == "private"] == private_records
            assert len(private_records) == 1
            assert private_records[0].is_open
    received = executions.ids()
    distinct = set(received) & wanted
    assert len(exec_ids) == EXECUTIONS
    assert len(distinct) == EXECUTIONS
    assert set(received) == wanted  # nothing else reached the execution queue
    duplicates = len(received) - len(set(received))
    dropped_full = stats.dropped["market_buffer_full"]
    dropped_lost = stats.dropped["connection_lost"]
    assert dropped_full > 0  # the outage overflowed the market buffer, and it was counted
    assert stats.dropped["unencodable"] == 0
    assert stats.published["market"] + dropped_full + dropped_lost == offered_total
    assert stats.reconnects >= 1
    assert stats.confirmed >= EXECUTIONS
    assert len(trades.envelopes) <= stats.published["market"]  # transient: bytes cut in flight can vanish
    print(
        f"\nexecutions pushed={EXECUTIONS} distinct={len(distinct)} deliveries={len(received)} "
        f"duplicates={duplicates} republished={stats.republished} | market offered={offered_total} "
        f"published={stats.published['market']} dropped_full={dropped_full} connection_lost={dropped_lost} "
        f"consumed={len(trades.envelopes)} consumed_lag_or_lost={stats.published['market'] - len(trades.envelopes)} "
        f"| before cut published={before.published} during={during.published}"
    )
    await delete_queues(rabbitmq_url, *queues)
