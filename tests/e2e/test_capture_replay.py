"""An incident becomes a file anyone can replay: what the worker captured, replayed offline, rebuilds exactly the
books and counts the worker itself had, across a gap and a reconnect."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from shared.enums import Endpoint
from stream_worker.exchange.capture import SUFFIX, CaptureRecord
from stream_worker.replay import main, read
from tests.fake_bybit import FakeBybit
from tests.support.waiting import wait_until

BOOK = "orderbook.50.BTCUSDT"
TICKER = "tickers.BTCUSDT"
TRADES = "publicTrade.BTCUSDT"


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def subscribed_per_session(directory: Path) -> list[dict[str, int]]:
    """The topics each linear session's subscribe ops asked for, with how often."""
    sessions: list[dict[str, int]] = []
    for record in read(sorted(directory.iterdir())):
        if not isinstance(record, CaptureRecord) or record.socket != "linear":
            continue
        if record.dir == "open":
            sessions.append({})
        elif record.dir == "out" and sessions:
            op = json.loads(record.frame)
            if op.get("op") == "subscribe":
                for topic in op["args"]:
                    sessions[-1][topic] = sessions[-1].get(topic, 0) + 1
    return sessions


async def test_a_capture_replays_to_the_workers_own_books_and_counters(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], tmp_path: Path
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    async with start_worker(capture_dir=str(tmp_path)) as worker:
        for fields in (
            {"channel_type": "orderbook", "symbol": "BTCUSDT", "depth": 50},
            {"channel_type": "ticker", "symbol": "BTCUSDT"},
            {"channel_type": "trades", "symbol": "BTCUSDT"},
        ):
            response = await api.post("/api/v1/subscriptions", json={"requesting_service": svc, **fields})
            assert response.status_code == 201, response.text
        market = worker.markets[Endpoint.LINEAR]
        await wait_until(lambda: market.counters["book:delta"] >= 10, what="a book with deltas")
        await fake.inject_book_fault(BOOK, "gap", category="linear")
        await wait_until(lambda: market.counters["book_invalid:gap"] == 1, what="the gap seen")
        await wait_until(lambda: market.counters["book:snapshot"] >= 2, what="the book back after the gap")
        await fake.drop_connections(close_frame=False)
        await wait_until(lambda: market.counters["book:snapshot"] >= 3, what="the book back after a reconnect")
        await wait_until(lambda: market.counters["book:delta"] >= 40, what="more deltas")
    # The worker has stopped: its capture task wrote what it held before it ended.
    book = market.books()[BOOK]
    files = names(tmp_path)
    assert files
    assert all(name.endswith(SUFFIX) for name in files)
    assert any(name.startswith("linear.") for name in files)

    out = io.StringIO()
    assert main([str(tmp_path), "--socket", "linear", "--json"], out=out) == 0
    report = json.loads(out.getvalue())
    replayed = report["books"][BOOK]
    assert (replayed["state"], replayed["u"], replayed["seq"]) == (book.state.value, book.last_update_id, book.last_seq)
    assert replayed["checksum"] == book.checksum()
    live = {k: v for k, v in market.counters.items() if k.startswith(("book", "ticker")) and "retry" not in k}
    assert {k: v for k, v in report["counters"].items() if k in live or k.startswith(("book", "ticker"))} == live
    assert report["counters"]["sessions"] == 2  # the first socket and the one after the drop
    # What we sent is in the capture: each session subscribed all three topics, and the first resubscribed the book
    # after its gap. Counted by topic, not by op: how many topics share one op, and whether a slow snapshot brought
    # one more resubscribe, depends on timing.
    first, second = subscribed_per_session(tmp_path)
    assert first.keys() == second.keys() == {BOOK, TICKER, TRADES}
    assert first[BOOK] >= 2
    assert report["published"]["book_invalid"] == 2  # the gap, and the reconnect of a live book
    print(
        f"\ncapture files={len(files)} frames={report['counters']['frames']} ops_sent={report['counters']['ops_sent']} "
        f"published={report['published']} book u={replayed['u']}"
    )
