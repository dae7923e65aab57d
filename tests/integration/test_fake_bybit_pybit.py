"""Bybit's official SDK (pybit) against the fake: if pybit can authenticate, subscribe and read pushes,
the fake speaks the protocol the way real clients expect. pybit is synchronous (websocket-client threads),
so the fake runs on its own loop in a background thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from pybit import unified_trading

from tests.fake_bybit import BookStream, FakeBybitThread

KEY, SECRET = "pybit-key", "pybit-secret"
BOOK, TRADES = "orderbook.50.BTCUSDT", "publicTrade.BTCUSDT"


def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBybitThread]:
    threads_before = set(threading.enumerate())
    # pybit sends a subscribe and only then records its req_id, on another thread than the one reading acks; an
    # ack faster than that (a loaded box, loopback) raises KeyError inside pybit and it reconnects forever. Real
    # acks take a network round trip: 50 ms is Bybit-like, not kinder than Bybit.
    with FakeBybitThread(accounts={KEY: SECRET}, auto_push=False, ack_delay=0.05) as fake_thread:
        # pybit builds its URLs from these module constants (pybit/unified_trading.py).
        monkeypatch.setattr(unified_trading, "PUBLIC_WSS", f"{fake_thread.url}/v5/public/{{CHANNEL_TYPE}}")
        monkeypatch.setattr(unified_trading, "PRIVATE_WSS", f"{fake_thread.url}/v5/private")
        yield fake_thread
    # pybit's and the fake's threads ended. pybit's custom-ping Timer can be re-armed by a ping racing exit();
    # it is a daemon that wakes once after ping_interval (20 s) and finds the socket closed, so it is not waited for.
    # Closing pybit's websocket-client threads can take several seconds on a loaded machine.
    wait_until(
        lambda: {t for t in threading.enumerate() if not isinstance(t, threading.Timer)} <= threads_before,
        timeout=30,
    )


def test_pybit_authenticates_subscribes_and_receives_public_and_private_pushes(
    running: FakeBybitThread,
) -> None:
    fake = running.fake
    received: dict[str, list[dict[str, Any]]] = {"book": [], "trades": [], "order": [], "wallet": []}

    def collect(kind: str) -> Callable[[dict[str, Any]], None]:
        return received[kind].append

    public = unified_trading.WebSocket(channel_type="linear", testnet=False, retries=3)
    private = unified_trading.WebSocket(
        channel_type="private", testnet=False, api_key=KEY, api_secret=SECRET, retries=3
    )
    try:
        public.orderbook_stream(depth=50, symbol="BTCUSDT", callback=collect("book"))
        public.trade_stream(symbol="BTCUSDT", callback=collect("trades"))
        private.order_stream(callback=collect("order"))
        private.wallet_stream(callback=collect("wallet"))

        running.wait_for(
            lambda: any(r.category == "private" and r.authenticated and {"order", "wallet"} <= r.topics
                        for r in fake.connections)
            and any(r.category == "linear" and {BOOK, TRADES} <= r.topics for r in fake.connections)
        )  # fmt: skip
        wait_until(lambda: len(received["book"]) == 1)  # the snapshot

        running.call(fake.advance(BOOK, count=20))
        running.call(fake.advance(TRADES, count=3))
        order = running.call(fake.push_account("order", category="linear", symbol="BTCUSDT", status="New"))
        running.call(fake.push_account("wallet", coins={"USDT": "42"}))
        wait_until(
            lambda: (
                len(received["book"]) == 21
                and len(received["trades"]) == 3
                and received["order"]
                and received["wallet"]
            )
        )
    finally:
        public.exit()
        private.exit()

    assert [attempt.success for attempt in fake.auth_attempts] == [True]
    # pybit merged our deltas into its own book; it must equal the fake's.
    merged = received["book"][-1]["data"]
    book = fake.stream(BOOK)
    assert isinstance(book, BookStream)
    bids, asks = book.levels()
    assert sorted(merged["b"], key=lambda level: -Decimal(level[0])) == bids
    assert sorted(merged["a"], key=lambda level: Decimal(level[0])) == asks
    assert received["order"][0]["data"][0]["orderId"] == order["data"][0]["orderId"]
    assert received["wallet"][0]["data"][0]["coin"][0]["walletBalance"] == "42"
    assert {trade["s"] for message in received["trades"] for trade in message["data"]} == {"BTCUSDT"}
