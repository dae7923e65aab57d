"""The REST re-sync against the strict fake and real PostgreSQL: what it remembers as open, what it resolves,
and every way it can fall short, reported rather than hidden."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from shared.enums import Endpoint
from stream_worker.bybit.events import Push
from stream_worker.bybit.signing import Credentials
from stream_worker.envelopes.normalize import Normalizer, WalletUpdate
from stream_worker.exchange.rest import BybitRest
from stream_worker.exchange.resync import AccountResync, ResyncResult
from stream_worker.state.balances import save_wallets
from stream_worker.state.open_items import OpenItems
from stream_worker.state.persistence import Store
from tests.fake_bybit import FakeBybit
from tests.support.clock import Clock

DAY_MS = 24 * 3600 * 1000
NORMALIZER = Normalizer(Endpoint.PRIVATE)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def fake(clock: Clock) -> AsyncIterator[FakeBybit]:
    async with FakeBybit(accounts={"key": "secret"}, auto_push=False, clock=clock) as server:
        yield server


@pytest.fixture
def memory(store: Store) -> OpenItems:
    return OpenItems(store)


@pytest.fixture
async def rest(fake: FakeBybit, clock: Clock) -> AsyncIterator[BybitRest]:
    client = BybitRest(fake.url.replace("ws://", "http://"), Credentials("key", "secret"), wall=clock, max_pages=3)
    try:
        yield client
    finally:
        await client.close()


def published(memory: OpenItems, message: dict[str, Any]) -> list[WalletUpdate]:
    """What the worker does with a push it publishes: remember what it leaves open; wallets to store."""
    push = Push(
        topic=message["topic"],
        type=None,
        ts=None,
        cts=None,
        cs=None,
        id=message.get("id"),
        creation_time=message["creationTime"],
        data=msgspec.Raw(msgspec.json.encode(message["data"])),
        received_at=0.0,
    )
    normalized = NORMALIZER.normalize(push, received_ms=0, trace_id="t")
    for item in normalized.events:
        memory.observe(item)
    return normalized.wallets


async def resync(rest: BybitRest, memory: OpenItems, clock: Clock, topics: list[str], since_ms: int | None) -> Any:
    resyncer = AccountResync(rest, memory, option_base_coins=("BTC", "ETH"))
    result: ResyncResult = await resyncer.run(topics, since_ms=since_ms, received_ms=int(clock() * 1000), trace_id="t")
    return result


def reasons(result: ResyncResult) -> list[tuple[str, str, str]]:
    return [(s.channel.value, s.category, s.reason) for s in result.shortfalls]


async def test_the_newest_fact_about_an_order_wins_whatever_order_they_are_stored_in(
    fake: FakeBybit, memory: OpenItems
) -> None:
    opened = await fake.push_account("order", status="New")
    filled = await fake.push_account("order", status="Filled", order_id=opened["data"][0]["orderId"])
    position = await fake.push_account("position", size="1")
    published(memory, filled)
    await memory.flush()
    published(memory, opened)  # a late copy of the older state
    published(memory, position)
    believed = await memory.believed_open()
    assert [(fact.kind, fact.item_key) for fact in believed] == [("position", "BTCUSDT:0")]


async def test_an_order_cancelled_more_than_a_day_ago_is_reported_unresolved(
    fake: FakeBybit, memory: OpenItems, rest: BybitRest, clock: Clock
) -> None:
    opened = await fake.push_account("order", status="New")
    published(memory, opened)
    await fake.push_account("order", status="Cancelled", order_id=opened["data"][0]["orderId"])
    clock.forward(DAY_MS + 60_000)  # order-list.mdx: cancelled orders can be queried for 24 hours
    result = await resync(rest, memory, clock, ["order.linear"], since_ms=None)
    again = await resync(rest, memory, clock, ["order.linear"], since_ms=None)
    assert reasons(result) == [("order", "linear", "unresolved")]
    assert result.resolved == {}
    assert again.shortfalls == []  # reported once, then no longer believed open


async def test_option_executions_are_fetched_for_every_base_coin(
    fake: FakeBybit, memory: OpenItems, rest: BybitRest, clock: Clock
) -> None:
    since = fake.now_ms()
    for symbol in ("BTC-30DEC26-100000-C", "ETH-30DEC26-5000-P", "SOL-30DEC26-300-C"):
        await fake.push_account("execution", category="option", symbol=symbol)
    held = await fake.push_account("order", category="option", symbol="SOL-30DEC26-300-C")
    published(memory, held)  # an open SOL option order adds SOL to the configured BTC and ETH
    clock.forward(1000)
    result = await resync(rest, memory, clock, ["execution.option"], since_ms=since)
    symbols = {event.envelope.symbol for event in result.events}
    assert symbols == {"BTC-30DEC26-100000-C", "ETH-30DEC26-5000-P", "SOL-30DEC26-300-C"}
    assert result.shortfalls == []


async def test_a_gap_older_than_the_seven_day_window_is_reported_and_the_last_week_fetched(
    fake: FakeBybit, memory: OpenItems, rest: BybitRest, clock: Clock
) -> None:
    since = fake.now_ms()
    await fake.push_account("execution")
    clock.forward(8 * DAY_MS)
    recent = await fake.push_account("execution")
    clock.forward(1000)
    result = await resync(rest, memory, clock, ["execution.linear"], since_ms=since)
    assert reasons(result) == [("execution", "linear", "window_exceeded")]
    assert [event.envelope.event_id for event in result.events] == [f"execution:{recent['data'][0]['execId']}"]


async def test_pages_are_followed_with_the_cursor_as_it_came_and_the_cap_is_reported(
    fake: FakeBybit, memory: OpenItems, rest: BybitRest, clock: Clock
) -> None:
    since = fake.now_ms()
    await fake.push_account("execution", fills=250)
    clock.forward(1000)
    fits = await resync(rest, memory, clock, ["execution.linear"], since_ms=since)
    await fake.push_account("execution", fills=100)  # 350 fills: more than 3 pages of 100
    clock.forward(1000)
    capped = await resync(rest, memory, clock, ["execution.linear"], since_ms=since)
    assert len({event.envelope.event_id for event in fits.events}) == 250
    assert fits.shortfalls == []
    assert len(capped.events) == 300
    assert reasons(capped) == [("execution", "linear", "pagination_cap")]


async def test_a_coin_emptied_and_a_position_closed_are_resolved_with_stable_event_ids(
    fake: FakeBybit, memory: OpenItems, store: Store, rest: BybitRest, clock: Clock
) -> None:
    published(memory, await fake.push_account("position", category="inverse", symbol="BTCUSD", size="100"))
    wallet = await fake.push_account("wallet", coins={"USDT": "10", "BTC": "0.5"})
    await save_wallets(store.engine, store.timeout, published(memory, wallet))
    await fake.push_account("position", category="inverse", symbol="BTCUSD", size="0")
    await fake.push_account("wallet", coins={"BTC": "0"})
    clock.forward(1000)
    topics = ["position.inverse", "wallet"]
    first = await resync(rest, memory, clock, topics, since_ms=None)
    clock.forward(1000)
    again = await resync(rest, memory, clock, topics, since_ms=None)

    def resolved(result: ResyncResult) -> dict[str, Any]:
        return {
            event.envelope.event_id: msgspec.json.decode(event.envelope.payload)
            for event in result.events
            if event.envelope.event_type == "position" or event.envelope.symbol == "BTC"
        }

    assert sorted(str((p.get("size"), p.get("walletBalance"))) for p in resolved(first).values()) == [
        str(("0", None)),
        str((None, "0")),
    ]
    assert f"balance:zeroed-{wallet['id']}:UNIFIED:BTC" in resolved(first)
    assert resolved(again).keys() == resolved(first).keys()  # a retry or another worker: the same ids
    assert all(event.envelope.snapshot for event in first.events)
    assert first.resolved == {"positions": 1, "coins": 1}


async def test_an_order_published_open_but_never_recorded_and_cancelled_in_the_gap_is_reported_closed(
    fake: FakeBybit, memory: OpenItems, rest: BybitRest, clock: Clock
) -> None:
    # The chaos run's order_closed_during_gap: the holder of the private stream published an order as open and
    # was killed before its open-items writer stored the fact (it flushes every second); the order was cancelled
    # before the successor subscribed. The successor's memory knows nothing of it, and order/realtime no longer
    # lists it: only the gap's order history can say it closed.
    opened = await fake.push_account("order", status="New")
    order_id = opened["data"][0]["orderId"]
    last_frame_ms = int(clock() * 1000)  # the predecessor's last private frame: the gap begins here
    clock.forward(2_000)
    await fake.push_account("order", status="Cancelled", order_id=order_id)
    clock.forward(5_000)
    result = await resync(rest, memory, clock, ["order.linear"], since_ms=last_frame_ms)
    statuses = [(e.envelope.payload, e.envelope.snapshot) for e in result.events]
    closed = [msgspec.json.decode(payload)["orderStatus"] for payload, snapshot in statuses if snapshot]
    assert closed == ["Cancelled"]
    assert result.shortfalls == []
    periodic = await AccountResync(rest, memory).run(
        ["order.linear"], since_ms=last_frame_ms, received_ms=int(clock() * 1000), trace_id="t", closed_in_gap=False
    )
    assert periodic.events == []  # a periodic re-sync trusts its own memory and skips the window
