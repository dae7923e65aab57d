"""Which requests name which Bybit topic, and which are refused with the field named (PROTOCOL.md §6, §9)."""

from __future__ import annotations

import pytest

from shared.enums import Category, ChannelType, Endpoint
from shared.routing import binding_key
from shared.topics import TopicError, topic_for


@pytest.mark.parametrize(
    ("channel", "kwargs", "topic", "endpoint"),
    [
        (ChannelType.TRADES, {"symbol": "btcusdt"}, "publicTrade.BTCUSDT", Endpoint.LINEAR),
        (
            ChannelType.TRADES,
            {"symbol": "BTC", "category": Category.OPTION},
            "publicTrade.BTC",
            Endpoint.OPTION,
        ),
        (
            ChannelType.TICKER,
            {"symbol": "ETHUSDT", "category": Category.SPOT},
            "tickers.ETHUSDT",
            Endpoint.SPOT,
        ),
        (ChannelType.ORDERBOOK, {"symbol": "BTCUSDT"}, "orderbook.50.BTCUSDT", Endpoint.LINEAR),
        (
            ChannelType.ORDERBOOK,
            {"symbol": "BTCUSD", "category": Category.INVERSE, "depth": 1000},
            "orderbook.1000.BTCUSD",
            Endpoint.INVERSE,
        ),
        (
            ChannelType.ORDERBOOK,
            {"symbol": "BTC-27DEC24-100000-C", "category": Category.OPTION},
            "orderbook.25.BTC-27DEC24-100000-C",
            Endpoint.OPTION,
        ),
        (ChannelType.KLINE, {"symbol": "BTCUSDT", "interval": 15}, "kline.15.BTCUSDT", Endpoint.LINEAR),
        (ChannelType.KLINE, {"symbol": "BTCUSDT", "interval": "d"}, "kline.D.BTCUSDT", Endpoint.LINEAR),
        (ChannelType.LIQUIDATION, {"symbol": "BTCUSDT"}, "allLiquidation.BTCUSDT", Endpoint.LINEAR),
        (ChannelType.ORDER, {}, "order", Endpoint.PRIVATE),
        (ChannelType.ORDER, {"category": Category.LINEAR}, "order.linear", Endpoint.PRIVATE),
        (ChannelType.EXECUTION, {"category": Category.SPOT}, "execution.spot", Endpoint.PRIVATE),
        (ChannelType.POSITION, {"category": Category.OPTION}, "position.option", Endpoint.PRIVATE),
        (ChannelType.BALANCE, {}, "wallet", Endpoint.PRIVATE),
    ],
)
def test_valid_request_names_the_exact_bybit_topic(
    channel: ChannelType, kwargs: dict[str, object], topic: str, endpoint: Endpoint
) -> None:
    spec = topic_for(channel, **kwargs)  # type: ignore[arg-type]
    assert (spec.topic, spec.endpoint) == (topic, endpoint)


@pytest.mark.parametrize(
    ("channel", "kwargs", "field"),
    [
        (ChannelType.TRADES, {}, "symbol"),
        (ChannelType.TICKER, {"symbol": "btc usdt"}, "symbol"),
        (ChannelType.ORDERBOOK, {"symbol": "BTCUSDT", "depth": 500}, "depth"),
        (ChannelType.ORDERBOOK, {"symbol": "BTC-X-C", "category": Category.OPTION, "depth": 50}, "depth"),
        (ChannelType.TRADES, {"symbol": "BTCUSDT", "depth": 50}, "depth"),
        (ChannelType.KLINE, {"symbol": "BTCUSDT"}, "interval"),
        (ChannelType.KLINE, {"symbol": "BTCUSDT", "interval": "2"}, "interval"),
        (ChannelType.KLINE, {"symbol": "BTC-X-C", "category": Category.OPTION, "interval": "1"}, "category"),
        (ChannelType.TICKER, {"symbol": "BTCUSDT", "interval": "1"}, "interval"),
        (ChannelType.LIQUIDATION, {"symbol": "BTCUSDT", "category": Category.SPOT}, "category"),
        (ChannelType.TRADES, {"symbol": "BTC-27DEC24-100000-C", "category": Category.OPTION}, "symbol"),
        (ChannelType.ORDER, {"symbol": "BTCUSDT"}, "symbol"),
        (ChannelType.BALANCE, {"category": Category.LINEAR}, "category"),
        (ChannelType.POSITION, {"category": Category.SPOT}, "category"),
        (ChannelType.EXECUTION, {"depth": 50}, "depth"),
    ],
)
def test_invalid_combination_names_the_field(channel: ChannelType, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(TopicError) as raised:
        topic_for(channel, **kwargs)  # type: ignore[arg-type]
    assert raised.value.field == field


def test_wrong_depth_lists_the_depths_the_category_offers() -> None:
    with pytest.raises(TopicError) as raised:
        topic_for(ChannelType.ORDERBOOK, symbol="BTCUSDT", category=Category.SPOT, depth=25)
    assert raised.value.allowed == ["1", "50", "200", "1000"]


def test_binding_keys_deliver_exactly_the_subscribed_events() -> None:
    assert binding_key(topic_for(ChannelType.TRADES, symbol="BTCUSDT")) == "trades.linear.BTCUSDT"
    assert binding_key(topic_for(ChannelType.ORDER)) == "order.*"
    assert binding_key(topic_for(ChannelType.ORDER, category=Category.SPOT)) == "order.spot"
    assert binding_key(topic_for(ChannelType.BALANCE)) == "balance.*"


def test_each_book_depth_and_kline_interval_has_its_own_routing_key() -> None:
    assert binding_key(topic_for(ChannelType.ORDERBOOK, symbol="BTCUSDT", depth=1)) == "orderbook.linear.BTCUSDT.1"
    assert binding_key(topic_for(ChannelType.ORDERBOOK, symbol="BTCUSDT")) == "orderbook.linear.BTCUSDT.50"
    assert binding_key(topic_for(ChannelType.KLINE, symbol="BTCUSDT", interval="D")) == "kline.linear.BTCUSDT.D"
