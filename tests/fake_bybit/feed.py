"""The public side of the fake: one market stream per (category, topic), shared by every connection
subscribed to it (as on Bybit, where a book's `u` is per topic, not per connection), and the fan-out of
each message to those connections.

No tasks and no sleeping here: the server's push loop calls `tick`, test hooks call `advance` and
`inject_fault`; each fans out synchronously, so every subscriber gets a topic's messages in order.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from tests.fake_bybit import topics
from tests.fake_bybit.books import BookFault, BookStream
from tests.fake_bybit.market import MarketStream, new_stream
from tests.fake_bybit.samples import Samples
from tests.fake_bybit.session import Session
from tests.fake_bybit.topics import Category

JsonObject = dict[str, Any]
StreamKey = tuple[Category, str]


class MarketFeed:
    def __init__(self, samples: Samples, seed: int, sessions: Callable[[], Iterable[Session]]) -> None:
        self._samples = samples
        self._seed = seed
        self._sessions = sessions
        self._streams: dict[StreamKey, MarketStream] = {}
        self._last_pushed: dict[StreamKey, float] = {}
        # Topics acknowledged as usual but never pushed (a wrong symbol Bybit accepts, a halted market).
        self.muted: set[str] = set()

    def subscribed(self, session: Session, category: Category, new_topics: Iterable[str], now_ms: int) -> None:
        """Send a new subscriber the first message of each topic (a snapshot for books and tickers)."""
        for topic in new_topics:
            if topic in self.muted:
                continue
            first = self._stream(category, topic).snapshot(now_ms)
            if first is not None:
                self._last_pushed[(category, topic)] = time.monotonic()
                session.send(first, data=True)

    def tick(self, now_ms: int, *, auto_push: bool, level1_repeat_interval: float | None) -> None:
        """One round of the push loop over every topic someone is subscribed to."""
        now = time.monotonic()
        for key in self._active():
            stream = self._streams[key]
            if auto_push:
                self.publish(key[0], stream.next(now_ms))
            if (
                isinstance(stream, BookStream)
                and stream.level1
                and level1_repeat_interval is not None
                and now - self._last_pushed.get(key, now) >= level1_repeat_interval
            ):
                # §7.1: an unchanged level-1 book is pushed again after 3 s with the same u.
                self.publish(key[0], stream.repeat_level1(now_ms))

    def advance(self, topic: str, category: Category | None, count: int, now_ms: int) -> list[JsonObject]:
        found, stream = self.find(topic, category)
        messages = [stream.next(now_ms) for _ in range(count)]
        for message in messages:
            self.publish(found, message)
        return messages

    def inject_fault(self, topic: str, category: Category | None, fault: BookFault, now_ms: int) -> JsonObject:
        found, stream = self.find(topic, category)
        if not isinstance(stream, BookStream):
            raise TypeError(f"{topic!r} is not an order book")
        message = stream.fault(fault, now_ms)
        self.publish(found, message)
        return message

    def find(self, topic: str, category: Category | None) -> tuple[Category, MarketStream]:
        matches = [key for key in self._streams if key[1] == topic and category in (None, key[0])]
        if not matches:
            raise LookupError(f"no stream for {topic!r}: subscribe to it first")
        if len(matches) > 1:
            raise LookupError(f"{topic!r} exists on {[key[0] for key in matches]}: pass category=")
        return matches[0][0], self._streams[matches[0]]

    def publish(self, category: Category, message: JsonObject) -> int:
        """Send a public push to every connection of `category` subscribed to its topic."""
        topic = message.get("topic")
        if topic in self.muted:
            return 0
        self._last_pushed[(category, str(topic))] = time.monotonic()
        sent = 0
        for session in self._sessions():
            if session.record.category == category and topic in session.record.topics:
                sent += session.send(message, data=True)
        return sent

    def _stream(self, category: Category, topic: str) -> MarketStream:
        key = (category, topic)
        if key not in self._streams:
            parsed = topics.parse_public_topic(category, topic)
            if parsed is None:
                raise LookupError(f"{category} has no topic {topic!r}")
            rng = random.Random(f"{self._seed}/{category}/{topic}")  # per topic: order of creation is moot
            self._streams[key] = new_stream(category, parsed, self._samples, rng)
        return self._streams[key]

    def _active(self) -> list[StreamKey]:
        keys: dict[StreamKey, None] = {}
        for session in self._sessions():
            category = session.record.category
            if category != "private":
                for topic in sorted(session.record.topics):
                    keys[(category, topic)] = None
        return list(keys)
