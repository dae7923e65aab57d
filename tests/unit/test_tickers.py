"""Ticker state (stream_worker.bybit.tickers): recorded samples, each §8 rule, and a property test against a
naive dict-update reference."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings

from stream_worker.bybit.tickers import Category, TickerCache, TickerOutcomeKind
from tests.strategies import Reset, TickerStep, ticker_streams
from tests.support.samples import SAMPLES


class Push(msgspec.Struct, frozen=True):
    topic: str
    type: str
    data: dict[str, Any]
    cs: int | None = None
    ts: int | None = None


def sample(name: str) -> Push:
    return msgspec.json.decode((SAMPLES / name).read_bytes(), type=Push)


def live_cache(category: Category = "linear") -> TickerCache:
    cache = TickerCache("tickers.BTCUSD", category)
    cache.apply("snapshot", {"symbol": "BTCUSD", "lastPrice": "100", "fundingRate": "0.0001"}, cs=10, ts=1)
    return cache


# --- recorded samples ---


@pytest.mark.parametrize(
    ("snapshot_name", "delta_name", "changed"),
    [
        ("public_tickers_inverse_snapshot.json", "public_tickers_inverse_delta.json", {"openInterest"}),
        (
            "public_tickers_inverse_futures_snapshot.json",
            "public_tickers_inverse_futures_delta.json",
            {"basisRate"},
        ),
    ],
)
def test_inverse_sample_delta_merges_and_reports_only_values_that_changed(
    snapshot_name: str, delta_name: str, changed: set[str]
) -> None:
    snapshot, delta = sample(snapshot_name), sample(delta_name)
    cache = TickerCache(snapshot.topic, "inverse")
    first = cache.apply(snapshot.type, snapshot.data, snapshot.cs, snapshot.ts)
    assert (first.kind, first.changed) == (TickerOutcomeKind.SNAPSHOT, frozenset(snapshot.data))
    outcome = cache.apply(delta.type, delta.data, delta.cs, delta.ts)
    assert outcome.kind is TickerOutcomeKind.DELTA
    # The captured delta repeats unchanged values (§8.5): present is not changed.
    assert outcome.changed == changed
    assert outcome.ticker == {**snapshot.data, **delta.data}
    assert (outcome.cs, outcome.ts, cache.cs, cache.ts) == (delta.cs, delta.ts, delta.cs, delta.ts)


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("public_tickers_spot.json", "spot"),
        ("public_tickers_option.json", "option"),
        ("public_tickers_option_tardis.json", "option"),
        ("public_tickers_linear.json", "linear"),
        ("public_tickers_linear_futures.json", "linear"),
        ("public_tickers_linear_snapshot_tardis.json", "linear"),
    ],
)
def test_sample_snapshot_becomes_the_whole_ticker(name: str, category: Category) -> None:
    push = sample(name)
    outcome = TickerCache(push.topic, category).apply(push.type, push.data, push.cs, push.ts)
    assert (outcome.kind, outcome.ticker, outcome.publishable) == (
        TickerOutcomeKind.SNAPSHOT,
        push.data,
        True,
    )


# --- §8, rule by rule ---


def test_snapshot_replaces_cache_entirely_without_merging() -> None:
    cache = live_cache()
    outcome = cache.apply("snapshot", {"symbol": "BTCUSD", "lastPrice": "101"}, cs=11)
    assert outcome.ticker == {"symbol": "BTCUSD", "lastPrice": "101"}
    assert outcome.changed == {"lastPrice", "fundingRate"}


def test_delta_overwrites_present_keys_including_empty_string_and_keeps_absent_ones() -> None:
    outcome = live_cache().apply("delta", {"fundingRate": ""}, cs=11, ts=2)
    assert outcome.ticker == {"symbol": "BTCUSD", "lastPrice": "100", "fundingRate": ""}
    assert outcome.changed == {"fundingRate"}


def test_delta_repeating_unchanged_values_reports_nothing_changed() -> None:
    outcome = live_cache().apply("delta", {"lastPrice": "100", "symbol": "BTCUSD"}, cs=11)
    assert (outcome.kind, outcome.changed, outcome.publishable) == (
        TickerOutcomeKind.DELTA,
        frozenset(),
        True,
    )


def test_delta_adding_a_new_key_reports_it_changed() -> None:
    outcome = live_cache().apply("delta", {"markPrice": "99"}, cs=11)
    assert outcome.changed == {"markPrice"}
    assert outcome.ticker is not None
    assert outcome.ticker["markPrice"] == "99"


def test_delta_before_snapshot_is_dropped_and_asks_for_resubscribe_after_timeout() -> None:
    cache = TickerCache("tickers.BTCUSD", "linear", snapshot_timeout=3.0)
    seen = [cache.apply("delta", {"lastPrice": "1"}, cs=1, now=t) for t in (100.0, 101.0, 103.0, 104.0, 106.0)]
    assert {o.kind for o in seen} == {TickerOutcomeKind.DROPPED_BEFORE_SNAPSHOT}
    assert [o.resubscribe for o in seen] == [False, False, True, False, True]
    assert all(o.ticker is None and not o.publishable for o in seen)
    assert (cache.counters.dropped_before_snapshot, cache.counters.resubscribe_requests) == (5, 2)
    assert not cache.is_live


def test_delta_before_snapshot_without_clock_never_asks_for_resubscribe() -> None:
    cache = TickerCache("tickers.BTCUSD", "linear")
    assert not any(cache.apply("delta", {"a": "1"}).resubscribe for _ in range(5))


def test_delta_with_lower_cs_is_dropped_as_out_of_order() -> None:
    cache = live_cache()
    outcome = cache.apply("delta", {"lastPrice": "99"}, cs=9)
    assert (outcome.kind, outcome.ticker) == (TickerOutcomeKind.DROPPED_OUT_OF_ORDER, None)
    assert cache.ticker is not None
    assert cache.ticker["lastPrice"] == "100"
    assert cache.counters.dropped_out_of_order == 1
    # Equal cs is not out of order (ticker pushes can share a cross sequence).
    assert cache.apply("delta", {"lastPrice": "98"}, cs=10).kind is TickerOutcomeKind.DELTA


def test_snapshot_with_lower_cs_still_replaces_the_cache() -> None:
    cache = live_cache()
    assert cache.apply("snapshot", {"lastPrice": "1"}, cs=3).kind is TickerOutcomeKind.SNAPSHOT
    assert cache.cs == 3


@pytest.mark.parametrize("category", ["spot", "option"])
def test_spot_and_option_messages_always_replace_whatever_the_type_says(category: Category) -> None:
    cache = live_cache(category)
    outcome = cache.apply("delta", {"symbol": "BTCUSD", "lastPrice": "101"}, cs=11)
    assert (outcome.kind, outcome.ticker) == (
        TickerOutcomeKind.SNAPSHOT,
        {"symbol": "BTCUSD", "lastPrice": "101"},
    )


def test_reset_drops_the_cache_so_deltas_wait_for_a_snapshot() -> None:
    cache = live_cache()
    cache.reset()
    assert (cache.ticker, cache.cs, cache.is_live) == (None, None, False)
    assert cache.apply("delta", {"lastPrice": "1"}, cs=1).kind is TickerOutcomeKind.DROPPED_BEFORE_SNAPSHOT


def test_published_ticker_is_not_mutated_by_later_deltas() -> None:
    cache = live_cache()
    first = cache.apply("delta", {"lastPrice": "101"}, cs=11)
    cache.apply("delta", {"lastPrice": "102"}, cs=12)
    assert first.ticker is not None
    assert first.ticker["lastPrice"] == "101"


def test_snapshot_does_not_alias_the_callers_dict() -> None:
    data = {"lastPrice": "1"}
    cache = TickerCache("tickers.BTCUSDT", "linear")
    cache.apply("snapshot", data)
    data["lastPrice"] = "2"
    assert cache.ticker == {"lastPrice": "1"}


def test_raw_data_is_decoded_with_numbers_never_as_floats() -> None:
    cache = TickerCache("tickers.BTCUSDT", "linear")
    outcome = cache.apply("snapshot", msgspec.Raw(b'{"lastPrice":"1.10","odd":1.1,"n":3}'), cs=1)
    assert outcome.ticker == {"lastPrice": "1.10", "odd": Decimal("1.1"), "n": 3}


def test_undecodable_linear_ticker_drops_cache_and_asks_for_resubscribe() -> None:
    cache = live_cache()
    outcome = cache.apply("delta", msgspec.Raw(b"[1,2]"), cs=11)
    assert (outcome.kind, outcome.resubscribe, outcome.publishable) == (
        TickerOutcomeKind.DROPPED_MALFORMED,
        True,
        False,
    )
    assert not cache.is_live


def test_undecodable_spot_ticker_is_skipped_and_cache_kept() -> None:
    cache = live_cache("spot")
    outcome = cache.apply("snapshot", msgspec.Raw(b'"x"'))
    assert (outcome.kind, outcome.resubscribe, cache.is_live) == (
        TickerOutcomeKind.DROPPED_MALFORMED,
        False,
        True,
    )


def test_unknown_message_type_drops_a_merged_ticker_and_asks_for_resubscribe() -> None:
    cache = live_cache()
    outcome = cache.apply("partial", {})
    assert (outcome.kind, outcome.resubscribe, cache.is_live) == (TickerOutcomeKind.DROPPED_MALFORMED, True, False)


def test_unknown_message_type_on_spot_is_dropped_and_the_cache_kept() -> None:
    cache = live_cache("spot")
    outcome = cache.apply("", {"lastPrice": "1"})
    assert (outcome.kind, outcome.resubscribe, cache.is_live) == (TickerOutcomeKind.DROPPED_MALFORMED, False, True)


# --- property: merging equals a naive dict update ---

_MISSING = object()


@pytest.mark.parametrize("category", ["linear", "spot"])
@settings(max_examples=200, deadline=None)
@given(steps=ticker_streams())
def test_merged_ticker_equals_naive_dict_update(category: Category, steps: list[TickerStep]) -> None:
    cache = TickerCache("tickers.BTCUSD", category)
    ref: dict[str, str] | None = None
    ref_cs: int | None = None
    for step in steps:
        if isinstance(step, Reset):
            cache.reset()
            ref, ref_cs = None, None
            continue
        outcome = cache.apply(step.kind, step.data, step.cs)
        before = ref
        if step.kind == "snapshot" or category == "spot":
            ref = dict(step.data)
        elif ref is None or (step.cs is not None and ref_cs is not None and step.cs < ref_cs):
            assert outcome.ticker is None
            assert not outcome.publishable
            continue
        else:
            ref = {**ref, **step.data}
        if step.cs is not None:
            ref_cs = step.cs
        assert outcome.ticker == ref
        assert cache.ticker == ref
        old = before or {}
        assert outcome.changed == {
            key for key in old.keys() | ref.keys() if old.get(key, _MISSING) != ref.get(key, _MISSING)
        }


def test_spot_snapshot_with_a_value_that_cannot_be_hashed_still_names_what_changed() -> None:
    # Bybit sends scalars; a list in their place must still be compared, not crash the set arithmetic.
    cache = TickerCache("tickers.BTCUSDT", "spot")
    cache.apply("snapshot", {"symbol": "BTCUSDT", "lastPrice": "1", "odd": [1]})
    outcome = cache.apply("snapshot", {"symbol": "BTCUSDT", "lastPrice": "2", "odd": [1]})
    assert outcome.changed == {"lastPrice"}
    outcome = cache.apply("snapshot", {"symbol": "BTCUSDT", "lastPrice": "2", "odd": [2]})
    assert outcome.changed == {"odd"}
