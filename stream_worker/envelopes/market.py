"""Order books and tickers of one public socket: what gets published, and which topics need a resubscribe.

Sans-I/O: pushes and the time go in; events to publish and topics to resubscribe come out. The worker moves
them. A book is published only while it is valid (PROTOCOL.md §7.3): its first invalidation publishes one
`book_invalid` event and asks for a resubscribe, and nothing more from that book goes out until a fresh
snapshot. A reconnect invalidates every book of the socket. Tickers are published merged (§8), with the set
of fields the update actually changed, so a consumer never merges.

Nothing Bybit sends can raise here. A push we cannot read (no or unknown `type`, undecodable `data`, unreadable
levels, a topic we cannot parse) is counted as `malformed:{book|ticker}:{kind}`, and where state is at risk
(any book, a merged linear/inverse ticker) the state is dropped and the topic resubscribed.

Over 400 lines, with a reason: books, tickers and their join snapshots share one per-topic slot table and
one set of counters; the next split is tickers into a sibling module once they grow further.
"""

from __future__ import annotations

import enum
import itertools
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from shared.enums import ChannelType, Endpoint
from shared.events import EventEnvelope
from shared.payloads import BookInvalid, BookUpdate
from shared.routing import event_routing_key, topic_variant
from stream_worker.bybit.books import (
    BOOK_DATA,
    BookData,
    BookLevel,
    BookOutcome,
    BookOutcomeKind,
    InvalidCause,
    OrderBook,
)
from stream_worker.bybit.events import Push
from stream_worker.bybit.tickers import TickerCache, TickerOutcomeKind
from stream_worker.envelopes.event_ids import book_event_id, ticker_event_id
from stream_worker.envelopes.outgoing import Outgoing

BOOK_PREFIX = "orderbook."
TICKER_PREFIX = "tickers."
_ALL_LEVELS = 1 << 30  # `OrderBook.top` of this many is the whole book
_PUSH_TYPES = ("snapshot", "delta")
# Counter keys per outcome, made once: an f-string and an enum `.value` per push cost more than the count.
_BOOK_KEYS = {kind: f"book:{kind.value}" for kind in BookOutcomeKind}
_TICKER_KEYS = {kind: f"ticker:{kind.value}" for kind in TickerOutcomeKind}


class BookOutput(enum.StrEnum):
    """What consumers of order books receive (a deployment setting)."""

    STREAM = "stream"  # the validated snapshot/delta stream with u, seq and our checksum
    TOP = "top"  # only throttled top-N snapshots of our maintained book
    BOTH = "both"


@dataclass(slots=True)
class MarketResult:
    events: list[Outgoing] = field(default_factory=list)
    resubscribe: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _BookSlot:
    book: OrderBook
    routing_key: str
    symbol: str
    invalid_since: float | None = None  # when we last asked for a fresh snapshot
    changed: bool = False  # since the last top-N snapshot


@dataclass(slots=True)
class _TickerSlot:
    cache: TickerCache
    routing_key: str
    symbol: str


def _levels(levels: Iterable[BookLevel]) -> list[tuple[str, str]]:
    return [(level.price, level.size) for level in levels]


class MarketState:
    def __init__(
        self,
        endpoint: Endpoint,
        *,
        book_output: BookOutput = BookOutput.STREAM,
        top_levels: int = 25,
        checksum_levels: int = 25,
        snapshot_timeout: float = 5.0,
        gap_check: bool = True,
    ) -> None:
        if endpoint.category is None:
            raise ValueError("market state belongs to a public socket")
        self._category = endpoint.category
        self._gap_check = gap_check
        self._book_output = book_output
        self._top_levels = top_levels
        self._checksum_levels = checksum_levels
        self._snapshot_timeout = snapshot_timeout
        self._books: dict[str, _BookSlot] = {}
        self._tickers: dict[str, _TickerSlot] = {}
        self._status_ids = itertools.count(1)
        self.counters: Counter[str] = Counter()

    @staticmethod
    def handles(topic: str) -> bool:
        return topic.startswith((BOOK_PREFIX, TICKER_PREFIX))

    def books(self) -> dict[str, OrderBook]:
        return {topic: slot.book for topic, slot in self._books.items()}

    # -- pushes ---------------------------------------------------------------------------------------------

    def on_push(self, push: Push, *, now: float, received_ms: int, trace_id: str) -> MarketResult:
        if push.topic.startswith(BOOK_PREFIX):
            return self._on_book(push, now, received_ms, trace_id)
        return self._on_ticker(push, now, received_ms, trace_id)

    def on_unreadable(self, topic: str, *, now: float, received_ms: int, trace_id: str) -> MarketResult:
        """A frame of `topic` whose envelope could not be read: its update is lost, so the state is dropped.

        Only state we already hold is touched: a topic we never had a push for has nothing to lose.
        """
        result = MarketResult()
        book = self._books.get(topic)
        if book is not None:
            self.counters["malformed:book:envelope"] += 1
            outcome = book.book.invalidate(InvalidCause.MALFORMED)
            self._book_outcome(topic, book, outcome, result, now, received_ms, trace_id)
            return result
        ticker = self._tickers.get(topic)
        if ticker is not None:
            self.counters["malformed:ticker:envelope"] += 1
            if ticker.cache.invalidate().resubscribe:
                result.resubscribe.append(topic)
        return result

    def _book_slot(self, topic: str) -> _BookSlot:
        slot = self._books.get(topic)
        if slot is None:
            book = OrderBook.from_topic(topic, gap_check=self._gap_check)
            symbol = topic.split(".", 2)[2]
            key = event_routing_key(
                ChannelType.ORDERBOOK, self._category, symbol, topic_variant(ChannelType.ORDERBOOK, topic)
            )
            slot = self._books[topic] = _BookSlot(book=book, routing_key=key, symbol=symbol)
        return slot

    def _on_book(self, push: Push, now: float, received_ms: int, trace_id: str) -> MarketResult:
        result = MarketResult()
        try:
            slot = self._book_slot(push.topic)
        except ValueError:  # orderbook.full.*, a depth that is not a number: no book we keep
            self.counters["malformed:book:bad_topic"] += 1
            return result
        data: BookData | None = None
        book = slot.book
        kind = push.type
        if kind is None or kind not in _PUSH_TYPES:
            # No type, or one Bybit does not document: it may have been a delta we cannot apply (AUDIT A4).
            self.counters["malformed:book:no_type" if kind is None else "malformed:book:bad_type"] += 1
            outcome = book.invalidate(InvalidCause.MALFORMED)
        else:
            try:
                data = BOOK_DATA.decode(push.data)
            except msgspec.DecodeError:  # we may have missed levels: the book cannot be trusted
                self.counters["malformed:book:bad_data"] += 1
                outcome = book.invalidate(InvalidCause.MALFORMED)
            else:
                malformed = book.counters.malformed
                outcome = book.apply(kind, data, ts=push.ts, cts=push.cts)
                if book.counters.malformed != malformed:
                    self.counters["malformed:book:bad_levels"] += 1
        self._book_outcome(push.topic, slot, outcome, result, now, received_ms, trace_id)
        if outcome.publishable and data is not None:
            slot.invalid_since = None
            slot.changed = True
            if self._book_output is not BookOutput.TOP:
                kind = "snapshot" if outcome.kind is BookOutcomeKind.SNAPSHOT else "delta"
                result.events.append(self._book_event(push, slot, data.bids, data.asks, kind, received_ms, trace_id))
        return result

    def _book_outcome(
        self,
        topic: str,
        slot: _BookSlot,
        outcome: BookOutcome,
        result: MarketResult,
        now: float,
        received_ms: int,
        trace_id: str,
    ) -> None:
        """Count an outcome; a fresh invalidation publishes `book_invalid` and asks for a resubscribe."""
        self.counters[_BOOK_KEYS[outcome.kind]] += 1
        if outcome.gap_ignored:
            self.counters["book:gap_ignored"] += 1
        if not outcome.just_invalidated:
            return
        if outcome.cause is not None:
            self.counters[f"book_invalid:{outcome.cause.value}"] += 1
        result.events.append(self._invalid_event(topic, slot, outcome.cause, outcome.update_id, trace_id, received_ms))
        result.resubscribe.append(topic)
        slot.invalid_since = now

    def _book_event(
        self,
        push: Push,
        slot: _BookSlot,
        bids: Iterable[BookLevel],
        asks: Iterable[BookLevel],
        kind: str,
        received_ms: int,
        trace_id: str,
    ) -> Outgoing:
        book = slot.book
        payload = BookUpdate(
            type=kind,
            ts=push.ts,
            cts=push.cts,
            symbol=slot.symbol,
            bids=_levels(bids),
            asks=_levels(asks),
            update_id=book.last_update_id or 0,
            seq=book.last_seq,
            checksum=book.checksum(self._checksum_levels),
            checksum_levels=self._checksum_levels,
        )
        return self._event(
            ChannelType.ORDERBOOK,
            slot.routing_key,
            event_id=book_event_id(self._category, push.topic, payload.update_id, payload.seq, kind),
            event_type=ChannelType.ORDERBOOK.value,
            symbol=slot.symbol,
            topic=push.topic,
            exchange_ts=push.cts if push.cts is not None else push.ts,
            received_ms=received_ms,
            trace_id=trace_id,
            payload=payload,
        )

    def _invalid_event(
        self,
        topic: str,
        slot: _BookSlot,
        cause: InvalidCause | None,
        update_id: int | None,
        trace_id: str,
        received_ms: int,
    ) -> Outgoing:
        payload = BookInvalid(cause=(cause or InvalidCause.DELTA_BEFORE_SNAPSHOT).value, update_id=update_id)
        return self._event(
            ChannelType.ORDERBOOK,
            slot.routing_key,
            event_id=f"book_invalid:{self._category}:{topic}:{received_ms}:{next(self._status_ids)}",
            event_type="book_invalid",
            symbol=slot.symbol,
            topic=topic,
            exchange_ts=None,
            received_ms=received_ms,
            trace_id=trace_id,
            payload=payload,
        )

    def _on_ticker(self, push: Push, now: float, received_ms: int, trace_id: str) -> MarketResult:
        slot = self._tickers.get(push.topic)
        if slot is None:
            symbol = push.topic.split(".", 1)[1]
            cache = TickerCache(push.topic, self._category, snapshot_timeout=self._snapshot_timeout)  # type: ignore[arg-type]
            key = event_routing_key(ChannelType.TICKER, self._category, symbol)
            slot = self._tickers[push.topic] = _TickerSlot(cache=cache, routing_key=key, symbol=symbol)
        kind = push.type
        if kind is None or kind not in _PUSH_TYPES:
            self.counters["malformed:ticker:no_type" if kind is None else "malformed:ticker:bad_type"] += 1
            outcome = slot.cache.invalidate(push.cs, push.ts)
        else:
            outcome = slot.cache.apply(kind, push.data, push.cs, push.ts, now=now)
            if outcome.kind is TickerOutcomeKind.DROPPED_MALFORMED:
                self.counters["malformed:ticker:bad_data"] += 1
        self.counters[_TICKER_KEYS[outcome.kind]] += 1
        result = MarketResult()
        if outcome.resubscribe:
            result.resubscribe.append(push.topic)
        if outcome.ticker is not None and outcome.kind in (TickerOutcomeKind.SNAPSHOT, TickerOutcomeKind.DELTA):
            payload = {
                "type": outcome.kind.value,
                "ts": push.ts,
                "cs": push.cs,
                "changed": sorted(outcome.changed),
                **outcome.ticker,
            }
            result.events.append(
                self._event(
                    ChannelType.TICKER,
                    slot.routing_key,
                    event_id=ticker_event_id(self._category, push),
                    event_type=ChannelType.TICKER.value,
                    symbol=slot.symbol,
                    topic=push.topic,
                    exchange_ts=push.ts,
                    received_ms=received_ms,
                    trace_id=trace_id,
                    payload=payload,
                )
            )
        return result

    def _event(
        self,
        channel: ChannelType,
        routing_key: str,
        *,
        event_id: str,
        event_type: str,
        symbol: str,
        topic: str,
        exchange_ts: int | None,
        received_ms: int,
        trace_id: str,
        payload: Any,
    ) -> Outgoing:
        envelope = EventEnvelope(
            event_id=event_id,
            event_type=event_type,
            category=self._category,
            symbol=symbol,
            topic=topic,
            exchange_ts=exchange_ts,
            received_ts=received_ms,
            published_ts=0,
            trace_id=trace_id,
            payload=payload,
        )
        return Outgoing(envelope, channel, routing_key, False)

    # -- snapshots for one queue ---------------------------------------------------------------------------

    def snapshot_of(self, topic: str, *, queue: str, received_ms: int, trace_id: str, nonce: int) -> Outgoing | None:
        """The current state of a book or ticker as one `snapshot: true` event for `queue` only; None if there is
        no valid state to give (the topic's next Bybit snapshot will reach that queue anyway).

        A book snapshot carries the `u`, `seq` and checksum of the last event published for the book, so the
        queue's next delta (published after this) is `u + 1`. Its event id is the snapshot's id at that `u`
        plus a nonce: a consumer that asked twice at the same `u` must not drop the second as a duplicate.
        """
        slot = self._books.get(topic)
        if slot is not None:
            book = slot.book
            if not book.is_valid or self._book_output is BookOutput.TOP:
                return None
            payload = self._snapshot_payload(slot, _ALL_LEVELS)
            base = book_event_id(self._category, topic, payload.update_id, payload.seq, "snapshot")
            event_id = f"{base}:snapshot:{nonce}"
            event = self._event(
                ChannelType.ORDERBOOK,
                queue,
                event_id=event_id,
                event_type=ChannelType.ORDERBOOK.value,
                symbol=slot.symbol,
                topic=topic,
                exchange_ts=book.last_cts if book.last_cts is not None else book.last_ts,
                received_ms=received_ms,
                trace_id=trace_id,
                payload=payload,
            )
        elif (ticker_slot := self._tickers.get(topic)) is not None and ticker_slot.cache.ticker is not None:
            cache = ticker_slot.cache
            ticker = dict(cache.ticker or {})
            payload_map = {"type": "snapshot", "ts": cache.ts, "cs": cache.cs, "changed": sorted(ticker), **ticker}
            event = self._event(
                ChannelType.TICKER,
                queue,
                event_id=f"ticker:{self._category}:{topic}:{cache.cs}:{cache.ts}:snapshot:{nonce}",
                event_type=ChannelType.TICKER.value,
                symbol=ticker_slot.symbol,
                topic=topic,
                exchange_ts=cache.ts,
                received_ms=received_ms,
                trace_id=trace_id,
                payload=payload_map,
            )
        else:
            return None
        envelope = msgspec.structs.replace(event.envelope, snapshot=True)
        return Outgoing(envelope, event.channel_type, queue, False, direct=True)

    # -- socket lifecycle and timers -----------------------------------------------------------------------

    def reset(
        self, *, now: float, received_ms: int, trace_id: str, topics: Collection[str] | None = None
    ) -> MarketResult:
        """A reconnect: every book becomes invalid (valid ones say so) and ticker caches are dropped.

        `topics`: only those (the ones the reconnected socket carries, when a category has several sockets).
        """
        result = MarketResult()
        for topic, slot in self._books.items():
            if topics is not None and topic not in topics:
                continue
            outcome = slot.book.reset()
            if outcome.just_invalidated:
                self.counters["book_invalid:reconnect"] += 1
                result.events.append(
                    self._invalid_event(topic, slot, InvalidCause.RECONNECT, None, trace_id, received_ms)
                )
            slot.invalid_since = None  # the reconnect resubscribes every topic anyway
        for topic, ticker in self._tickers.items():
            if topics is None or topic in topics:
                ticker.cache.reset()
        return result

    def forget(self, topics: Iterable[str]) -> None:
        """Topics no longer wanted: drop their state."""
        for topic in topics:
            self._books.pop(topic, None)
            self._tickers.pop(topic, None)

    def overdue(self, now: float) -> list[str]:
        """Invalid books whose resubscribe brought no snapshot within the timeout: ask again."""
        topics = []
        for topic, slot in self._books.items():
            if slot.invalid_since is not None and now - slot.invalid_since >= self._snapshot_timeout:
                slot.invalid_since = now
                self.counters["book:resubscribe_retry"] += 1
                topics.append(topic)
        return topics

    def _snapshot_payload(self, slot: _BookSlot, levels: int) -> BookUpdate:
        """A valid book's top `levels` per side as a `snapshot` whose u, seq and checksum a consumer continues from."""
        book = slot.book
        bids, asks = book.top(levels)
        return BookUpdate(
            type="snapshot",
            ts=book.last_ts,
            cts=book.last_cts,
            symbol=slot.symbol,
            bids=bids,
            asks=asks,
            update_id=book.last_update_id or 0,
            seq=book.last_seq,
            checksum=book.checksum(self._checksum_levels),
            checksum_levels=self._checksum_levels,
        )

    def top_snapshots(self, *, received_ms: int, trace_id: str) -> list[Outgoing]:
        """Top-N snapshots of every valid book that changed since the last call (for BookOutput TOP/BOTH)."""
        if self._book_output is BookOutput.STREAM:
            return []
        events = []
        for topic, slot in self._books.items():
            book = slot.book
            if not (slot.changed and book.is_valid):
                continue
            slot.changed = False
            payload = self._snapshot_payload(slot, self._top_levels)
            events.append(
                self._event(
                    ChannelType.ORDERBOOK,
                    slot.routing_key,
                    event_id=f"orderbook_top:{self._category}:{topic}:{payload.update_id}",
                    event_type="orderbook_top",
                    symbol=slot.symbol,
                    topic=topic,
                    exchange_ts=book.last_cts if book.last_cts is not None else book.last_ts,
                    received_ms=received_ms,
                    trace_id=trace_id,
                    payload=payload,
                )
            )
        return events
