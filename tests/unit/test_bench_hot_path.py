"""The hot-path benchmark runs the production handlers: it must keep running as they change (the bench is not
otherwise exercised by the suite, and once broke unseen for a whole round)."""

from __future__ import annotations

from bench.hot_path import measure


def test_hot_path_benchmark_feeds_the_soak_mix_through_the_production_handlers() -> None:
    result = measure(topics=30, per_socket=300)
    assert result["frames"] > 600
    assert result["events"] > result["frames"] / 2  # books, tickers and trades all came out as events
    assert result["us_per_message"] > 0
