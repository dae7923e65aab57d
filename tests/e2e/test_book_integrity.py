"""A broken book is never published: a gap on Bybit's stream leads to book_invalid, a resubscribe, and a valid
book again; every published book event carries a checksum a consumer's own book reproduces."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx

from shared.enums import ChannelType
from shared.events import EventEnvelope
from shared.routing import service_queue
from tests.e2e.conftest import consuming, delete_queues
from tests.fake_bybit import FakeBybit
from tests.support.waiting import wait_until

TOPIC = "orderbook.50.BTCUSDT"


class ConsumerBook:
    """What a downstream consumer would keep, written from the README's rules, not from our code."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}

    def apply(self, payload: dict[str, Any]) -> None:
        if payload["type"] == "snapshot":
            self.bids.clear()
            self.asks.clear()
        for side, levels in ((self.bids, payload["b"]), (self.asks, payload["a"])):
            for price, size in levels:
                if Decimal(size) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = (price, size)

    def checksum(self, n: int) -> int:
        bids = [self.bids[p] for p in sorted(self.bids, reverse=True)[:n]]
        asks = [self.asks[p] for p in sorted(self.asks)[:n]]
        parts: list[str] = []
        for i in range(n):
            if i < len(bids):
                parts += bids[i]
            if i < len(asks):
                parts += asks[i]
        return zlib.crc32(":".join(parts).encode("ascii"))


def book_events(envelopes: list[EventEnvelope]) -> list[EventEnvelope]:
    return [e for e in envelopes if e.topic == TOPIC]


async def test_gap_leads_to_book_invalid_a_resubscribe_and_a_valid_book_again(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    queue = service_queue(svc, ChannelType.ORDERBOOK)
    async with start_worker():
        response = await api.post(
            "/api/v1/subscriptions",
            json={"requesting_service": svc, "channel_type": "orderbook", "symbol": "BTCUSDT", "depth": 50},
        )
        assert response.status_code == 201
        async with consuming(rabbitmq_url, queue) as inbox:
            await wait_until(lambda: len(book_events(inbox.envelopes)) >= 10, what="a snapshot and deltas")
            await fake.inject_book_fault(TOPIC, "gap", category="linear")
            await wait_until(lambda: any(e.event_type == "book_invalid" for e in inbox.envelopes), what="book_invalid")
            await wait_until(lambda: fake.subscribe_requests(TOPIC) == 2, what="the resubscribe")
            invalid_at = next(i for i, e in enumerate(inbox.envelopes) if e.event_type == "book_invalid")
            await wait_until(lambda: len(inbox.envelopes) > invalid_at + 10, what="the book back, with deltas")

    events = book_events(inbox.envelopes)
    invalid = events[invalid_at]
    assert invalid.payload["cause"] == "gap"
    after = events[invalid_at + 1 :]
    assert after[0].event_type == "orderbook"
    assert after[0].payload["type"] == "snapshot"  # nothing from the broken book before the fresh snapshot
    assert events[0].payload["type"] == "snapshot"

    # What a consumer sees is a valid stream: each delta follows the previous event's u by exactly one, only
    # a snapshot follows book_invalid, and our checksum matches the consumer's own book after every event.
    consumer: ConsumerBook | None = None
    last_u: int | None = None
    for event in events:
        if event.event_type == "book_invalid":
            consumer, last_u = None, None
            continue
        payload = event.payload
        if payload["type"] == "snapshot":
            consumer = ConsumerBook()
        else:
            assert consumer is not None, "a delta was published without a snapshot before it"
            assert last_u is not None
            assert payload["u"] == last_u + 1
        consumer.apply(payload)
        last_u = payload["u"]
        assert consumer.checksum(payload["checksum_levels"]) == payload["checksum"], event.event_id
    await delete_queues(rabbitmq_url, queue)


async def test_crossed_book_and_restart_are_handled_without_publishing_a_wrong_book(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    queue = service_queue(svc, ChannelType.ORDERBOOK)
    async with start_worker():
        await api.post(
            "/api/v1/subscriptions",
            json={"requesting_service": svc, "channel_type": "orderbook", "symbol": "BTCUSDT", "depth": 50},
        )
        async with consuming(rabbitmq_url, queue) as inbox:
            await wait_until(lambda: len(inbox.envelopes) >= 5, what="book events")
            await fake.inject_book_fault(TOPIC, "restart", category="linear")
            await fake.inject_book_fault(TOPIC, "stale", category="linear")
            seen = len(inbox.envelopes)
            await wait_until(lambda: len(inbox.envelopes) > seen + 5, what="events continue")
            assert not any(e.event_type == "book_invalid" for e in inbox.envelopes)  # u=1 and stale are fine
            await fake.inject_book_fault(TOPIC, "crossed", category="linear")
            await wait_until(
                lambda: any(e.event_type == "book_invalid" for e in inbox.envelopes), what="crossed -> invalid"
            )
    invalid = next(e for e in inbox.envelopes if e.event_type == "book_invalid")
    assert invalid.payload["cause"] == "crossed"
    await delete_queues(rabbitmq_url, queue)
