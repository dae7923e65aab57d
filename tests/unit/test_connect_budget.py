"""The connection budget's sliding window and the reconnect backoff that lengthens while failures go on."""

from __future__ import annotations

import random

import pytest

from shared.backoff import EscalatingBackoff
from stream_worker.exchange.connect_budget import take_slot, ws_domain


def test_a_free_slot_is_taken_at_now_and_connects_older_than_the_window_are_forgotten() -> None:
    kept, wait = take_slot([1.0, 50.0, 90.0], 100.0, limit=3, window=60.0)
    assert (kept, wait) == ([50.0, 90.0, 100.0], 0.0)


def test_a_full_window_waits_until_its_oldest_connect_leaves() -> None:
    kept, wait = take_slot([90.0, 50.0, 70.0], 100.0, limit=3, window=60.0)
    assert kept == [50.0, 70.0, 90.0]
    assert wait == pytest.approx(10.0)  # 50 + 60 - 100


def test_a_window_over_a_lowered_limit_waits_until_enough_connects_leave() -> None:
    # Four in the window and a limit of two: three must leave, the third-oldest (70) last.
    _kept, wait = take_slot([50.0, 60.0, 70.0, 80.0], 100.0, limit=2, window=60.0)
    assert wait == pytest.approx(30.0)


def test_a_connect_exactly_one_window_old_no_longer_counts() -> None:
    kept, wait = take_slot([40.0], 100.0, limit=1, window=60.0)
    assert (kept, wait) == ([100.0], 0.0)


def test_the_budget_counts_per_host_and_port_not_per_path() -> None:
    assert ws_domain("wss://stream.bybit.com/v5/public/linear") == ws_domain("wss://stream.bybit.com/v5/private")
    assert ws_domain("ws://127.0.0.1:9000/v5/public/spot") == "127.0.0.1:9000"
    assert ws_domain("wss://stream.bybit.com/x") != ws_domain("wss://stream-demo.bybit.com/x")


def test_backoff_cap_grows_while_failures_go_on_and_a_success_restores_it() -> None:
    backoff = EscalatingBackoff(1.0, 4.0, random.Random(1), escalation=4.0, patience=3)
    caps = []
    for _ in range(30):
        backoff.next_delay()
        caps.append(backoff.cap)
    assert caps[0] == 4.0
    assert max(caps) == 16.0  # 4 * escalation, never more
    assert caps == sorted(caps)
    backoff.reset()
    assert backoff.cap == 4.0
    assert all(backoff.next_delay() <= 1.0 for _ in range(1))


def test_backoff_of_a_short_outage_stays_within_the_configured_cap() -> None:
    backoff = EscalatingBackoff(0.5, 30.0, random.Random(2))
    delays = [backoff.next_delay() for _ in range(12)]  # 6 steps to reach the cap, then fewer than `patience`
    assert max(delays) <= 30.0
    assert backoff.cap == 30.0
