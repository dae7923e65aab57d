"""Which REST queries a re-sync sends: documented limits, settle coins, base coins and 7-day windows."""

from __future__ import annotations

from shared.enums import Category, ChannelType
from stream_worker.exchange.resync_queries import (
    EXECUTION_MARGIN_MS,
    WEEK_MS,
    execution_queries,
    execution_windows,
    list_queries,
    order_history_queries,
)

NOW = 1_800_000_000_000


def test_linear_lists_ask_per_settle_coin_at_the_documented_maximum_page() -> None:
    assert list_queries(ChannelType.ORDER, Category.LINEAR) == [
        {"category": "linear", "limit": "50", "settleCoin": "USDT"},
        {"category": "linear", "limit": "50", "settleCoin": "USDC"},
    ]
    assert list_queries(ChannelType.POSITION, Category.INVERSE) == [{"category": "inverse", "limit": "200"}]


def test_first_start_uses_bybits_default_week() -> None:
    assert execution_windows(None, NOW) == ([], False)


def test_a_short_gap_is_one_window_from_a_minute_before_it_began() -> None:
    windows, exceeded = execution_windows(NOW - 3_600_000, NOW)
    assert windows == [(NOW - 3_600_000 - EXECUTION_MARGIN_MS, NOW + EXECUTION_MARGIN_MS)]
    assert not exceeded


def test_a_gap_past_the_lookback_is_flagged_and_clipped_to_it() -> None:
    windows, exceeded = execution_windows(NOW - 9 * 24 * 3_600_000, NOW)
    assert exceeded
    assert windows == [(NOW + EXECUTION_MARGIN_MS - WEEK_MS, NOW + EXECUTION_MARGIN_MS)]


def test_a_longer_lookback_walks_adjacent_windows_of_at_most_seven_days() -> None:
    windows, exceeded = execution_windows(NOW - 10 * 24 * 3_600_000, NOW, max_lookback_ms=30 * 24 * 3_600_000)
    assert not exceeded
    assert len(windows) == 2
    assert all(end - start <= WEEK_MS for start, end in windows)
    assert windows[1][0] == windows[0][1] + 1


def test_option_executions_are_asked_once_per_base_coin_and_window() -> None:
    queries = execution_queries(Category.OPTION, [(1, 2)], ["ETH", "BTC", "ETH"])
    assert [(q["baseCoin"], q["startTime"], q["endTime"]) for q in queries] == [("BTC", "1", "2"), ("ETH", "1", "2")]
    assert execution_queries(Category.SPOT, [], ["BTC"]) == [{"category": "spot", "limit": "100"}]


def test_orders_closed_in_a_gap_are_asked_per_settle_coin_and_window() -> None:
    start, end = NOW - 60_000, NOW + 60_000
    assert order_history_queries(Category.LINEAR, [(start, end)]) == [
        {"category": "linear", "limit": "50", "settleCoin": coin, "startTime": str(start), "endTime": str(end)}
        for coin in ("USDT", "USDC")
    ]
    assert order_history_queries(Category.SPOT, []) == []
