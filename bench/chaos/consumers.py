"""Independent consumers, one per service, each reading only its own queues, checking as messages arrive.

They share nothing with the gateway but the contract in `shared/` (the envelope and payload structs, queue
names). The book logic follows docs/consumer_example.py: a snapshot replaces the book, a delta must carry the
previous `u` + 1, an update not past the book's `seq` (which, unlike `u`, a restart does not reset) is a copy
from a worker the topic is moving away from, and `book_invalid` drops the book until the next snapshot. (The
example drops those copies by `event_id` first; this checker sees every copy.) Whenever the book is
valid it is compared with the fake's own book at the same (`u`, `seq`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aio_pika
import aiormq.exceptions
import msgspec
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from bench.chaos.model import ACCOUNT_CHANNELS, MarketKey, Subscriptions, Violations
from shared.enums import ChannelType
from shared.events import ENVELOPE_DECODER, EventEnvelope
from shared.payloads import BookUpdate
from shared.routing import service_queue
from tests.fake_bybit import BookStream, FakeBybit

Level = tuple[Decimal, Decimal]


@dataclass
class Book:
    u: int
    seq: int | None
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)

    def apply(self, update: BookUpdate) -> None:
        for side, levels in ((self.bids, update.bids), (self.asks, update.asks)):
            for price, size in levels:
                if Decimal(size) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = Decimal(size)
        self.u, self.seq = update.update_id, update.seq

    def state(self) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        return tuple(sorted(self.bids.items(), reverse=True)), tuple(sorted(self.asks.items()))


def is_stale_copy(update: BookUpdate, book: Book) -> bool:
    """An update already covered by the book: a copy from the worker a topic is moving away from.

    By `seq` when both have one: it never goes back, while `u` starts again at 1 after a restart, so a late copy of
    a delta from before the restart (u 385 after the restart's u 1) is not past the book's `u` yet is no news. Such
    a copy from the departing worker, 45 ms after a restart, was once read as a hole (chaos seed 4328).
    Without `seq`, by `u`, except that `u == 1` is a restart and always taken."""
    if update.seq is not None and book.seq is not None:
        return update.seq <= book.seq
    return update.update_id <= book.u and update.update_id != 1


@dataclass
class Hole:
    """A delta whose `u` skipped some: events of a valid stream were lost on the way."""

    at: float
    wall: float
    service: str
    topic: str
    expected_u: int
    got_u: int


@dataclass
class AccountView:
    """The latest state per key, newest by the exchange's own ordering, as a consumer keeps it."""

    orders: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    positions: dict[tuple[str, str, int], tuple[tuple[int, int], dict[str, Any]]] = field(default_factory=dict)
    balances: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    event_ids: set[str] = field(default_factory=set)

    def take(self, envelope: EventEnvelope) -> None:
        self.event_ids.add(envelope.event_id)
        payload = envelope.payload
        if envelope.event_type == "order":
            stamp = int(payload["updatedTime"])
            if payload["orderId"] not in self.orders or self.orders[payload["orderId"]][0] <= stamp:
                self.orders[payload["orderId"]] = (stamp, payload)
        elif envelope.event_type == "position":
            key = (envelope.category, payload["symbol"], int(payload.get("positionIdx", 0)))
            pstamp = (int(payload.get("updatedTime") or 0), int(payload.get("seq") or 0))
            if key not in self.positions or self.positions[key][0] <= pstamp:
                self.positions[key] = (pstamp, payload)
        elif envelope.event_type == "balance":
            key2 = (envelope.category, payload["coin"])
            stamp = envelope.exchange_ts or 0
            if key2 not in self.balances or self.balances[key2][0] <= stamp:
                self.balances[key2] = (stamp, str(payload.get("walletBalance")))


class ServiceConsumer:
    def __init__(
        self,
        service: str,
        rabbitmq_url: str,
        fake: FakeBybit,
        subscriptions: Subscriptions,
        violations: Violations,
        *,
        cancel_grace_ms: int,
    ) -> None:
        self.service = service
        self._url = rabbitmq_url
        self._fake = fake
        self._subscriptions = subscriptions
        self._violations = violations
        self._grace_ms = cancel_grace_ms
        self.wanted_queues: set[ChannelType] = set()
        self._consuming: set[ChannelType] = set()
        self.books: dict[tuple[str, str], Book] = {}
        self.account = AccountView()
        self.holes: list[Hole] = []
        self.counts: Counter[str] = Counter()
        self.last_message = time.monotonic()
        self._connection: AbstractRobustConnection | None = None

    def forget_book(self, key: MarketKey) -> None:
        """The service left or joined this book: whatever it held is no longer a stream it follows."""
        if key[0] == "orderbook":
            self.books.pop((key[1], key[2]), None)

    def want(self, channel: str) -> None:
        self.wanted_queues.add(ChannelType(channel))

    async def run(self) -> None:
        """Attach to each wanted queue once the gateway has declared it; consume until cancelled."""
        self._connection = await aio_pika.connect_robust(self._url)
        try:
            channel = await self._connection.channel()
            await channel.set_qos(prefetch_count=500)
            while True:
                for channel_type in sorted(self.wanted_queues - self._consuming):
                    # A quorum queue without its Raft leader yet answers basic.consume by closing the connection
                    # (541 INTERNAL_ERROR); the robust connection reopens and the next pass tries again.
                    with contextlib.suppress(aio_pika.exceptions.ChannelClosed, aiormq.exceptions.ConnectionClosed):
                        probe = await self._connection.channel()
                        queue = await probe.declare_queue(service_queue(self.service, channel_type), passive=True)
                        await queue.consume(self._on_message)
                        self._consuming.add(channel_type)
                await asyncio.sleep(0.5)
        finally:
            await self._connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        async with message.process():
            self.last_message = time.monotonic()
            try:
                envelope = ENVELOPE_DECODER.decode(message.body)
            except msgspec.DecodeError as error:
                self._violations.add("unsolicited_event", {"service": self.service, "undecodable": str(error)})
                return
            self.check(envelope)

    # ---- checks, as each event arrives -------------------------------------------------------------
    def check(self, envelope: EventEnvelope) -> None:
        kind = envelope.event_type
        if kind in ACCOUNT_CHANNELS:
            self.counts[f"account:{kind}"] += 1
            self.account.take(envelope)
            return
        channel = "orderbook" if kind == "book_invalid" else kind
        self.counts[f"market:{kind}"] += 1
        self._check_subscribed((channel, envelope.category, envelope.topic), envelope)
        if kind == "book_invalid":
            self.books.pop((envelope.category, envelope.topic), None)
        elif kind == "orderbook":
            self._check_book(envelope)

    def _check_subscribed(self, key: MarketKey, envelope: EventEnvelope) -> None:
        state = self._subscriptions.state(self.service, key)
        if state is None:
            self._violations.add("unsolicited_event", {"service": self.service, "key": key, "id": envelope.event_id})
        elif not state.live and state.cancel_acked_ms is not None:
            late_ms = envelope.published_ts - state.cancel_acked_ms
            if late_ms > self._grace_ms:
                self._violations.add(
                    "nothing_after_cancel",
                    {
                        "service": self.service,
                        "key": key,
                        "published_after_cancel_ms": late_ms,
                        "grace_ms": self._grace_ms,
                    },
                )

    def _check_book(self, envelope: EventEnvelope) -> None:
        update = msgspec.convert(envelope.payload, BookUpdate)
        key = (envelope.category, envelope.topic)
        book = self.books.get(key)
        if book is not None and is_stale_copy(update, book):
            self.counts["book:stale_copy"] += 1
            return
        if update.type == "snapshot":
            book = self.books[key] = Book(update.update_id, update.seq)
        elif book is None:
            self.counts["book:waiting_for_snapshot"] += 1
            return
        elif update.update_id != book.u + 1:
            del self.books[key]
            state = self._subscriptions.state(self.service, ("orderbook", *key))
            if state is not None and time.monotonic() - state.changed_at < self._grace_ms / 1000:
                # This service left and joined again lately: the skipped updates were routed to nobody.
                self.counts["book:skip_across_rejoin"] += 1
                return
            self.holes.append(
                Hole(time.monotonic(), time.time(), self.service, envelope.topic, book.u + 1, update.update_id)
            )
            return
        book.apply(update)
        stream = self._fake.stream(envelope.topic, category=envelope.category)  # type: ignore[arg-type]
        assert isinstance(stream, BookStream)
        expected = stream.state_at(update.update_id, update.seq or 0)
        if expected is None:
            self.counts["book:beyond_history"] += 1
            return
        self.counts["book:compared"] += 1
        if book.state() != expected:
            self._violations.add(
                "book_equals_fake",
                {
                    "service": self.service,
                    "topic": envelope.topic,
                    "category": envelope.category,
                    "u": update.update_id,
                    "ours_top": [list(map(str, lvl)) for lvl in book.state()[0][:3]],
                    "fake_top": [list(map(str, lvl)) for lvl in expected[0][:3]],
                },
            )
            del self.books[key]
