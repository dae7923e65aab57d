"""Every service builds the true state from its own queue, whenever it joins (issue 14).

A second service that subscribes to a topic already streaming gets a snapshot to its queue only, before its
next delta; the first service gets nothing extra. A consumer whose queue lost messages asks for a snapshot.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import aio_pika
import httpx

from shared.enums import ChannelType, Endpoint
from shared.events import EventEnvelope
from shared.routing import service_queue
from stream_worker.worker import Worker
from tests.e2e.conftest import Inbox, consuming, delete_queues
from tests.e2e.test_book_integrity import ConsumerBook
from tests.fake_bybit import FakeBybit
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"
BOOK = "orderbook.50.BTCUSDT"
TICKER = "tickers.BTCUSDT"


async def subscribe(api: httpx.AsyncClient, svc: str, **fields: Any) -> dict[str, Any]:
    response = await api.post(URL, json={"requesting_service": svc, **fields})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def active(api: httpx.AsyncClient, subscription_id: str) -> bool:
    return bool((await api.get(f"{URL}/{subscription_id}")).json()["status"] == "active")


def rebuilt_books(envelopes: list[EventEnvelope]) -> dict[int, tuple[dict[Decimal, Any], dict[Decimal, Any]]]:
    """What a consumer following the README holds after each `u`: deltas before its first snapshot are skipped,
    every delta must follow the previous `u` by one, and our checksum must match the consumer's own book."""
    books: dict[int, tuple[dict[Decimal, Any], dict[Decimal, Any]]] = {}
    consumer: ConsumerBook | None = None
    last_u: int | None = None
    for event in envelopes:
        if event.topic != BOOK:
            continue
        if event.event_type == "book_invalid":
            consumer, last_u = None, None
            continue
        payload = event.payload
        if payload["type"] == "snapshot":
            consumer = ConsumerBook()
        elif consumer is None:
            continue  # published before our snapshot: the README says to skip it
        else:
            assert payload["u"] == last_u + 1 if last_u is not None else True, event.event_id
        consumer.apply(payload)
        last_u = payload["u"]
        assert consumer.checksum(payload["checksum_levels"]) == payload["checksum"], event.event_id
        books[payload["u"]] = (dict(consumer.bids), dict(consumer.asks))
    return books


async def test_late_book_subscriber_builds_the_same_book_and_the_first_gets_nothing_extra(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    first, late = (f"svc-{uuid.uuid4().hex[:8]}" for _ in range(2))
    queues = [service_queue(svc, ChannelType.ORDERBOOK) for svc in (first, late)]
    book = {"channel_type": "orderbook", "symbol": "BTCUSDT", "depth": 50}
    async with start_worker() as worker:
        await subscribe(api, first, **book)
        async with consuming(rabbitmq_url, queues[0]) as a:
            await wait_until(lambda: len(a.envelopes) >= 20, what="the first service's book")
            await subscribe(api, late, **book)
            async with consuming(rabbitmq_url, queues[1]) as b:
                await wait_until(lambda: any(e.snapshot for e in b.envelopes), what="the join snapshot")
                joined_at = next(i for i, e in enumerate(b.envelopes) if e.snapshot)
                await wait_until(lambda: len(b.envelopes) > joined_at + 20, what="deltas after the snapshot")
                last_b = b.envelopes[-1].payload["u"]
                await wait_until(lambda: any(e.payload.get("u") == last_b for e in a.envelopes), what="A caught up")
        assert fake.subscribe_requests(BOOK) == 1  # Bybit was asked once: the snapshot is ours
        assert worker.snapshots.counters["snapshot:join:orderbook"] == 1
    snapshot = b.envelopes[joined_at]
    assert snapshot.payload["type"] == "snapshot"
    assert snapshot.event_type == "orderbook"
    assert not any(e.snapshot for e in a.envelopes), "the first service received the join snapshot"
    assert len(a.ids()) == len(set(a.ids())), "the first service received something twice"
    assert b.envelopes[joined_at + 1].payload["u"] == snapshot.payload["u"] + 1  # the next delta follows it
    books_a, books_b = rebuilt_books(a.envelopes), rebuilt_books(b.envelopes)
    common = sorted(set(books_a) & set(books_b))
    assert len(common) >= 20
    for u in common:
        assert books_a[u] == books_b[u], f"books differ at u={u}"
    await delete_queues(rabbitmq_url, *queues)


async def test_late_ticker_subscriber_gets_the_full_merged_ticker_first(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    first, late = (f"svc-{uuid.uuid4().hex[:8]}" for _ in range(2))
    queues = [service_queue(svc, ChannelType.TICKER) for svc in (first, late)]
    ticker = {"channel_type": "ticker", "symbol": "BTCUSDT"}
    async with start_worker():
        await subscribe(api, first, **ticker)
        async with consuming(rabbitmq_url, queues[0]) as a:
            await wait_until(lambda: len(a.envelopes) >= 10, what="the first service's tickers")
            await subscribe(api, late, **ticker)
            async with consuming(rabbitmq_url, queues[1]) as b:
                await wait_until(lambda: any(e.snapshot for e in b.envelopes), what="the join snapshot")
                await wait_until(lambda: len(b.envelopes) >= 10, what="tickers after the snapshot")
                last = b.envelopes[-1].event_id
                await wait_until(lambda: last in a.ids(), what="A caught up")
    assert not any(e.snapshot for e in a.envelopes)
    assert len(a.ids()) == len(set(a.ids()))
    joined_at = next(i for i, e in enumerate(b.envelopes) if e.snapshot)
    snapshot = b.envelopes[joined_at]
    fields = {k: v for k, v in snapshot.payload.items() if k not in ("type", "changed")}
    # The snapshot equals the first service's merged ticker at the same push, and every later event matches.
    same = [e for e in a.envelopes if (e.payload["cs"], e.payload["ts"]) == (fields["cs"], fields["ts"])]
    assert same, "the snapshot is a state the first service also had"
    assert {k: v for k, v in same[-1].payload.items() if k not in ("type", "changed")} == fields
    assert snapshot.payload["type"] == "snapshot"
    assert set(snapshot.payload["changed"]) >= {"lastPrice"}
    by_id = {e.event_id: e.payload for e in a.envelopes}
    for event in b.envelopes[joined_at + 1 :]:
        assert by_id[event.event_id] == event.payload
    await delete_queues(rabbitmq_url, *queues)


def private_subscribed(worker: Worker, topic: str) -> bool:
    return topic in worker.connections[Endpoint.PRIVATE].protocol.subscribed


def open_orders(inbox: Inbox) -> dict[str, str]:
    """orderId -> the last orderStatus the service saw."""
    return {e.payload["orderId"]: e.payload["orderStatus"] for e in inbox.envelopes}


async def test_late_private_subscribers_get_open_orders_positions_and_wallet_over_rest(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    first, late = (f"svc-{uuid.uuid4().hex[:8]}" for _ in range(2))
    channels = (ChannelType.ORDER, ChannelType.POSITION, ChannelType.BALANCE)
    queues = {(svc, c): service_queue(svc, c) for svc in (first, late) for c in channels}
    async with start_worker() as worker:
        for channel in channels:
            await subscribe(api, first, channel_type=channel.value)
        for topic in ("order", "position", "wallet"):
            await wait_until(lambda topic=topic: private_subscribed(worker, topic), what=f"{topic} subscribed")
        async with (
            consuming(rabbitmq_url, queues[(first, ChannelType.ORDER)]) as orders_a,
            consuming(rabbitmq_url, queues[(first, ChannelType.POSITION)]) as positions_a,
            consuming(rabbitmq_url, queues[(first, ChannelType.BALANCE)]) as wallet_a,
        ):
            await fake.push_account("order", category="linear", symbol="BTCUSDT")
            await fake.push_account("order", category="spot", symbol="ETHUSDT")
            await fake.push_account("position", category="linear", symbol="BTCUSDT")
            await fake.push_account("wallet", coins={"USDT": "1000.5"})
            await wait_until(lambda: len(open_orders(orders_a)) == 2 and positions_a.envelopes, what="A's state")
            await wait_until(lambda: worker.snapshots.waiting == 0, what="A's own join snapshots sent")
            await wait_until(
                lambda: any(e.payload.get("walletBalance") == "1000.5" and not e.snapshot for e in wallet_a.envelopes),
                what="A's wallet",
            )
            seen_a = (len(orders_a.envelopes), len(positions_a.envelopes), len(wallet_a.envelopes))
            late_traces = set()
            for channel in channels:
                response = await api.post(URL, json={"requesting_service": late, "channel_type": channel.value})
                assert response.status_code == 201, response.text
                late_traces.add(response.headers["X-Trace-Id"])  # the join snapshots carry the notice's trace id
            async with (
                consuming(rabbitmq_url, queues[(late, ChannelType.ORDER)]) as orders_b,
                consuming(rabbitmq_url, queues[(late, ChannelType.POSITION)]) as positions_b,
                consuming(rabbitmq_url, queues[(late, ChannelType.BALANCE)]) as wallet_b,
            ):
                await wait_until(lambda: len(open_orders(orders_b)) == 2, what="B's open orders")
                await wait_until(lambda: positions_b.envelopes and wallet_b.envelopes, what="B's positions, wallet")
                await fake.push_account("order", category="linear", symbol="SOLUSDT")  # both get what follows
                await wait_until(lambda: len(open_orders(orders_b)) == 3, what="B's next order")
                await wait_until(lambda: len(open_orders(orders_a)) == 3, what="A's next order")
    assert open_orders(orders_a) == open_orders(orders_b)
    assert all(e.snapshot for e in orders_b.envelopes[:2])
    # Same event ids as the stream's and the re-sync's: a consumer recognises what it already has.
    assert {e.event_id for e in orders_b.envelopes} <= {e.event_id for e in orders_a.envelopes}
    positions = {e.payload["symbol"]: e.payload["size"] for e in positions_b.envelopes}
    assert positions == {e.payload["symbol"]: e.payload["size"] for e in positions_a.envelopes}

    # A wallet snapshot's id is the re-sync's (per REST answer): the state is what must match.
    def coins(inbox: Inbox) -> dict[str, str]:
        return {e.payload["coin"]: e.payload["walletBalance"] for e in inbox.envelopes}

    assert coins(wallet_b) == coins(wallet_a) == {"USDT": "1000.5"}
    # Nothing extra for the first service once the second joined: the one new order, no snapshot.
    # Nothing of the second service's join reached the first, and the first got the one new order once.
    everything_a = [*orders_a.envelopes, *positions_a.envelopes, *wallet_a.envelopes]
    assert not [e for e in everything_a if e.trace_id in late_traces]
    assert [e.payload["symbol"] for e in orders_a.envelopes[seen_a[0] :] if not e.snapshot] == ["SOLUSDT"]
    assert all(e.snapshot for e in orders_b.envelopes if e.trace_id in late_traces)
    await delete_queues(rabbitmq_url, *queues.values())


async def test_late_kline_subscriber_gets_the_open_candle_first(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    first, late = (f"svc-{uuid.uuid4().hex[:8]}" for _ in range(2))
    queues = [service_queue(svc, ChannelType.KLINE) for svc in (first, late)]
    kline = {"channel_type": "kline", "symbol": "BTCUSDT", "interval": "1"}
    async with start_worker():
        await subscribe(api, first, **kline)
        async with consuming(rabbitmq_url, queues[0]) as a:
            await wait_until(lambda: any(not e.payload["confirm"] for e in a.envelopes), what="an open candle")
            await subscribe(api, late, **kline)
            async with consuming(rabbitmq_url, queues[1]) as b:
                await wait_until(lambda: b.envelopes, what="B's first candle")
                candle = b.envelopes[0]
                if not candle.snapshot:
                    await wait_until(lambda: candle.event_id in a.ids(), what="A has B's first candle too")
    assert not any(e.snapshot for e in a.envelopes)
    if candle.snapshot:  # the candle was open when B joined: the same candle A had, flagged
        assert candle.payload["confirm"] is False
        assert any(e.payload == candle.payload for e in a.envelopes)
    else:  # it had just closed (nothing open to send): B's first event is the next push, which A gets too
        assert candle.event_id in a.ids()
    await delete_queues(rabbitmq_url, *queues)


async def purge(url: str, name: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await (await channel.declare_queue(name, passive=True)).purge()


async def test_ticker_and_order_queues_that_lost_messages_recover_through_the_snapshot_route(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc, other = (f"svc-{uuid.uuid4().hex[:8]}" for _ in range(2))
    tickers, orders = service_queue(svc, ChannelType.TICKER), service_queue(svc, ChannelType.ORDER)
    async with start_worker() as worker:
        ticker_row = await subscribe(api, svc, channel_type="ticker", symbol="BTCUSDT")
        order_row = await subscribe(api, svc, channel_type="order", category="linear")
        await subscribe(api, other, channel_type="ticker", symbol="BTCUSDT")
        await wait_until(lambda: private_subscribed(worker, "order"), what="order subscribed")
        await fake.push_account("order", category="linear", symbol="BTCUSDT")
        await fake.push_account("order", category="spot", symbol="ETHUSDT")  # not this service's
        for row in (ticker_row, order_row):
            await wait_until(lambda row=row: active(api, row["id"]), what="active")
        async with consuming(rabbitmq_url, service_queue(other, ChannelType.TICKER)) as untouched:
            await wait_until(lambda: len(untouched.envelopes) >= 5, what="tickers streaming")
            await wait_until(lambda: worker.snapshots.waiting == 0, what="join snapshots sent")
            for queue in (tickers, orders):
                await purge(rabbitmq_url, queue)  # everything so far is lost
            for row in (ticker_row, order_row):
                response = await api.post(f"{URL}/{row['id']}/snapshot")
                assert response.status_code == 202, response.text
                assert response.json()["id"] == row["id"]
            async with consuming(rabbitmq_url, tickers) as t, consuming(rabbitmq_url, orders) as o:
                await wait_until(lambda: any(e.snapshot for e in t.envelopes), what="the ticker snapshot")
                await wait_until(lambda: o.envelopes, what="the open linear order again")
    ticker = next(e for e in t.envelopes if e.snapshot)
    assert ticker.payload["type"] == "snapshot"
    assert {"lastPrice", "bid1Price", "ask1Price"} <= set(ticker.payload)
    assert {e.category for e in o.envelopes} == {"linear"}  # only what the subscription covers
    assert all(e.snapshot for e in o.envelopes)
    assert not any(e.snapshot for e in untouched.envelopes)
    await delete_queues(rabbitmq_url, tickers, orders, service_queue(other, ChannelType.TICKER))
