"""Books and tickers on the publish path: only valid books go out, broken ones say so once and resubscribe."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from shared.enums import Endpoint
from shared.payloads import BookUpdate, Ticker, convert_payload
from stream_worker.bybit.books import book_checksum
from stream_worker.envelopes.market import BookOutput, MarketResult, MarketState
from tests.support.samples import compact, push_of, sample

NOW, RECEIVED_MS, TRACE = 100.0, 1_700_000_000_000, "t-1"


def feed(market: MarketState, endpoint: Endpoint, message: dict[str, Any], now: float = NOW) -> MarketResult:
    return market.on_push(push_of(compact(message), endpoint), now=now, received_ms=RECEIVED_MS, trace_id=TRACE)


def payload(result: MarketResult, index: int = 0) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(result.events[index].envelope.payload))
    return decoded


def book(
    u: int, kind: str = "delta", bids: Any = (), asks: Any = (), topic: str = "orderbook.50.BTCUSDT"
) -> dict[str, Any]:
    return {
        "topic": topic,
        "type": kind,
        "ts": 1000 + u,
        "cts": 990 + u,
        "data": {"s": "BTCUSDT", "b": [list(b) for b in bids], "a": [list(a) for a in asks], "u": u, "seq": 10 * u},
    }


SNAPSHOT = book(100, "snapshot", bids=[("99.5", "1"), ("99", "2")], asks=[("100", "3"), ("100.5", "4")])


def test_sample_snapshot_and_its_next_delta_are_published_with_a_checksum_of_our_book() -> None:
    market = MarketState(Endpoint.LINEAR)
    snapshot = feed(market, Endpoint.LINEAR, sample("public_orderbook_snapshot_linear.json"))
    delta = feed(market, Endpoint.LINEAR, sample("public_orderbook_delta_linear.json"))
    assert [payload(snapshot)["type"], payload(delta)["type"]] == ["snapshot", "delta"]
    (ours,) = market.books().values()
    bids, asks = ours.top(25)
    assert payload(delta)["checksum"] == book_checksum(bids, asks, 25)
    assert payload(delta)["u"] == sample("public_orderbook_delta_linear.json")["data"]["u"]
    assert delta.events[0].routing_key.endswith(".50")


def test_gap_publishes_book_invalid_once_asks_to_resubscribe_and_publishes_nothing_until_a_snapshot() -> None:
    market = MarketState(Endpoint.LINEAR)
    feed(market, Endpoint.LINEAR, SNAPSHOT)
    gap = feed(market, Endpoint.LINEAR, book(102, bids=[("99.6", "1")]))
    assert [e.envelope.event_type for e in gap.events] == ["book_invalid"]
    assert payload(gap)["cause"] == "gap"
    assert gap.resubscribe == ["orderbook.50.BTCUSDT"]
    later = feed(market, Endpoint.LINEAR, book(103, bids=[("99.7", "1")]))
    assert later.events == []
    assert later.resubscribe == []
    fresh = feed(market, Endpoint.LINEAR, book(500, "snapshot", bids=[("98", "1")], asks=[("101", "1")]))
    assert payload(fresh)["type"] == "snapshot"
    assert market.counters["book_invalid:gap"] == 1


def test_crossed_book_is_never_published() -> None:
    market = MarketState(Endpoint.SPOT)
    feed(market, Endpoint.SPOT, SNAPSHOT)
    crossed = feed(market, Endpoint.SPOT, book(101, bids=[("100.2", "1")]))
    assert [e.envelope.event_type for e in crossed.events] == ["book_invalid"]
    assert payload(crossed)["cause"] == "crossed"


def test_restart_with_u1_is_published_as_a_snapshot() -> None:
    market = MarketState(Endpoint.LINEAR)
    feed(market, Endpoint.LINEAR, SNAPSHOT)
    restart = feed(market, Endpoint.LINEAR, book(1, "delta", bids=[("50", "1")], asks=[("51", "1")]))
    assert payload(restart)["type"] == "snapshot"
    assert payload(restart)["b"] == [["50", "1"]]


def test_updates_after_a_restart_have_event_ids_of_their_own() -> None:
    """`u` starts again at 1 after a restart; a consumer de-duplicating by event id must not drop what follows."""

    def at(u: int, seq: int, kind: str = "delta", bids: Any = ()) -> dict[str, Any]:
        message = book(u, kind, bids=bids, asks=[("100", "3")])
        message["data"]["seq"] = seq
        return message

    market = MarketState(Endpoint.LINEAR)
    stream = [at(1, 500, "snapshot", [("99", "1")]), at(2, 501, bids=[("99", "2")])]
    stream += [at(1, 900, "snapshot", [("98", "1")]), at(2, 901, bids=[("98", "2")])]  # Bybit restarted the book
    ids = [feed(market, Endpoint.LINEAR, message).events[0].envelope.event_id for message in stream]
    assert len(set(ids)) == 4, ids


def test_reconnect_invalidates_live_books_and_drops_ticker_caches() -> None:
    market = MarketState(Endpoint.LINEAR)
    feed(market, Endpoint.LINEAR, SNAPSHOT)
    reset = market.reset(now=NOW, received_ms=RECEIVED_MS, trace_id=TRACE)
    assert [payload(reset)["cause"]] == ["reconnect"]
    after = feed(market, Endpoint.LINEAR, book(101, bids=[("99.6", "1")]))
    assert [e.envelope.event_type for e in after.events] == ["book_invalid"]  # never book data before a snapshot
    assert payload(after)["cause"] == "delta_before_snapshot"


def test_missing_snapshot_after_a_resubscribe_is_asked_for_again_after_the_timeout() -> None:
    market = MarketState(Endpoint.LINEAR, snapshot_timeout=5.0)
    feed(market, Endpoint.LINEAR, SNAPSHOT, now=NOW)
    feed(market, Endpoint.LINEAR, book(105), now=NOW)
    assert market.overdue(NOW + 4.9) == []
    assert market.overdue(NOW + 5.0) == ["orderbook.50.BTCUSDT"]
    assert market.overdue(NOW + 6.0) == []  # asked again just now: wait another timeout


def test_ticker_deltas_are_merged_and_say_which_fields_changed() -> None:
    market = MarketState(Endpoint.INVERSE)
    snapshot = feed(market, Endpoint.INVERSE, sample("public_tickers_inverse_snapshot.json"))
    delta_message = sample("public_tickers_inverse_delta.json")
    delta = feed(market, Endpoint.INVERSE, delta_message)
    merged = payload(delta)
    full = payload(snapshot)
    assert set(full) - {"type", "ts", "cs", "changed"} <= set(merged)
    for key, value in delta_message["data"].items():
        assert merged[key] == value
    assert set(merged["changed"]) <= set(delta_message["data"])
    assert merged["type"] == "delta"


def test_top_n_snapshots_are_published_only_for_changed_valid_books() -> None:
    market = MarketState(Endpoint.LINEAR, book_output=BookOutput.TOP, top_levels=1)
    assert feed(market, Endpoint.LINEAR, SNAPSHOT).events == []  # TOP: the stream itself is not published
    (top,) = market.top_snapshots(received_ms=RECEIVED_MS, trace_id=TRACE)
    body = msgspec.json.decode(msgspec.json.encode(top.envelope.payload))
    assert (body["b"], body["a"]) == ([["99.5", "1"]], [["100", "3"]])
    assert top.envelope.event_type == "orderbook_top"
    assert market.top_snapshots(received_ms=RECEIVED_MS, trace_id=TRACE) == []  # unchanged since


@pytest.mark.parametrize(
    ("name", "endpoint"),
    [
        ("public_tickers_linear.json", Endpoint.LINEAR),
        ("public_tickers_spot.json", Endpoint.SPOT),
        ("public_tickers_option.json", Endpoint.OPTION),
        ("public_tickers_inverse_snapshot.json", Endpoint.INVERSE),
    ],
)
def test_ticker_payload_reads_as_the_shared_ticker_struct(name: str, endpoint: Endpoint) -> None:
    message = sample(name)
    result = feed(MarketState(endpoint), endpoint, message)
    ticker = convert_payload(Ticker, payload(result))
    assert ticker.symbol == message["data"]["symbol"]
    assert ticker.last_price == Decimal(message["data"]["lastPrice"])
    assert set(ticker.changed) == set(message["data"])  # a first snapshot changes every field


def test_book_payload_reads_as_the_shared_book_struct() -> None:
    result = feed(MarketState(Endpoint.LINEAR), Endpoint.LINEAR, SNAPSHOT)
    update = convert_payload(BookUpdate, payload(result))
    assert (update.type, update.update_id, update.symbol) == ("snapshot", 100, "BTCUSDT")
    assert update.bids == [("99.5", "1"), ("99", "2")]
    assert update.checksum == book_checksum(update.bids, update.asks, update.checksum_levels)


SNAPSHOT_SAMPLES = {
    "public_orderbook_snapshot_linear.json": Endpoint.LINEAR,
    "public_orderbook_snapshot_linear_docs.json": Endpoint.LINEAR,
    "public_orderbook_snapshot_spot.json": Endpoint.SPOT,
    "public_orderbook_snapshot_option.json": Endpoint.OPTION,
    "public_orderbook_snapshot_option_2024.json": Endpoint.OPTION,
    "public_orderbook_snapshot_option_empty.json": Endpoint.OPTION,
    "public_orderbook1_snapshot_linear_2023.json": Endpoint.LINEAR,
    "public_orderbook1_snapshot_spot_2023.json": Endpoint.SPOT,
}


@pytest.mark.parametrize(("name", "endpoint"), SNAPSHOT_SAMPLES.items())
def test_every_real_book_snapshot_is_published_once_with_level_strings_exact(name: str, endpoint: Endpoint) -> None:
    message = sample(name)
    result = feed(MarketState(endpoint), endpoint, message)
    (event,) = result.events
    body = payload(result)
    assert body["type"] == "snapshot"
    assert body["b"] == message["data"]["b"]
    assert body["a"] == message["data"]["a"]
    topic, data = message["topic"], message["data"]
    assert event.envelope.event_id == f"orderbook:{endpoint.value}:{topic}:{data['u']}:{data.get('seq', '')}:snapshot"


def test_option_ticker_without_cs_has_an_empty_id_part() -> None:
    message = sample("public_tickers_option.json")
    (event,) = feed(MarketState(Endpoint.OPTION), Endpoint.OPTION, message).events
    assert event.envelope.event_id == f"ticker:option:{message['topic']}::{message['ts']}"


def test_a_queue_snapshot_is_the_whole_valid_book_at_the_last_published_u_for_that_queue_only() -> None:
    market = MarketState(Endpoint.LINEAR)
    feed(market, Endpoint.LINEAR, SNAPSHOT)
    feed(market, Endpoint.LINEAR, book(101, bids=[("99.7", "1")], asks=[("100", "0")]))
    item = market.snapshot_of(
        "orderbook.50.BTCUSDT", queue="ws-gateway.b.orderbook", received_ms=1, trace_id="x", nonce=7
    )
    assert item is not None
    assert (item.direct, item.routing_key, item.envelope.snapshot) == (True, "ws-gateway.b.orderbook", True)
    body = convert_payload(BookUpdate, item.envelope.payload)
    assert (body.type, body.update_id, body.seq) == ("snapshot", 101, 1010)
    assert body.bids == [("99.7", "1"), ("99.5", "1"), ("99", "2")]
    assert body.asks == [("100.5", "4")]
    assert body.checksum == book_checksum(body.bids, body.asks, 25)
    again = market.snapshot_of("orderbook.50.BTCUSDT", queue="q", received_ms=1, trace_id="x", nonce=8)
    assert again is not None
    assert again.envelope.event_id != item.envelope.event_id  # a second request is not a duplicate to drop


def test_no_queue_snapshot_of_an_invalid_book_or_an_unknown_topic() -> None:
    market = MarketState(Endpoint.LINEAR)
    feed(market, Endpoint.LINEAR, SNAPSHOT)
    feed(market, Endpoint.LINEAR, book(105))  # a gap: invalid until Bybit's next snapshot, which every queue gets
    assert market.snapshot_of("orderbook.50.BTCUSDT", queue="q", received_ms=1, trace_id="x", nonce=1) is None
    assert market.snapshot_of("tickers.ETHUSDT", queue="q", received_ms=1, trace_id="x", nonce=1) is None


@pytest.mark.parametrize("kind", [None, "", "partial"])
def test_book_push_without_a_known_type_invalidates_the_book_instead_of_crashing_the_worker(kind: str | None) -> None:
    # Found by the chaos run (bench/chaos): one typeless book frame raised ValueError out of the socket's read
    # loop and took every worker down at once, since every worker serving the topic received it.
    market = MarketState(Endpoint.LINEAR)
    feed(market, Endpoint.LINEAR, SNAPSHOT)
    typeless = book(101, bids=[("99.6", "1")])
    if kind is None:
        del typeless["type"]
    else:
        typeless["type"] = kind
    result = feed(market, Endpoint.LINEAR, typeless)
    assert [e.envelope.event_type for e in result.events] == ["book_invalid"]
    assert payload(result)["cause"] == "malformed"
    assert result.resubscribe == ["orderbook.50.BTCUSDT"]
    assert feed(market, Endpoint.LINEAR, book(102, bids=[("99.7", "1")])).events == []  # nothing until a snapshot
    fresh = feed(market, Endpoint.LINEAR, book(500, "snapshot", bids=[("98", "1")], asks=[("101", "1")]))
    assert payload(fresh)["type"] == "snapshot"
