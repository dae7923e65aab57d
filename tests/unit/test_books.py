"""Order-book state (stream_worker.bybit.books): recorded samples, each §7.3 rule, and a property test against
a naive reference book written here from PROTOCOL.md §7.3."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

import msgspec
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from stream_worker.bybit.books import (
    BOOK_DATA,
    BOOK_PUSH,
    BookData,
    BookOutcome,
    BookOutcomeKind,
    BookPush,
    BookState,
    InvalidCause,
    Level,
    OrderBook,
    book_checksum,
)
from tests.strategies import BookMessage, BookStep, Reset, book_streams
from tests.support.samples import SAMPLES

Levels = list[Level]


def sample(name: str) -> BookPush:
    return BOOK_PUSH.decode((SAMPLES / name).read_bytes())


def feed(book: OrderBook, push: BookPush) -> BookOutcome:
    return book.apply(push.kind, push.data, ts=push.ts, cts=push.cts)


def data(u: int, bids: Sequence[Level] = (), asks: Sequence[Level] = (), seq: int | None = None) -> BookData:
    raw: dict[str, object] = {
        "s": "BTCUSDT",
        "b": [list(x) for x in bids],
        "a": [list(x) for x in asks],
        "u": u,
    }
    if seq is not None:
        raw["seq"] = seq
    return BOOK_DATA.decode(msgspec.json.encode(raw))


def live_book(depth: int = 50, u: int = 100, seq: int | None = 1000) -> OrderBook:
    book = OrderBook(f"orderbook.{depth}.BTCUSDT", depth)
    outcome = book.apply("snapshot", data(u, [("100", "1"), ("99", "2")], [("101", "3"), ("102", "4")], seq))
    assert outcome.kind is BookOutcomeKind.SNAPSHOT
    return book


# --- recorded samples ---


def test_linear_sample_delta_updates_both_sides_of_snapshot() -> None:
    snapshot, delta = (
        sample("public_orderbook_snapshot_linear.json"),
        sample("public_orderbook_delta_linear.json"),
    )
    book = OrderBook.from_topic(snapshot.topic)
    assert feed(book, snapshot).publishable
    outcome = feed(book, delta)
    assert outcome.kind is BookOutcomeKind.DELTA
    assert book.top(50) == ([("28555.20", "0.677")], [("28555.30", "0.029")])
    assert (book.last_update_id, book.last_seq) == (20683569, 10916156553)
    assert (book.last_ts, book.last_cts) == (1680673821651, None)


def test_spot_sample_delta_inserts_bid_and_ignores_deletes_of_absent_prices() -> None:
    book = OrderBook.from_topic("orderbook.50.BTCUSDT")
    feed(book, sample("public_orderbook_snapshot_spot.json"))
    assert feed(book, sample("public_orderbook_delta_spot.json")).kind is BookOutcomeKind.DELTA
    assert book.top(50) == (
        [("28162.57", "0.07562"), ("28161.04", "0.177474")],
        [("28162.58", "0.506829")],
    )


def test_option_sample_without_seq_applies_delta_and_deletes_level() -> None:
    snapshot = sample("public_orderbook_snapshot_option.json")
    book = OrderBook.from_topic(snapshot.topic)
    feed(book, snapshot)
    assert book.last_seq is None
    assert feed(book, sample("public_orderbook_delta_option.json")).kind is BookOutcomeKind.DELTA
    assert book.top(25) == ([("0.01", "50")], [("1.75", "46")])
    assert book.last_update_id == 24642


def test_option_2024_snapshot_orders_prices_numerically_not_as_strings() -> None:
    push = sample("public_orderbook_snapshot_option_2024.json")
    book = OrderBook.from_topic(push.topic)
    feed(book, push)
    bids, asks = book.top(25)
    assert [p for p, _ in bids] == ["1940", "1525", "5"]
    assert [p for p, _ in asks] == ["2075", "2080", "2100", "2495"]
    assert (book.last_seq, book.last_cts) == (26718245417, 1725967407642)


def test_empty_option_snapshot_is_a_valid_empty_book() -> None:
    push = sample("public_orderbook_snapshot_option_empty.json")
    book = OrderBook.from_topic(push.topic)
    assert feed(book, push).publishable
    assert book.is_valid
    assert (book.best_bid(), book.best_ask(), book.top(25)) == (None, None, ([], []))
    assert book.checksum() == 0


def test_legacy_option_book_starting_at_u0_takes_u1_as_the_next_delta() -> None:
    book = OrderBook.from_topic("orderbook.25.BTC-30JUN23-45000-P")
    book.apply("snapshot", data(0, [("5", "1")], [("10", "1")]))
    outcome = book.apply("delta", data(1, [("6", "2")], []))
    assert (outcome.kind, outcome.restart) == (BookOutcomeKind.DELTA, False)
    assert book.top(25) == ([("6", "2"), ("5", "1")], [("10", "1")])


@pytest.mark.parametrize("category", ["linear", "spot"])
def test_level1_2023_samples_apply_delta_on_snapshot(category: str) -> None:
    snapshot = sample(f"public_orderbook1_snapshot_{category}_2023.json")
    delta = sample(f"public_orderbook1_delta_{category}_2023.json")
    book = OrderBook.from_topic(snapshot.topic)
    assert book.depth == 1
    feed(book, snapshot)
    assert feed(book, delta).kind is BookOutcomeKind.DELTA
    (bid,), (ask,) = book.top(1)
    assert bid == (delta.data.bids[0].price, delta.data.bids[0].size)
    assert ask == (snapshot.data.asks[0].price, snapshot.data.asks[0].size)


def test_docs_sample_pair_is_not_consecutive_and_reports_a_gap() -> None:
    # The docs' snapshot (u 18521288) and delta (u 177400507) come from different days: applying one on the
    # other is exactly the silent corruption the gap check exists for.
    book = OrderBook.from_topic("orderbook.50.BTCUSDT")
    feed(book, sample("public_orderbook_snapshot_linear_docs.json"))
    assert book.top(50) == (
        [("16493.50", "0.006"), ("16493.00", "0.100")],
        [("16611.00", "0.029"), ("16612.00", "0.213")],
    )
    outcome = feed(book, sample("public_orderbook_delta_linear_docs.json"))
    assert (outcome.kind, outcome.cause) == (BookOutcomeKind.INVALIDATED, InvalidCause.GAP)


def test_docs_sample_delta_applies_on_a_book_at_the_previous_update_id() -> None:
    delta = sample("public_orderbook_delta_linear_docs.json")
    book = OrderBook.from_topic(delta.topic)
    bids = [("30247.20", "1"), ("30240.00", "5")]
    asks = [("30248.70", "2"), ("30249.60", "3"), ("30260.00", "1")]
    book.apply("snapshot", data(delta.data.update_id - 1, bids, asks, seq=66544703000))
    assert feed(book, delta).kind is BookOutcomeKind.DELTA
    assert book.top(50) == (
        [("30247.20", "30.028"), ("30245.40", "0.224"), ("30242.10", "1.593"), ("30240.30", "1.305")],
        [
            ("30249.30", "0.892"),
            ("30249.50", "1.778"),
            ("30251.90", "2.947"),
            ("30252.20", "0.659"),
            ("30252.50", "4.591"),
            ("30260.00", "1"),
        ],
    )
    assert book.last_cts == 1687940967464


def test_rpi_levels_with_three_elements_keep_the_non_rpi_size() -> None:
    delta = sample("public_orderbook_rpi_delta.json")
    book = OrderBook.from_topic(delta.topic)
    assert book.depth == 50
    snapshot = b'{"s":"BTCUSDT","u":2258979,"b":[["121969.9","1","0"]],"a":[["122018.5","2","0"]]}'
    book.apply("snapshot", msgspec.Raw(snapshot))
    assert feed(book, delta).kind is BookOutcomeKind.DELTA
    # An RPI-only level (non-RPI size 0) is absent from the non-RPI view we keep.
    assert book.top(50) == ([("121975.1", "0.114259")], [("121990.8", "0.441585"), ("121996.1", "0.016393")])


def test_raw_data_from_the_frame_reader_is_decoded() -> None:
    book = OrderBook.from_topic("orderbook.50.BTCPERP")
    raw = msgspec.Raw(
        msgspec.json.encode(
            msgspec.json.decode((SAMPLES / "public_orderbook_snapshot_linear.json").read_bytes())["data"]
        )
    )
    assert book.apply("snapshot", raw).publishable
    assert book.best_bid() == ("28555.20", "0.597")


def test_push_decoder_accepts_ts_as_a_numeric_string() -> None:
    push = BOOK_PUSH.decode(
        b'{"topic":"orderbook.1.X","type":"snapshot","ts":"1772694601512","data":{"s":"X","b":[],"a":[],"u":5}}'
    )
    assert push.ts == 1772694601512


# --- §7.3, rule by rule ---


def test_snapshot_replaces_both_sides_entirely() -> None:
    book = live_book()
    outcome = book.apply("snapshot", data(5000, [("90", "1")], [("110", "1")], seq=1))
    assert (outcome.kind, outcome.restart) == (BookOutcomeKind.SNAPSHOT, False)
    assert book.top(50) == ([("90", "1")], [("110", "1")])
    assert (book.last_update_id, book.last_seq) == (5000, 1)


def test_delta_size_zero_deletes_level_also_written_with_decimals() -> None:
    book = live_book()
    book.apply("delta", data(101, [("100", "0")], [("101", "0.000")], seq=1001))
    assert book.top(50) == ([("99", "2")], [("102", "4")])


def test_delta_inserts_new_price_in_order_and_replaces_existing_size() -> None:
    book = live_book()
    book.apply("delta", data(101, [("99.5", "7"), ("99", "8")], [("101.5", "9")]))
    assert book.top(50) == (
        [("100", "1"), ("99.5", "7"), ("99", "8")],
        [("101", "3"), ("101.5", "9"), ("102", "4")],
    )


def test_same_price_written_differently_is_one_level_and_latest_string_wins() -> None:
    book = live_book()
    book.apply("delta", data(101, [("100.0", "5")], []))
    assert book.top(50)[0] == [("100.0", "5"), ("99", "2")]
    book.apply("delta", data(102, [("99.00", "0")], [("101.00", "3")]))
    assert book.top(50) == ([("100.0", "5")], [("101.00", "3"), ("102", "4")])


def test_gap_in_update_id_invalidates_book_until_next_snapshot() -> None:
    book = live_book(u=100)
    outcome = book.apply("delta", data(102, [("100", "2")], []))
    assert (outcome.kind, outcome.cause, outcome.just_invalidated) == (
        BookOutcomeKind.INVALIDATED,
        "gap",
        True,
    )
    assert (book.state, book.is_valid, book.invalid_cause) == (
        BookState.WAITING_SNAPSHOT,
        False,
        InvalidCause.GAP,
    )
    assert book.top(50) == ([], [])
    for u in (103, 104, 101):
        later = book.apply("delta", data(u, [("100", "2")], []))
        assert (later.kind, later.cause, later.publishable) == (BookOutcomeKind.STILL_INVALID, "gap", False)
    assert book.apply("snapshot", data(900, [("100", "1")], [("101", "1")])).publishable
    assert book.is_valid
    assert book.apply("delta", data(901, [("100", "3")], [])).kind is BookOutcomeKind.DELTA
    assert (book.counters.gap, book.counters.still_invalid) == (1, 3)


def test_stale_or_duplicate_update_id_is_dropped_and_counted() -> None:
    book = live_book(u=100)
    for u in (100, 99, 50):
        outcome = book.apply("delta", data(u, [("100", "9")], []))
        assert (outcome.kind, outcome.publishable) == (BookOutcomeKind.STALE, False)
    assert book.is_valid
    assert book.best_bid() == ("100", "1")
    assert book.counters.stale == 3
    assert book.apply("delta", data(101, [], [])).kind is BookOutcomeKind.DELTA


def test_seq_going_backwards_is_dropped_and_counted() -> None:
    book = live_book(u=100, seq=1000)
    outcome = book.apply("delta", data(101, [("100", "9")], [], seq=999))
    assert (outcome.kind, outcome.publishable) == (BookOutcomeKind.SEQ_BACKWARDS, False)
    assert (book.is_valid, book.best_bid(), book.last_update_id) == (True, ("100", "1"), 100)
    assert book.counters.seq_backwards == 1
    # An equal seq is not backwards: seq is shared with other topics and only has to be non-decreasing.
    assert book.apply("delta", data(101, [("100", "9")], [], seq=1000)).kind is BookOutcomeKind.DELTA


def test_gap_is_reported_even_when_seq_also_goes_backwards() -> None:
    book = live_book(u=100, seq=1000)
    assert book.apply("delta", data(105, [], [], seq=10)).cause is InvalidCause.GAP


def test_restart_snapshot_u1_overwrites_book() -> None:
    book = live_book(u=100, seq=1000)
    outcome = book.apply("snapshot", data(1, [("50", "1")], [("51", "1")], seq=7))
    assert (outcome.kind, outcome.restart) == (BookOutcomeKind.SNAPSHOT, True)
    assert book.top(50) == ([("50", "1")], [("51", "1")])
    assert (book.last_update_id, book.last_seq, book.counters.restarts) == (1, 7, 1)
    assert book.apply("delta", data(2, [("49", "1")], [], seq=8)).kind is BookOutcomeKind.DELTA


def test_restart_labelled_delta_with_u1_is_treated_as_snapshot() -> None:
    book = live_book(u=100)
    outcome = book.apply("delta", data(1, [("50", "1"), ("49", "0")], [("51", "1")]))
    assert (outcome.kind, outcome.restart, outcome.publishable) == (BookOutcomeKind.SNAPSHOT, True, True)
    assert book.top(50) == ([("50", "1")], [("51", "1")])


def test_restart_u1_makes_an_invalid_book_valid_again() -> None:
    book = live_book(u=100)
    book.apply("delta", data(200, [], []))
    assert not book.is_valid
    assert book.apply("delta", data(1, [("50", "1")], [("51", "1")])).publishable
    assert book.is_valid


def test_delta_before_first_snapshot_invalidates_book_once() -> None:
    book = OrderBook.from_topic("orderbook.50.BTCUSDT")
    assert (book.state, book.invalid_cause) == (BookState.WAITING_SNAPSHOT, None)
    first = book.apply("delta", data(10, [("100", "1")], []))
    assert (first.kind, first.cause) == (BookOutcomeKind.INVALIDATED, InvalidCause.DELTA_BEFORE_SNAPSHOT)
    second = book.apply("delta", data(11, [("100", "1")], []))
    assert (second.kind, second.cause) == (BookOutcomeKind.STILL_INVALID, InvalidCause.DELTA_BEFORE_SNAPSHOT)
    assert book.top(50) == ([], [])
    assert book.apply("snapshot", data(12, [("100", "1")], [])).publishable


def test_crossed_book_after_delta_invalidates_book() -> None:
    book = live_book()
    outcome = book.apply("delta", data(101, [("101.5", "1")], []))
    assert (outcome.kind, outcome.cause) == (BookOutcomeKind.INVALIDATED, InvalidCause.CROSSED)
    assert (book.is_valid, book.top(50), book.counters.crossed) == (False, ([], []), 1)
    assert book.apply("delta", data(102, [], [])).kind is BookOutcomeKind.STILL_INVALID


def test_locked_book_with_equal_best_prices_counts_as_crossed() -> None:
    book = live_book()
    assert book.apply("delta", data(101, [], [("100.00", "1")])).cause is InvalidCause.CROSSED


def test_crossed_snapshot_is_not_published_and_asks_for_another_resync() -> None:
    book = live_book()
    book.apply("delta", data(300, [], []))  # gap: the caller resubscribes
    outcome = book.apply("snapshot", data(5, [("101", "1")], [("100", "1")]))
    assert (outcome.kind, outcome.cause) == (BookOutcomeKind.INVALIDATED, InvalidCause.CROSSED)
    assert not book.is_valid


def test_level1_repeat_with_same_update_id_is_not_a_gap() -> None:
    snapshot = sample("public_orderbook1_snapshot_linear_2023.json")
    book = OrderBook.from_topic(snapshot.topic)
    feed(book, snapshot)
    outcome = feed(book, snapshot)
    assert (outcome.kind, outcome.publishable) == (BookOutcomeKind.HEARTBEAT, False)
    assert (book.is_valid, book.counters.heartbeats, book.counters.snapshots) == (True, 1, 1)


def test_level1_snapshots_are_never_gap_checked() -> None:
    book = OrderBook.from_topic("orderbook.1.BTCUSDT")
    for u in (10, 50, 20, 21):
        outcome = book.apply("snapshot", data(u, [("100", str(u))], [("101", "1")]))
        assert outcome.kind is BookOutcomeKind.SNAPSHOT
    assert (book.best_bid(), book.last_update_id) == (("100", "21"), 21)


def test_level1_repeat_with_same_update_id_but_new_levels_replaces_book() -> None:
    book = OrderBook.from_topic("orderbook.1.BTCUSDT")
    book.apply("snapshot", data(10, [("100", "1")], [("101", "1")]))
    assert book.apply("snapshot", data(10, [("100", "2")], [("101", "1")])).kind is BookOutcomeKind.SNAPSHOT
    assert book.best_bid() == ("100", "2")


def test_level1_legacy_delta_is_still_gap_checked() -> None:
    # A delta is only right on the state it follows, so deltas are checked even on level 1 (pre-2025-03).
    book = OrderBook.from_topic("orderbook.1.BTCUSDT")
    book.apply("snapshot", data(10, [("100", "1")], [("101", "1")]))
    assert book.apply("delta", data(12, [("100", "2")], [])).cause is InvalidCause.GAP


def test_reset_marks_book_waiting_with_cause_reconnect() -> None:
    book = live_book()
    outcome = book.reset()
    assert (outcome.kind, outcome.cause) == (BookOutcomeKind.INVALIDATED, InvalidCause.RECONNECT)
    assert (book.state, book.invalid_cause, book.last_update_id, book.last_seq) == (
        BookState.WAITING_SNAPSHOT,
        InvalidCause.RECONNECT,
        None,
        None,
    )
    assert book.top(50) == ([], [])
    # last_u is not carried across connections: the new snapshot's u is unrelated (§7.3 rule 6).
    assert book.apply("snapshot", data(3, [("100", "1")], [])).publishable
    assert book.apply("delta", data(4, [], [])).publishable


def test_reset_of_an_invalid_book_is_not_reported_as_a_new_invalidation() -> None:
    book = live_book()
    book.apply("delta", data(300, [], []))
    assert book.reset().kind is BookOutcomeKind.STILL_INVALID
    assert book.invalid_cause is InvalidCause.RECONNECT


def test_delta_after_reset_but_before_snapshot_asks_for_resubscribe() -> None:
    book = live_book()
    book.reset()
    outcome = book.apply("delta", data(7, [], []))
    assert (outcome.kind, outcome.cause) == (BookOutcomeKind.INVALIDATED, InvalidCause.DELTA_BEFORE_SNAPSHOT)


@pytest.mark.parametrize("level", [["abc", "1"], ["-1", "1"], ["NaN", "1"], ["100", "-1"], ["100", "Infinity"]])
def test_malformed_level_invalidates_book_without_half_applying(level: list[str]) -> None:
    book = live_book()
    raw = msgspec.json.encode({"s": "X", "b": [["99.5", "1"]], "a": [level], "u": 101})
    outcome = book.apply("delta", BOOK_DATA.decode(raw))
    assert (outcome.kind, outcome.cause) == (BookOutcomeKind.INVALIDATED, InvalidCause.MALFORMED)
    assert book.top(50) == ([], [])


def test_undecodable_raw_data_invalidates_book() -> None:
    book = live_book()
    outcome = book.apply("delta", msgspec.Raw(b'{"s":"X","b":[[1,2]],"a":[],"u":101}'))
    assert (outcome.kind, outcome.cause) == (BookOutcomeKind.INVALIDATED, InvalidCause.MALFORMED)


def test_levels_beyond_depth_are_kept_not_trimmed() -> None:
    book = OrderBook.from_topic("orderbook.1.BTCUSDT")
    book.apply("snapshot", data(10, [("100", "1")], [("101", "1")]))
    book.apply("delta", data(11, [("99", "1")], [("102", "1")]))
    assert book.top(5) == ([("100", "1"), ("99", "1")], [("101", "1"), ("102", "1")])


def test_top_returns_best_levels_first_and_at_most_n() -> None:
    book = live_book()
    assert book.top(1) == ([("100", "1")], [("101", "3")])
    assert book.top(0) == ([], [])
    assert (book.best_bid(), book.best_ask()) == (("100", "1"), ("101", "3"))


@pytest.mark.parametrize("kind", ["partial", "", None])
def test_unknown_message_type_invalidates_the_book_instead_of_raising(kind: str | None) -> None:
    book = live_book()
    outcome = book.apply(kind, data(101))
    assert (outcome.kind, outcome.cause) == (BookOutcomeKind.INVALIDATED, InvalidCause.MALFORMED)
    assert not book.is_valid
    assert book.top(5) == ([], [])
    # Already resubscribing: a second one is not reported again; a snapshot makes the book live again.
    assert book.apply("partial", data(102)).kind is BookOutcomeKind.STILL_INVALID
    assert book.apply("snapshot", data(200, [("100", "1")], [("101", "1")])).kind is BookOutcomeKind.SNAPSHOT


def test_a_jump_in_u_is_applied_and_counted_when_the_gap_check_is_off() -> None:
    book = OrderBook("orderbook.50.BTCUSDT", 50, gap_check=False)
    book.apply("snapshot", data(100, [("100", "1")], [("101", "3")]))
    outcome = book.apply("delta", data(105, [("100", "2")]))
    assert outcome.kind is BookOutcomeKind.DELTA
    assert (book.is_valid, book.last_update_id, book.counters.gap_ignored) == (True, 105, 1)
    assert book.best_bid() == ("100", "2")
    assert book.apply("delta", data(104)).kind is BookOutcomeKind.STALE  # u going back is still stale


def test_a_jump_in_u_is_a_gap_by_default() -> None:
    book = OrderBook.from_topic("orderbook.50.BTCUSDT")
    book.apply("snapshot", data(100, [("100", "1")], [("101", "3")]))
    assert book.apply("delta", data(105)).cause is InvalidCause.GAP


def test_from_topic_reads_depth_and_rejects_full_depth_books() -> None:
    assert OrderBook.from_topic("orderbook.200.BTC-26DEC25").depth == 200
    assert OrderBook.from_topic("orderbook.rpi.BTCUSDT").depth == 50
    with pytest.raises(ValueError, match="unsupported"):
        OrderBook.from_topic("orderbook.full.MNTUSDT")
    with pytest.raises(ValueError, match="not an order-book topic"):
        OrderBook.from_topic("tickers.BTCUSDT")


# --- checksum ---


def test_checksum_matches_the_documented_example() -> None:
    bids, asks = [("100.5", "2"), ("100", "1")], [("101", "3")]
    assert book_checksum(bids, asks, 25) == zlib.crc32(b"100.5:2:101:3:100:1") == 4130375076


def test_checksum_interleaves_levels_and_continues_with_the_longer_side() -> None:
    bids, asks = [("3", "1")], [("4", "1"), ("5", "2"), ("6", "3")]
    assert book_checksum(bids, asks, 2) == zlib.crc32(b"3:1:4:1:5:2")


def test_checksum_of_empty_book_is_zero() -> None:
    assert book_checksum([], [], 25) == 0
    assert OrderBook.from_topic("orderbook.50.X").checksum() == 0


def test_book_checksum_uses_the_exchange_strings_of_our_top_levels() -> None:
    book = live_book()
    book.apply("delta", data(101, [("100.0", "1.50")], []))
    assert book.checksum(1) == zlib.crc32(b"100.0:1.50:101:3")
    assert book.checksum() == book_checksum(*book.top(25))


# --- property: our book equals a naive reference book, or says it is invalid ---


def _decimal_or_none(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() and value >= 0 and not value.is_signed() else None


class ReferenceBook:
    """PROTOCOL.md §7.3, naively: plain dicts keyed by Decimal, sorted only when read."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}
        self.live = False
        self.last_u: int | None = None
        self.last_seq: int | None = None
        self.told = False  # the caller was told the book is invalid (and has resubscribed)

    def top(self, n: int) -> tuple[Levels, Levels]:
        bids = [self.bids[p] for p in sorted(self.bids, reverse=True)]
        asks = [self.asks[p] for p in sorted(self.asks)]
        return bids[:n], asks[:n]

    def _break(self) -> str:
        self.bids, self.asks, self.live, self.last_u, self.last_seq, self.told = (
            {},
            {},
            False,
            None,
            None,
            True,
        )
        return "invalidated"

    def _crossed(self) -> bool:
        return bool(self.bids and self.asks and max(self.bids) >= min(self.asks))

    def reset(self) -> str:
        was_live = self.live
        self._break()
        self.told = False
        return "invalidated" if was_live else "still_invalid"

    def apply(self, m: BookMessage) -> str:
        levels = m.bids + m.asks
        readable = all(_decimal_or_none(p) is not None and _decimal_or_none(s) is not None for p, s in levels)
        legacy_next = m.kind == "delta" and self.live and self.last_u == 0 and m.update_id == 1
        if m.kind == "snapshot" or (m.update_id == 1 and not legacy_next):
            if not readable:
                return self._break()
            bids = {Decimal(p): (p, s) for p, s in m.bids if Decimal(s) != 0}
            asks = {Decimal(p): (p, s) for p, s in m.asks if Decimal(s) != 0}
            if self.depth == 1 and self.live and m.update_id == self.last_u and (bids, asks) == (self.bids, self.asks):
                return "heartbeat"
            self.bids, self.asks = bids, asks
            if self._crossed():
                return self._break()
            self.live, self.told, self.last_u, self.last_seq = True, False, m.update_id, m.seq
            return "snapshot"
        if not self.live:
            if self.told:
                return "still_invalid"
            return self._break()
        assert self.last_u is not None
        if m.update_id <= self.last_u:
            return "stale"
        if m.update_id > self.last_u + 1:
            return self._break()
        if m.seq is not None and self.last_seq is not None and m.seq < self.last_seq:
            return "seq_backwards"
        if not readable:
            return self._break()
        for side, wire in ((self.bids, m.bids), (self.asks, m.asks)):
            for p, s in wire:
                if Decimal(s) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = (p, s)
        if self._crossed():
            return self._break()
        self.last_u = m.update_id
        if m.seq is not None:
            self.last_seq = m.seq
        return "delta"


def run_against_reference(depth: int, steps: list[BookStep]) -> None:
    ours = OrderBook(f"orderbook.{depth}.BTCUSDT", depth)
    ref = ReferenceBook(depth)
    for step in steps:
        if isinstance(step, Reset):
            outcome, expected = ours.reset(), ref.reset()
        else:
            event(step.fault)
            was_valid = ours.is_valid
            raw = msgspec.Raw(msgspec.json.encode(step.as_data()))
            outcome, expected = ours.apply(step.kind, raw), ref.apply(step)
            if not was_valid and step.kind == "delta" and step.update_id != 1:
                assert not outcome.publishable
        event(f"outcome {outcome.kind}")
        assert outcome.kind == expected, (step, outcome)
        assert outcome.publishable == (expected in ("snapshot", "delta"))
        assert ours.is_valid == ref.live
        if ref.live:
            assert ours.top(10_000) == ref.top(10_000)
            assert ours.last_update_id == ref.last_u
            assert ours.checksum(5) == book_checksum(*ref.top(5), 5)
            best_bid, best_ask = ours.best_bid(), ours.best_ask()
            if best_bid and best_ask:
                assert Decimal(best_bid[0]) < Decimal(best_ask[0])
        else:
            assert ours.top(10_000) == ([], [])
            assert outcome.kind not in (BookOutcomeKind.SNAPSHOT, BookOutcomeKind.DELTA)


@settings(max_examples=2000, deadline=None)
@given(book_streams(depth=50))
def test_book_equals_reference_book_or_says_it_is_invalid(steps: list[BookStep]) -> None:
    run_against_reference(50, steps)


@settings(max_examples=250, deadline=None)
@given(book_streams(depth=1))
def test_level1_book_equals_reference_book_or_says_it_is_invalid(steps: list[BookStep]) -> None:
    run_against_reference(1, steps)


@settings(max_examples=150, deadline=None)
@given(book_streams(depth=50), st.data())
def test_fresh_snapshot_after_any_stream_makes_book_valid_and_equal(steps: list[BookStep], draw: st.DataObject) -> None:
    ours = OrderBook("orderbook.50.BTCUSDT", 50)
    for step in steps:
        if isinstance(step, Reset):
            ours.reset()
        else:
            ours.apply(step.kind, msgspec.Raw(msgspec.json.encode(step.as_data())))
    bids = [(f"{p}.5", "1") for p in draw.draw(st.lists(st.integers(1, 49), unique=True))]
    asks = [(f"{p}", "2") for p in draw.draw(st.lists(st.integers(51, 99), unique=True))]
    u = draw.draw(st.integers(2, 10**9))
    assert ours.apply("snapshot", data(u, bids, asks)).publishable
    assert ours.is_valid
    expected_bids = sorted(bids, key=lambda level: Decimal(level[0]), reverse=True)
    expected_asks = sorted(asks, key=lambda level: Decimal(level[0]))
    assert ours.top(100) == (expected_bids, expected_asks)


def test_checksum_after_deltas_behind_and_ahead_of_the_nth_level_matches_a_fresh_computation() -> None:
    # The checksum is kept between deltas that cannot change the best n levels; every one must still equal
    # the checksum computed from scratch.
    book = OrderBook("orderbook.50.BTCUSDT", 50)
    bids = [(str(100 - i), "1") for i in range(6)]
    asks = [(str(101 + i), "1") for i in range(6)]
    book.apply("snapshot", data(10, bids, asks))
    deltas = [
        ([("95", "7")], []),  # behind the 2nd bid
        ([], [("106", "0")]),  # behind the 2nd ask: a delete
        ([("94.5", "3")], [("105.5", "2")]),  # inserts behind both
        ([("99", "2")], []),  # the 2nd bid itself
        ([("99.5", "1")], []),  # an insert between the best two
        ([], [("101", "0")]),  # the best ask deleted: the 3rd moves in
        ([("100", "0"), ("99.5", "0")], [("102", "0"), ("103", "0"), ("104", "0")]),  # leaves fewer than 2 asks
        ([("10", "1")], []),
    ]
    for u, (bid_changes, ask_changes) in enumerate(deltas, start=11):
        before = book.checksum(2)
        assert book.apply("delta", data(u, bid_changes, ask_changes)).publishable
        assert book.checksum(2) == book_checksum(*book.top(2), 2)
        assert book.checksum(3) == book_checksum(*book.top(3), 3)
        assert book.checksum(2) == book_checksum(*book.top(2), 2)
        if u in (11, 12, 13):
            assert book.checksum(2) == before
