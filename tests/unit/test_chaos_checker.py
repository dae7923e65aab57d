"""The chaos run's final account comparison: amounts are compared by value, not by how they are written."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from bench.chaos.consumers import AccountView
from bench.chaos.run import account_mismatches
from tests.fake_bybit import FakeBybit
from tests.fake_bybit.ledger import AccountLedger

KEY = ("linear", "BTCUSDT", 0)


def mismatches(fake_size: str, consumer_size: str) -> list[dict[str, object]]:
    ledger = AccountLedger(positions={KEY: {"symbol": "BTCUSDT", "size": fake_size}})
    view = AccountView(positions={KEY: ((1, 1), {"symbol": "BTCUSDT", "size": consumer_size})})
    return account_mismatches(cast(FakeBybit, SimpleNamespace(ledger=ledger)), view)


def test_a_flat_position_written_as_0_and_as_0_00_is_the_same_size() -> None:
    assert mismatches("0.00", "0") == []


def test_a_position_of_another_size_is_still_a_mismatch() -> None:
    assert mismatches("0.00", "0.5") == [{"subject": "position:BTCUSDT", "fake": "0.00", "consumer": "0.5"}]
