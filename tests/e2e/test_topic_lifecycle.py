"""What a topic does around its subscribers: overlapping private subscriptions share one Bybit topic, a
cancelled book leaves nothing behind, and an acknowledged topic that goes silent is reported stale."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from shared.enums import ChannelType, Endpoint
from shared.routing import service_queue
from stream_worker.worker import Worker
from tests.e2e.conftest import consuming, delete_queues
from tests.e2e.test_late_joiner import BOOK, subscribe
from tests.fake_bybit import FakeBybit
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"


async def test_overlapping_order_subscriptions_share_one_bybit_topic_and_each_service_gets_each_event_once(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    everything, linear = (f"svc-{uuid.uuid4().hex[:8]}" for _ in range(2))
    queues = [service_queue(svc, ChannelType.ORDER) for svc in (everything, linear)]
    async with start_worker() as worker:
        rows = [
            await subscribe(api, linear, channel_type="order", category="linear"),
            await subscribe(api, everything, channel_type="order"),
        ]
        private = worker.connections[Endpoint.PRIVATE].protocol
        await wait_until(lambda: "order" in private.subscribed, what="order subscribed")

        async def both_active() -> bool:
            statuses = [(await api.get(f"{URL}/{row['id']}")).json()["status"] for row in rows]
            return statuses == ["active", "active"]

        await wait_until(both_active, what="both subscriptions active")
        async with consuming(rabbitmq_url, queues[0]) as all_orders, consuming(rabbitmq_url, queues[1]) as linears:
            pushed = [
                await fake.push_account("order", category="linear", symbol="BTCUSDT"),
                await fake.push_account("order", category="spot", symbol="ETHUSDT"),
                await fake.push_account("order", category="linear", symbol="SOLUSDT"),
            ]
            live = lambda inbox: [e for e in inbox.envelopes if not e.snapshot]  # noqa: E731
            await wait_until(lambda: len(live(all_orders)) == 3 and len(live(linears)) == 2, what="every event")
    assert private.wanted == frozenset({"order"})  # never `order.linear` beside it
    assert fake.subscribe_requests("order.linear") == 0
    order_ids = [m["data"][0]["orderId"] for m in pushed]
    assert Counter(e.payload["orderId"] for e in live(all_orders)) == Counter(order_ids)
    assert Counter(e.payload["orderId"] for e in live(linears)) == Counter([order_ids[0], order_ids[2]])
    await delete_queues(rabbitmq_url, *queues)


def book_invalids(worker: Worker) -> int:
    counters = worker.markets[Endpoint.LINEAR].counters
    return sum(n for key, n in counters.items() if key.startswith("book_invalid"))


async def test_a_cancelled_book_that_bybit_keeps_sending_says_no_book_invalid_and_is_not_resubscribed(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    queue = service_queue(svc, ChannelType.ORDERBOOK)
    async with start_worker(snapshot_timeout=0.5) as worker:
        row = await subscribe(api, svc, channel_type="orderbook", symbol="BTCUSDT", depth=50)
        async with consuming(rabbitmq_url, queue) as inbox:
            await wait_until(lambda: len(inbox.envelopes) >= 5, what="book events")
            assert (await api.delete(f"{URL}/{row['id']}")).status_code == 200
            linear = worker.connections[Endpoint.LINEAR].protocol
            await wait_until(lambda: BOOK not in linear.subscribed, what="unsubscribed")
            # Frames Bybit sent before it read our unsubscribe: they keep arriving for a while.
            stream = fake.stream(BOOK, category="linear")
            for _ in range(20):
                await fake.push(stream.next(fake.now_ms()), category="linear")
            await wait_until(lambda: worker.dispatcher.counters["dropped:unwanted"] >= 20, what="the late frames read")
            # No state was rebuilt from them, so there is no zombie book to time out and resubscribe.
            books_after = worker.markets[Endpoint.LINEAR].books()
    assert book_invalids(worker) == 0
    assert BOOK not in books_after
    assert worker.markets[Endpoint.LINEAR].counters["book:resubscribe_retry"] == 0
    assert fake.subscribe_requests(BOOK) == 1
    assert not any(e.event_type == "book_invalid" for e in inbox.envelopes)
    await delete_queues(rabbitmq_url, queue)


async def test_a_silent_topic_becomes_stale_within_its_threshold_and_active_again_when_data_resumes(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    threshold = 1.0
    stale_after = {"orderbook": threshold, "ticker": 30.0, "kline": 90.0, "trades": 0.0, "liquidation": 0.0}
    async with start_worker(stale_after=stale_after) as worker:
        row = await subscribe(api, svc, channel_type="orderbook", symbol="BTCUSDT", depth=50)

        async def subscription() -> dict[str, Any]:
            return (await api.get(f"{URL}/{row['id']}")).json()  # type: ignore[no-any-return]

        async def is_active() -> bool:
            body = await subscription()
            return bool(body["status"] == "active" and body["stale_since"] is None and body["last_event_at"])

        await wait_until(is_active, what="active with data")
        fake.mute(BOOK)

        async def is_stale() -> bool:
            return (await subscription())["stale_since"] is not None

        # Threshold, plus the once-a-second check and the state writer's flush.
        await wait_until(is_stale, timeout=threshold + 5, what="reported stale")
        assert (await subscription())["status"] == "active"  # acknowledged: stale says it delivers nothing
        await wait_until(lambda: fake.subscribe_requests(BOOK) == 2, what="one resubscribe attempt")
        status = (await api.get("/status.json")).json()
        fake.unmute(BOOK)
        await wait_until(is_active, timeout=10, what="active again once data flows")
        stale_metric = worker.dispatcher.counters["stale:detected"]
    assert stale_metric == 1
    assert fake.subscribe_requests(BOOK) >= 2
    (topic,) = [t for t in status["topics"] if t["topic"] == BOOK]
    assert topic["status"] == "stale"
    assert topic["stale_since"] is not None


async def test_a_private_topic_first_subscribed_on_a_live_socket_gets_its_state_over_rest(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    queue = service_queue(svc, ChannelType.POSITION)
    async with start_worker() as worker:
        await subscribe(api, svc, channel_type="balance")
        private = worker.connections[Endpoint.PRIVATE].protocol
        await wait_until(lambda: "wallet" in private.subscribed, what="the private socket up with wallet")
        sync = worker.account_sync
        assert sync is not None
        await wait_until(lambda: sync.state["runs"] >= 1, what="the re-sync after auth, done")
        # A position opened while nobody held `position`: Bybit will not push it again on subscribe (§9).
        opened = await fake.push_account("position", category="linear", symbol="BTCUSDT")
        await subscribe(api, svc, channel_type="position", category="linear")
        async with consuming(rabbitmq_url, queue) as positions:
            await wait_until(lambda: positions.envelopes, what="the open position in the new queue")
    # One position; the fake answers each linear settle coin's query with it, so it may come twice (same id).
    assert len({e.event_id for e in positions.envelopes}) == 1
    event = positions.envelopes[0]
    assert event.snapshot is True
    assert event.payload["symbol"] == opened["data"][0]["symbol"]
    assert event.payload["size"] == opened["data"][0]["size"]
    await delete_queues(rabbitmq_url, queue, service_queue(svc, ChannelType.BALANCE))
