"""A downstream consumer of one ws-gateway queue, to copy from: reconnects, de-duplicates, keeps order books.

    uv run python docs/consumer_example.py --service strategy-a --channel orderbook [--url amqp://...]

- Connects with aio-pika's robust connection, which reconnects and re-opens the channel and the consumer.
- Declares nothing it does not own: the gateway declares `ws-gateway.{service}.{channel_type}` when the service
  subscribes (`POST /api/v1/subscriptions`); this only checks it exists (a passive declare).
- Drops duplicates by `event_id` (delivery is at least once) with a bounded LRU of the last 100 000 ids.
- Keeps a local order book per topic from `orderbook` events, checks every delta's `u` follows the last one and
  verifies the `checksum` (README, "Checksum") after every event; a `book_invalid` event, a gap or a mismatch
  drops that book until the next snapshot. A book event whose `u` is not past the book's is stale and skipped:
  while a topic moves between gateway workers both may publish it for a moment (README, "Several workers").
- Acks each message after processing it; an unreadable message is rejected without requeue and logged.

The event contract is described by `GET /asyncapi` on the control API. `EventProcessor` holds all the logic and
does no I/O, so it can be tested by feeding it message bodies.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import logging
import signal
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal

import aio_pika
import msgspec
from aio_pika.abc import AbstractIncomingMessage

from shared.enums import ChannelType
from shared.events import ENVELOPE_DECODER
from shared.payloads import BookInvalid, BookUpdate, convert_payload
from shared.routing import service_queue

log = logging.getLogger("consumer_example")

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
SEEN_IDS = 100_000


class Outcome(enum.Enum):
    """What processing one message did."""

    APPLIED = "applied"  # a new event, handled (a book event: applied and its checksum verified)
    DUPLICATE = "duplicate"  # an event_id seen before: skipped
    BOOK_RESET = "book_reset"  # book_invalid: the local book was dropped until the next snapshot
    CHECKSUM_MISMATCH = "checksum_mismatch"  # our book disagrees with the gateway's: dropped until a snapshot
    GAP = "gap"  # a delta whose `u` does not follow ours: dropped until a snapshot
    WAITING_FOR_SNAPSHOT = "waiting_for_snapshot"  # a delta for a book we do not have: ignored
    STALE = "stale"  # a book event at or before our book's `u` (a second worker's copy in a handover): skipped


class RecentIds:
    """The last `capacity` event ids, least recently seen evicted first."""

    def __init__(self, capacity: int = SEEN_IDS) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> bool:
        """Remember `event_id`; False if it was already there (a duplicate)."""
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True


@dataclass
class LocalBook:
    """One topic's book. Levels keep the exchange's strings: the checksum is computed over them exactly."""

    update_id: int
    bids: dict[Decimal, tuple[str, str]] = field(default_factory=dict)
    asks: dict[Decimal, tuple[str, str]] = field(default_factory=dict)

    def apply(self, update: BookUpdate) -> None:
        """Set each level; size "0" deletes it. (A snapshot starts from an empty book.)"""
        for side, levels in ((self.bids, update.bids), (self.asks, update.asks)):
            for price, size in levels:
                if Decimal(size) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = (price, size)
        self.update_id = update.update_id

    def checksum(self, levels: int) -> int:
        """CRC-32 of the top `levels` bids and asks, interleaved best first (README, "Checksum")."""
        bids = [self.bids[price] for price in sorted(self.bids, reverse=True)[:levels]]
        asks = [self.asks[price] for price in sorted(self.asks)[:levels]]
        parts: list[str] = []
        for i in range(levels):
            if i < len(bids):
                parts += bids[i]
            if i < len(asks):
                parts += asks[i]
        return zlib.crc32(":".join(parts).encode("ascii"))


class EventProcessor:
    """Everything a consumer does with a message body, without I/O."""

    def __init__(self, seen_capacity: int = SEEN_IDS) -> None:
        self.seen = RecentIds(seen_capacity)
        self.books: dict[tuple[str, str, str], LocalBook] = {}  # (event_type, category, topic)
        self.counts: dict[Outcome, int] = dict.fromkeys(Outcome, 0)

    def process(self, body: bytes) -> Outcome:
        """Handle one message body. Raises `msgspec.DecodeError` for a body that is not an event."""
        event = ENVELOPE_DECODER.decode(body)
        if not self.seen.add(event.event_id):
            outcome = Outcome.DUPLICATE
        elif event.event_type == "book_invalid":
            invalid = convert_payload(BookInvalid, event.payload)
            for event_type in ("orderbook", "orderbook_top"):
                self.books.pop((event_type, event.category, event.topic), None)
            log.warning("book invalid: topic=%s cause=%s u=%s", event.topic, invalid.cause, invalid.update_id)
            outcome = Outcome.BOOK_RESET
        elif event.event_type in ("orderbook", "orderbook_top"):
            key = (event.event_type, event.category, event.topic)
            outcome = self._apply_book(key, msgspec.convert(event.payload, BookUpdate))
        else:
            outcome = Outcome.APPLIED  # trades, tickers, account events: your handling goes here
        self.counts[outcome] += 1
        return outcome

    def _apply_book(self, key: tuple[str, str, str], update: BookUpdate) -> Outcome:
        book = self.books.get(key)
        # u == 1 is Bybit restarting the book: always taken. Otherwise an update that is not past ours is a copy
        # from the worker a topic is moving away from, already covered by what we applied.
        if book is not None and update.update_id <= book.update_id and update.update_id != 1:
            return Outcome.STALE
        if update.type == "snapshot":
            book = self.books[key] = LocalBook(update_id=update.update_id)
        elif book is None:
            return Outcome.WAITING_FOR_SNAPSHOT
        elif update.update_id != book.update_id + 1:
            del self.books[key]
            log.error("book gap: topic=%s expected u=%d got u=%d", key[2], book.update_id + 1, update.update_id)
            return Outcome.GAP
        book.apply(update)
        ours = book.checksum(update.checksum_levels)
        if ours != update.checksum:
            del self.books[key]
            log.error(
                "checksum mismatch: topic=%s u=%d ours=%d theirs=%d", key[2], update.update_id, ours, update.checksum
            )
            return Outcome.CHECKSUM_MISMATCH
        return Outcome.APPLIED


async def consume(url: str, queue_name: str, processor: EventProcessor, stop: asyncio.Event) -> None:
    """Consume `queue_name` into `processor` until `stop` is set; acks each message after processing it."""

    async def on_message(message: AbstractIncomingMessage) -> None:
        try:
            outcome = processor.process(message.body)
        except msgspec.DecodeError:  # also msgspec.ValidationError
            log.exception("unreadable message rejected: message_id=%s", message.message_id)
            await message.reject(requeue=False)
            return
        await message.ack()
        if outcome is not Outcome.APPLIED:
            log.info("event %s: %s", message.message_id, outcome.value)

    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=256)
        queue = await channel.declare_queue(queue_name, passive=True)  # the gateway owns it
        tag = await queue.consume(on_message)
        log.info("consuming %s", queue_name)
        await stop.wait()
        await queue.cancel(tag)
    log.info("stopped: %s", {outcome.value: count for outcome, count in processor.counts.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description="Consume one ws-gateway queue.")
    parser.add_argument("--service", required=True, help="the requesting_service you subscribed as")
    parser.add_argument("--channel", required=True, choices=[c.value for c in ChannelType])
    parser.add_argument("--url", default=DEFAULT_URL, help=f"RabbitMQ URL (default {DEFAULT_URL})")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await consume(args.url, service_queue(args.service, ChannelType(args.channel)), EventProcessor(), stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
