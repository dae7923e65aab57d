"""The chaos run's checker: amounts compared by value, and a late copy of a book update across a restart."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from bench.chaos.consumers import AccountView, ServiceConsumer
from bench.chaos.model import Subscriptions, Violations
from bench.chaos.run import account_mismatches
from shared.enums import Category
from shared.events import EventEnvelope
from tests.fake_bybit import BookStream, FakeBybit
from tests.fake_bybit.ledger import AccountLedger

KEY = ("linear", "BTCUSDT", 0)
TOPIC = "orderbook.50.BTCUSD"


def mismatches(fake_size: str, consumer_size: str) -> list[dict[str, object]]:
    ledger = AccountLedger(positions={KEY: {"symbol": "BTCUSDT", "size": fake_size}})
    view = AccountView(positions={KEY: ((1, 1), {"symbol": "BTCUSDT", "size": consumer_size})})
    return account_mismatches(cast(FakeBybit, SimpleNamespace(ledger=ledger)), view)


def test_a_flat_position_written_as_0_and_as_0_00_is_the_same_size() -> None:
    assert mismatches("0.00", "0") == []


def test_a_position_of_another_size_is_still_a_mismatch() -> None:
    assert mismatches("0.00", "0.5") == [{"subject": "position:BTCUSDT", "fake": "0.00", "consumer": "0.5"}]


def book_envelope(message: dict[str, Any]) -> EventEnvelope:
    data = message["data"]
    payload = {
        "type": message["type"],
        "s": data["s"],
        "b": data["b"],
        "a": data["a"],
        "u": data["u"],
        "seq": data["seq"],
        "checksum": 0,
        "checksum_levels": 1,
    }
    return EventEnvelope(
        event_id=f"orderbook:inverse:{TOPIC}:{data['u']}:{message['type']}",
        event_type="orderbook",
        category="inverse",
        symbol="BTCUSD",
        topic=TOPIC,
        exchange_ts=message["ts"],
        received_ts=message["ts"],
        published_ts=message["ts"],
        trace_id="t",
        payload=payload,
    )


def test_a_late_copy_from_before_a_restart_is_a_stale_copy_not_a_hole() -> None:
    # Two workers publish the topic while it changes hands. The faster one is past the fake's `u == 1` restart when
    # the slower one's copy of the delta before it arrives: its `u` (385) is past the restarted book's (1), its
    # `seq` is not. Seen by the chaos run (seed 4328) as a hole "u 2 expected, 385 received".
    fake = FakeBybit()  # never started: only its book for the topic is used, built as a subscribe would
    stream = fake._feed._stream(Category.INVERSE, TOPIC)
    assert isinstance(stream, BookStream)
    subscriptions, violations = Subscriptions(), Violations()
    subscriptions.created("svc", ("orderbook", "inverse", TOPIC), "id")
    consumer = ServiceConsumer("svc", "amqp://unused", fake, subscriptions, violations, cancel_grace_ms=0)
    stream.fault("restart", 0)  # an earlier restart: u 1
    for _ in range(382):
        stream.next(0)
    first = [stream.snapshot(1), stream.next(2), stream.next(3)]  # u 383, 384, 385
    restart = stream.fault("restart", 4)  # u 1 again, a snapshot
    after = [stream.next(5), stream.next(6)]  # u 2, 3
    late = first[-1]  # the slower worker's copy of u 385
    for message in [*first, restart, late, *after, restart]:
        consumer.check(book_envelope(message))
    assert consumer.holes == []
    assert consumer.counts["book:stale_copy"] == 2  # the late 385, and the late copy of the restart itself
    assert consumer.counts["book:compared"] == 6
    assert violations.counts == {}
