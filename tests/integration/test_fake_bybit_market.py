"""The fake Bybit's public market data over a real socket: order books (§7), tickers (§8), trades,
klines and liquidations (§6), and the order-book fault injections."""

from __future__ import annotations

import itertools
import uuid
from decimal import Decimal
from typing import Any

import pytest

from tests.fake_bybit import BookStream, FakeBybit, FakeClient, LocalBook, Samples, TickerStream
from tests.fake_bybit.topics import Category

SAMPLES = Samples()
JsonObject = dict[str, Any]


def public(fake: FakeBybit, category: str) -> str:
    return f"{fake.url}/v5/public/{category}"


def prices(levels: list[list[str]]) -> list[Decimal]:
    return [Decimal(price) for price, _ in levels]


def book_of(fake: FakeBybit, topic: str, category: Category | None = None) -> BookStream:
    stream = fake.stream(topic, category=category)
    assert isinstance(stream, BookStream)
    return stream


@pytest.mark.parametrize(
    ("category", "topic", "depth"),
    [
        ("linear", "orderbook.50.BTCUSDT", 50),
        ("linear", "orderbook.1000.BTCUSDT", 1000),
        ("spot", "orderbook.200.BTCUSDT", 200),
        ("inverse", "orderbook.50.BTCUSD", 50),
        ("option", "orderbook.25.BTC-13SEP24-58500-P", 25),
        ("option", "orderbook.100.BTC-13SEP24-58500-P", 100),
    ],
)
async def test_book_starts_with_a_sorted_uncrossed_snapshot_of_the_subscribed_depth(
    category: str, topic: str, depth: int
) -> None:
    async with FakeBybit(auto_push=False) as fake, FakeClient.connect(public(fake, category)) as client:
        await client.request("subscribe", [topic])
        snapshot = await client.push(topic)
    data = snapshot["data"]
    assert snapshot["type"] == "snapshot"
    assert len(data["b"]) == len(data["a"]) == depth
    assert prices(data["b"]) == sorted(prices(data["b"]), reverse=True)
    assert prices(data["a"]) == sorted(prices(data["a"]))
    assert prices(data["b"])[0] < prices(data["a"])[0]
    assert data["s"] == topic.split(".", 2)[2]
    assert isinstance(data["u"], int)
    assert isinstance(data["seq"], int)
    assert snapshot["cts"] <= snapshot["ts"]


async def test_book_snapshot_has_the_recorded_keys_per_category() -> None:
    async with (
        FakeBybit(auto_push=False) as fake,
        FakeClient.connect(public(fake, "linear")) as linear,
        FakeClient.connect(public(fake, "option")) as option,
    ):
        await linear.request("subscribe", ["orderbook.50.BTCUSDT"])
        await option.request("subscribe", ["orderbook.25.BTC-13SEP24-58500-P"])
        linear_snapshot = await linear.push("orderbook.50.BTCUSDT")
        option_snapshot = await option.push("orderbook.25.BTC-13SEP24-58500-P")
    linear_sample = SAMPLES.get("public_orderbook_delta_linear_docs")
    option_sample = SAMPLES.get("public_orderbook_snapshot_option_2024")
    assert set(linear_snapshot) == set(linear_sample)
    assert set(linear_snapshot["data"]) == set(linear_sample["data"])
    assert set(option_snapshot) == set(option_sample)
    assert option_snapshot["id"].startswith("orderbook.25.BTC-13SEP24-58500-P-")


async def test_book_deltas_follow_the_snapshot_with_u_plus_one_and_keep_it_uncrossed() -> None:
    topic = "orderbook.50.BTCUSDT"
    async with FakeBybit(push_interval=0.01) as fake, FakeClient.connect(public(fake, "linear")) as client:
        await client.request("subscribe", [topic])
        messages = [await client.push(topic) for _ in range(40)]
    book = LocalBook()
    assert messages[0]["type"] == "snapshot"
    for previous, message in itertools.pairwise(messages):
        assert message["type"] == "delta"
        assert message["data"]["u"] == previous["data"]["u"] + 1
        assert message["data"]["seq"] > previous["data"]["seq"]
        assert message["ts"] > previous["ts"]
        assert message["cts"] > previous["cts"]
    for message in messages:
        book.apply(message)  # raises if a delta deletes a level the book does not hold
        assert not book.crossed()
        bids, asks = book.levels()
        assert len(bids) <= 50
        assert len(asks) <= 50
    deltas = [message["data"] for message in messages[1:]]
    sizes = [size for delta in deltas for _, size in delta["b"] + delta["a"]]
    assert "0" in sizes  # deletes happen
    assert all(prices(d["b"]) == sorted(prices(d["b"]), reverse=True) for d in deltas)
    assert all(prices(d["a"]) == sorted(prices(d["a"])) for d in deltas)


async def test_applying_every_push_reproduces_the_fakes_own_book() -> None:
    topic = "orderbook.200.BTCUSDT"
    async with FakeBybit(auto_push=False) as fake, FakeClient.connect(public(fake, "spot")) as client:
        await client.request("subscribe", [topic])
        book = LocalBook()
        book.apply(await client.push(topic))
        sent = await fake.advance(topic, count=100)
        for _ in sent:
            book.apply(await client.push(topic))
        assert book.levels() == book_of(fake, topic).levels()


async def test_two_connections_on_one_topic_share_the_update_ids() -> None:
    topic = "orderbook.50.ETHUSDT"
    async with (
        FakeBybit(auto_push=False) as fake,
        FakeClient.connect(public(fake, "linear")) as first,
        FakeClient.connect(public(fake, "linear")) as second,
    ):
        await first.request("subscribe", [topic])
        await second.request("subscribe", [topic])
        snapshots = [await first.push(topic), await second.push(topic)]
        await fake.advance(topic, count=2)
        deltas = [[(await client.push(topic))["data"]["u"] for _ in range(2)] for client in (first, second)]
    assert snapshots[0]["data"]["u"] == snapshots[1]["data"]["u"]
    assert deltas[0] == deltas[1] == [snapshots[0]["data"]["u"] + 1, snapshots[0]["data"]["u"] + 2]


async def test_same_topic_on_two_categories_are_separate_books() -> None:
    topic = "orderbook.50.BTCUSDT"
    async with (
        FakeBybit(auto_push=False) as fake,
        FakeClient.connect(public(fake, "linear")) as linear,
        FakeClient.connect(public(fake, "spot")) as spot,
    ):
        await linear.request("subscribe", [topic])
        await spot.request("subscribe", [topic])
        with pytest.raises(LookupError, match="category"):
            await fake.advance(topic)
        await fake.advance(topic, category="spot")
        await spot.push(topic)
        spot_delta = await spot.push(topic)
        linear_snapshot = await linear.push(topic)
        assert await linear.drain(quiet=0.1) == []
    assert spot_delta["type"] == "delta"
    assert linear_snapshot["type"] == "snapshot"


async def test_level1_book_sends_snapshots_only() -> None:
    topic = "orderbook.1.BTCUSDT"
    async with FakeBybit(push_interval=0.01) as fake, FakeClient.connect(public(fake, "spot")) as client:
        await client.request("subscribe", [topic])
        messages = [await client.push(topic) for _ in range(10)]
    assert {message["type"] for message in messages} == {"snapshot"}
    assert all(len(m["data"]["b"]) == len(m["data"]["a"]) == 1 for m in messages)
    assert all(Decimal(m["data"]["b"][0][0]) < Decimal(m["data"]["a"][0][0]) for m in messages)
    assert [m["data"]["u"] for m in messages] == list(range(messages[0]["data"]["u"], messages[0]["data"]["u"] + 10))


async def test_unchanged_level1_book_is_repeated_with_the_same_u() -> None:
    topic = "orderbook.1.BTCUSDT"
    quiet = FakeBybit(auto_push=False, level1_repeat_interval=0.1, push_interval=0.01)
    async with quiet as fake, FakeClient.connect(public(fake, "linear")) as client:
        await client.request("subscribe", [topic])
        first = await client.push(topic)
        repeat = await client.push(topic)
        changed = (await fake.advance(topic))[0]
        # More repeats of the first book may already be on the wire; skip to the changed one.
        await client.recv_until(lambda message: message["data"]["u"] == changed["data"]["u"])
        repeat_of_changed = await client.push(topic)
    assert repeat["data"] == first["data"]
    assert repeat["ts"] > first["ts"]
    assert changed["data"]["u"] == first["data"]["u"] + 1
    assert repeat_of_changed["data"] == changed["data"]


async def test_level1_repeat_can_be_turned_off() -> None:
    topic = "orderbook.1.BTCUSDT"
    async with (
        FakeBybit(auto_push=False, level1_repeat_interval=None, push_interval=0.01) as fake,
        FakeClient.connect(public(fake, "linear")) as client,
    ):
        await client.request("subscribe", [topic])
        await client.push(topic)
        assert await client.drain(quiet=0.2) == []


async def subscribed_book(fake: FakeBybit, client: FakeClient, topic: str) -> tuple[LocalBook, int]:
    await client.request("subscribe", [topic])
    book = LocalBook()
    book.apply(await client.push(topic))
    await fake.advance(topic, count=3)
    for _ in range(3):
        book.apply(await client.push(topic))
    assert book.u is not None
    return book, book.u


async def test_gap_fault_skips_one_update_id() -> None:
    topic = "orderbook.50.BTCUSDT"
    async with FakeBybit(auto_push=False) as fake, FakeClient.connect(public(fake, "linear")) as client:
        _, last_u = await subscribed_book(fake, client, topic)
        sent = await fake.inject_book_fault(topic, "gap")
        gap = await client.push(topic)
        await fake.advance(topic)
        after = await client.push(topic)
    assert gap == sent
    assert (gap["type"], gap["data"]["u"]) == ("delta", last_u + 2)
    assert after["data"]["u"] == last_u + 3


async def test_stale_fault_repeats_an_old_update_id_that_the_book_must_ignore() -> None:
    topic = "orderbook.50.BTCUSDT"
    async with FakeBybit(auto_push=False) as fake, FakeClient.connect(public(fake, "linear")) as client:
        book, last_u = await subscribed_book(fake, client, topic)
        await fake.inject_book_fault(topic, "stale")
        stale = await client.push(topic)
        await fake.advance(topic)
        book.apply(await client.push(topic))
        assert book.levels() == book_of(fake, topic).levels()  # a client that dropped it is still right
    assert stale["data"]["u"] == last_u - 1
    assert stale["type"] == "delta"
    assert book.u == last_u + 1


async def test_restart_fault_sends_a_snapshot_with_u_equal_to_one() -> None:
    topic = "orderbook.200.BTCUSDT"
    async with FakeBybit(auto_push=False) as fake, FakeClient.connect(public(fake, "linear")) as client:
        book, _ = await subscribed_book(fake, client, topic)
        await fake.inject_book_fault(topic, "restart")
        restart = await client.push(topic)
        book.apply(restart)
        await fake.advance(topic)
        following = await client.push(topic)
        book.apply(following)
        assert book.levels() == book_of(fake, topic).levels()
    assert (restart["type"], restart["data"]["u"]) == ("snapshot", 1)
    assert len(restart["data"]["b"]) == 200
    assert following["data"]["u"] == 2


async def test_crossed_fault_puts_a_bid_at_or_above_the_best_ask() -> None:
    topic = "orderbook.50.BTCUSDT"
    async with FakeBybit(auto_push=False) as fake, FakeClient.connect(public(fake, "inverse")) as client:
        book, last_u = await subscribed_book(fake, client, topic)
        await fake.inject_book_fault(topic, "crossed")
        crossed = await client.push(topic)
        book.apply(crossed)
        book_of(fake, topic).check()  # the fake's own book stays valid
    assert crossed["data"]["u"] == last_u + 1
    assert book.crossed()


async def test_mid_stream_snapshot_fault_replaces_the_book() -> None:
    topic = "orderbook.50.BTCUSDT"
    async with FakeBybit(auto_push=False) as fake, FakeClient.connect(public(fake, "spot")) as client:
        book, last_u = await subscribed_book(fake, client, topic)
        await fake.inject_book_fault(topic, "snapshot")
        snapshot = await client.push(topic)
        book.apply(snapshot)
        assert book.levels() == book_of(fake, topic).levels()
    assert (snapshot["type"], snapshot["data"]["u"]) == ("snapshot", last_u + 1)


async def test_empty_delta_fault_has_no_levels_but_advances_u() -> None:
    topic = "orderbook.50.BTCUSDT"
    async with FakeBybit(auto_push=False) as fake, FakeClient.connect(public(fake, "linear")) as client:
        _, last_u = await subscribed_book(fake, client, topic)
        await fake.inject_book_fault(topic, "empty")
        empty = await client.push(topic)
    assert empty["type"] == "delta"
    assert empty["data"]["b"] == empty["data"]["a"] == []
    assert empty["data"]["u"] == last_u + 1


async def test_fault_hooks_reject_what_they_cannot_do() -> None:
    async with FakeBybit(auto_push=False) as fake, FakeClient.connect(public(fake, "linear")) as client:
        await client.request("subscribe", ["orderbook.1.BTCUSDT", "tickers.BTCUSDT"])
        with pytest.raises(ValueError, match="snapshot-only"):
            await fake.inject_book_fault("orderbook.1.BTCUSDT", "empty")
        with pytest.raises(TypeError):
            await fake.inject_book_fault("tickers.BTCUSDT", "gap")
        with pytest.raises(LookupError):
            await fake.inject_book_fault("orderbook.50.NOPEUSDT", "gap")
        with pytest.raises(ValueError, match="unknown book fault"):
            await fake.inject_book_fault("orderbook.1.BTCUSDT", "sideways")  # type: ignore[arg-type]


@pytest.mark.parametrize(("category", "symbol"), [("linear", "BTCUSDT"), ("inverse", "BTCUSD")])
async def test_derivative_ticker_sends_a_snapshot_then_partial_deltas(category: str, symbol: str) -> None:
    topic = f"tickers.{symbol}"
    async with FakeBybit(auto_push=False) as fake, FakeClient.connect(public(fake, category)) as client:
        await client.request("subscribe", [topic])
        snapshot = await client.push(topic)
        await fake.advance(topic, count=60)
        deltas = [await client.push(topic) for _ in range(60)]
        ticker = fake.stream(topic)
        assert isinstance(ticker, TickerStream)
        truth = dict(ticker.state)
    merged = dict(snapshot["data"])
    repeated_unchanged = empty_values = 0
    for delta in deltas:
        assert delta["type"] == "delta"
        assert delta["data"]["symbol"] == symbol
        assert len(delta["data"]) < len(snapshot["data"])
        repeated_unchanged += sum(1 for key, value in delta["data"].items() if key != "symbol" and merged[key] == value)
        empty_values += sum(1 for value in delta["data"].values() if value == "")
        merged.update(delta["data"])
    assert merged == truth
    assert [message["cs"] for message in [snapshot, *deltas]] == sorted({m["cs"] for m in [snapshot, *deltas]})
    assert repeated_unchanged > 0
    if "" in snapshot["data"].values():
        assert empty_values > 0
    assert set(snapshot) == set(SAMPLES.get("public_tickers_inverse_snapshot"))


@pytest.mark.parametrize(
    ("category", "topic", "sample"),
    [
        ("spot", "tickers.BTCUSDT", "public_tickers_spot"),
        ("option", "tickers.BTC-6JAN23-17500-C", "public_tickers_option"),
    ],
)
async def test_spot_and_option_tickers_send_full_snapshots_only(category: str, topic: str, sample: str) -> None:
    async with FakeBybit(push_interval=0.01) as fake, FakeClient.connect(public(fake, category)) as client:
        await client.request("subscribe", [topic])
        messages = [await client.push(topic) for _ in range(5)]
    recorded = SAMPLES.get(sample)
    for message in messages:
        assert message["type"] == "snapshot"
        assert set(message) == set(recorded)
        assert set(message["data"]) == set(recorded["data"])
    if category == "spot":
        assert [m["cs"] for m in messages] == sorted({m["cs"] for m in messages})
    else:
        assert len({m["id"] for m in messages}) == 5


@pytest.mark.parametrize(
    ("category", "topic", "sample"),
    [
        ("linear", "publicTrade.BTCUSDT", "public_publicTrade_linear"),
        ("inverse", "publicTrade.BTCUSD", "public_publicTrade_inverse"),
        ("spot", "publicTrade.BTCUSDT", "public_publicTrade_spot"),
        ("option", "publicTrade.BTC", "public_publicTrade_option"),
    ],
)
async def test_trades_arrive_only_after_subscribe_with_unique_ids(category: str, topic: str, sample: str) -> None:
    async with FakeBybit(auto_push=False) as fake, FakeClient.connect(public(fake, category)) as client:
        await client.request("subscribe", [topic])
        assert await client.drain(quiet=0.1) == []  # no history on subscribe (§5.4)
        await fake.advance(topic, count=20)
        messages = [await client.push(topic) for _ in range(20)]
    recorded = SAMPLES.get(sample)
    trades = [trade for message in messages for trade in message["data"]]
    ids = [trade["i"] for trade in trades]
    assert len(set(ids)) == len(ids)
    assert set(messages[0]) == set(recorded)
    assert set(recorded["data"][0]) <= set(trades[0])
    if category == "spot":
        assert all(trade_id.isdigit() for trade_id in ids)
        assert "L" not in trades[0]
    else:
        assert all(uuid.UUID(trade_id) for trade_id in ids)
    if category == "option":
        assert all(trade["s"].startswith("BTC-") for trade in trades)
    else:
        assert all(len({trade["seq"] for trade in message["data"]}) == 1 for message in messages)


async def test_kline_repeats_the_open_candle_then_confirms_it() -> None:
    topic = "kline.1.BTCUSDT"
    async with FakeBybit(auto_push=False) as fake, FakeClient.connect(public(fake, "linear")) as client:
        await client.request("subscribe", [topic])
        await fake.advance(topic, count=15)
        candles = [(await client.push(topic))["data"][0] for _ in range(15)]
    first_start = candles[0]["start"]
    same = [candle for candle in candles if candle["start"] == first_start]
    assert [candle["confirm"] for candle in same] == [False] * (len(same) - 1) + [True]
    assert len(same) >= 3
    following = candles[len(same)]
    assert following["start"] == same[-1]["end"] + 1
    assert following["confirm"] is False
    assert set(candles[0]) == set(SAMPLES.get("public_kline")["data"][0])


async def test_all_liquidation_has_the_recorded_shape() -> None:
    topic = "allLiquidation.ROSEUSDT"
    async with FakeBybit(auto_push=False) as fake, FakeClient.connect(public(fake, "linear")) as client:
        await client.request("subscribe", [topic])
        await fake.advance(topic)
        message = await client.push(topic)
    recorded = SAMPLES.get("public_allLiquidation")
    assert set(message) == set(recorded)
    assert set(message["data"][0]) == set(recorded["data"][0])
    assert message["data"][0]["s"] == "ROSEUSDT"


async def test_same_seed_gives_the_same_book() -> None:
    snapshots: list[JsonObject] = []
    for _ in range(2):
        async with (
            FakeBybit(auto_push=False, seed=7) as fake,
            FakeClient.connect(public(fake, "linear")) as client,
        ):
            await client.request("subscribe", ["orderbook.50.BTCUSDT"])
            snapshots.append((await client.push("orderbook.50.BTCUSDT"))["data"])
    assert snapshots[0] == snapshots[1]
