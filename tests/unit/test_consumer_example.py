"""docs/consumer_example.py's book keeping when two gateway workers publish one topic during a handover."""

from __future__ import annotations

from typing import Any

import msgspec

from docs.consumer_example import EventProcessor, LocalBook, Outcome
from shared.payloads import BookUpdate

TOPIC = "orderbook.50.BTCUSDT"
BOOK = ("orderbook", "linear", TOPIC)


def book_event(kind: str, u: int, bids: list[list[str]], book: LocalBook | None) -> tuple[bytes, LocalBook]:
    """An envelope the gateway would publish, with the checksum of the book after applying it."""
    after = LocalBook(update_id=0) if kind == "snapshot" or book is None else LocalBook(u, dict(book.bids), {})
    payload: dict[str, Any] = {
        "type": kind,
        "s": "BTCUSDT",
        "b": bids,
        "a": [],
        "u": u,
        "checksum": 0,
        "checksum_levels": 25,
    }
    after.apply(msgspec.convert(payload, BookUpdate))
    payload["checksum"] = after.checksum(25)
    envelope = {
        "event_id": f"orderbook:linear:{TOPIC}:{u}:{kind}",
        "event_type": "orderbook",
        "category": "linear",
        "symbol": "BTCUSDT",
        "topic": TOPIC,
        "exchange_ts": 1,
        "received_ts": 1,
        "published_ts": 1,
        "trace_id": "t",
        "payload": payload,
    }
    return msgspec.json.encode(envelope), after


def test_a_second_workers_late_copies_are_skipped_and_the_book_keeps_following() -> None:
    processor = EventProcessor()
    snapshot, book = book_event("snapshot", 10, [["100", "1"]], None)
    delta, book = book_event("delta", 11, [["101", "2"]], book)
    assert processor.process(snapshot) is Outcome.APPLIED
    assert processor.process(delta) is Outcome.APPLIED
    # The new owner's fresh snapshot arrives after the old owner's delta 11 was applied: it is behind us.
    late_snapshot, _ = book_event("snapshot", 11, [["100", "1"], ["101", "2"]], None)
    assert processor.process(late_snapshot) is Outcome.STALE
    assert processor.process(delta) is Outcome.DUPLICATE  # the new owner's copy of delta 11
    older, _ = book_event("delta", 9, [["99", "1"]], None)
    assert processor.process(older) is Outcome.STALE
    following, _ = book_event("delta", 12, [["102", "3"]], book)
    assert processor.process(following) is Outcome.APPLIED
    assert processor.books[BOOK].update_id == 12


def test_a_bybit_restart_snapshot_is_always_taken() -> None:
    processor = EventProcessor()
    snapshot, _ = book_event("snapshot", 500, [["100", "1"]], None)
    restart, _ = book_event("snapshot", 1, [["90", "1"]], None)
    assert processor.process(snapshot) is Outcome.APPLIED
    assert processor.process(restart) is Outcome.APPLIED
    assert processor.books[BOOK].update_id == 1
