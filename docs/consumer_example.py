"""A downstream consumer of one ws-gateway queue, to copy from: reconnects, de-duplicates, keeps order books.

    uv run python docs/consumer_example.py --service strategy-a --channel orderbook [--url amqp://...] \
        [--api http://127.0.0.1:8000 --api-key ...]

- Connects with aio-pika's robust connection, which reconnects and re-opens the channel and the consumer.
- Declares nothing it does not own: the gateway declares `ws-gateway.{service}.{channel_type}` when the service
  subscribes (`POST /api/v1/subscriptions`); this only checks it exists (a passive declare).
- Drops duplicates by `event_id` (delivery is at least once) with a bounded LRU of the last 100 000 ids.
- Keeps a local order book per topic from `orderbook` events, checks every delta's `u` follows the last one and
  verifies the `checksum` (README, "Checksum") after every event; a `book_invalid` event, a gap or a mismatch
  drops that book until the next snapshot. A book event whose `u` is not past the book's is stale and skipped:
  while a topic moves between gateway workers both may publish it for a moment (README, "Several workers").
- When its book breaks in a way the gateway will not repair by itself (a `u` gap, a checksum mismatch, a delta
  with no book because this consumer restarted or its queue dropped messages), it asks the gateway for a
  snapshot: `POST /api/v1/subscriptions/{id}/snapshot` puts the current book in this service's queue only,
  before the next delta (README, "Order books"). After `book_invalid` it just waits: the gateway resubscribes
  and the fresh snapshot comes to every queue.
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
import httpx
import msgspec
from aio_pika.abc import AbstractIncomingMessage

from shared.enums import ChannelType
from shared.events import ENVELOPE_DECODER
from shared.payloads import BookInvalid, BookUpdate, convert_payload
from shared.routing import service_queue

log = logging.getLogger("consumer_example")

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_API = "http://127.0.0.1:8000"
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
        self.invalidated: set[str] = set()  # topics after book_invalid: the gateway sends their snapshot itself
        self.asked: set[str] = set()  # topics we asked a snapshot for and have not had one since
        self.snapshot_wanted: set[str] = set()  # topics to ask the gateway a snapshot for (drained by the I/O)

    def _broken(self, topic: str) -> None:
        if topic not in self.invalidated and topic not in self.asked:
            self.asked.add(topic)
            self.snapshot_wanted.add(topic)

    def process(self, body: bytes) -> Outcome:
        """Handle one message body. Raises `msgspec.DecodeError` for a body that is not an event."""
        event = ENVELOPE_DECODER.decode(body)
        if not self.seen.add(event.event_id):
            outcome = Outcome.DUPLICATE
        elif event.event_type == "book_invalid":
            invalid = convert_payload(BookInvalid, event.payload)
            for event_type in ("orderbook", "orderbook_top"):
                self.books.pop((event_type, event.category, event.topic), None)
            self.invalidated.add(event.topic)
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
            self.invalidated.discard(key[2])
            self.asked.discard(key[2])
        elif book is None:
            self._broken(key[2])  # we restarted, or our queue dropped the snapshot: ask (once) for one
            return Outcome.WAITING_FOR_SNAPSHOT
        elif update.update_id != book.update_id + 1:
            del self.books[key]
            log.error("book gap: topic=%s expected u=%d got u=%d", key[2], book.update_id + 1, update.update_id)
            self._broken(key[2])
            return Outcome.GAP
        book.apply(update)
        ours = book.checksum(update.checksum_levels)
        if ours != update.checksum:
            del self.books[key]
            log.error(
                "checksum mismatch: topic=%s u=%d ours=%d theirs=%d", key[2], update.update_id, ours, update.checksum
            )
            self._broken(key[2])
            return Outcome.CHECKSUM_MISMATCH
        return Outcome.APPLIED


class SnapshotClient:
    """Asks the control API to re-send a topic's state to this service's queue (POST .../snapshot)."""

    def __init__(self, api: httpx.AsyncClient, service: str, channel: ChannelType) -> None:
        self._api = api  # base_url is the control API, headers carry X-API-Key
        self._service = service
        self._channel = channel
        self.requested: list[str] = []

    async def request(self, topic: str) -> bool:
        """True if the gateway accepted (202); the snapshot then arrives in our queue before the next delta."""
        params = {"requesting_service": self._service, "channel_type": self._channel.value, "is_active": "true"}
        listed = (await self._api.get("/api/v1/subscriptions", params=params)).json()
        ids = [item["id"] for item in listed["items"] if item["topic"] == topic]
        if not ids:
            log.error("no live subscription for %s: cannot ask for a snapshot", topic)
            return False
        response = await self._api.post(f"/api/v1/subscriptions/{ids[0]}/snapshot")
        self.requested.append(topic)
        log.info("asked for a snapshot: topic=%s status=%d", topic, response.status_code)
        return response.status_code == 202


async def consume(
    url: str,
    queue_name: str,
    processor: EventProcessor,
    stop: asyncio.Event,
    snapshots: SnapshotClient | None = None,
) -> None:
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
        while snapshots is not None and processor.snapshot_wanted:
            topic = processor.snapshot_wanted.pop()
            try:
                accepted = await snapshots.request(topic)
            except httpx.HTTPError:
                log.exception("snapshot request failed: topic=%s", topic)
                accepted = False
            if not accepted:
                processor.asked.discard(topic)  # ask again at the next broken event

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
    parser.add_argument("--api", default=DEFAULT_API, help=f"control API base URL (default {DEFAULT_API})")
    parser.add_argument("--api-key", default=None, help="an API key that may write (for snapshot requests)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        channel = ChannelType(args.channel)
        headers = {"X-API-Key": args.api_key} if args.api_key else {}
        async with httpx.AsyncClient(base_url=args.api, headers=headers, timeout=10) as api:
            snapshots = SnapshotClient(api, args.service, channel)
            await consume(args.url, service_queue(args.service, channel), EventProcessor(), stop, snapshots)

    asyncio.run(run())


if __name__ == "__main__":
    main()
