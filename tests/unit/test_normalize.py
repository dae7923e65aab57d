"""Data pushes into event envelopes: one event per item, ids from Bybit's ids, payloads byte for byte."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from shared.enums import ChannelType, Endpoint
from shared.events import ENVELOPE_DECODER
from shared.payloads import Execution, Order, convert_payload
from stream_worker.envelopes.normalize import Normalized, Normalizer, PayloadError
from stream_worker.envelopes.outgoing import Outgoing
from tests.support.samples import compact, push_of, sample, sample_text

RECEIVED_MS = 1_700_000_000_123
TRACE_ID = "trace-1"

# The public socket each sample came from (SOURCES.md); orderbook.full and orderbook.rpi are spot here.
PUBLIC_SAMPLES: dict[str, Endpoint] = {
    "public_publicTrade_linear.json": Endpoint.LINEAR,
    "public_publicTrade_linear_tardis.json": Endpoint.LINEAR,
    "public_publicTrade_inverse.json": Endpoint.INVERSE,
    "public_publicTrade_spot.json": Endpoint.SPOT,
    "public_publicTrade_option.json": Endpoint.OPTION,
    "public_kline.json": Endpoint.LINEAR,
    "public_allLiquidation.json": Endpoint.LINEAR,
    "public_allLiquidation_tardis.json": Endpoint.LINEAR,
    "public_orderbook_snapshot_linear.json": Endpoint.LINEAR,
    "public_orderbook_delta_linear.json": Endpoint.LINEAR,
    "public_orderbook_snapshot_linear_docs.json": Endpoint.LINEAR,
    "public_orderbook_delta_linear_docs.json": Endpoint.LINEAR,
    "public_orderbook_snapshot_spot.json": Endpoint.SPOT,
    "public_orderbook_delta_spot.json": Endpoint.SPOT,
    "public_orderbook_snapshot_option.json": Endpoint.OPTION,
    "public_orderbook_snapshot_option_2024.json": Endpoint.OPTION,
    "public_orderbook_snapshot_option_empty.json": Endpoint.OPTION,
    "public_orderbook_delta_option.json": Endpoint.OPTION,
    "public_orderbook_full_delta.json": Endpoint.SPOT,
    "public_orderbook_rpi_delta.json": Endpoint.SPOT,
    "public_orderbook1_snapshot_linear_2023.json": Endpoint.LINEAR,
    "public_orderbook1_delta_linear_2023.json": Endpoint.LINEAR,
    "public_orderbook1_snapshot_spot_2023.json": Endpoint.SPOT,
    "public_orderbook1_delta_spot_2023.json": Endpoint.SPOT,
    "public_tickers_linear.json": Endpoint.LINEAR,
    "public_tickers_linear_futures.json": Endpoint.LINEAR,
    "public_tickers_linear_snapshot_tardis.json": Endpoint.LINEAR,
    "public_tickers_inverse_snapshot.json": Endpoint.INVERSE,
    "public_tickers_inverse_delta.json": Endpoint.INVERSE,
    "public_tickers_inverse_futures_snapshot.json": Endpoint.INVERSE,
    "public_tickers_inverse_futures_delta.json": Endpoint.INVERSE,
    "public_tickers_spot.json": Endpoint.SPOT,
    "public_tickers_option.json": Endpoint.OPTION,
    "public_tickers_option_tardis.json": Endpoint.OPTION,
}
TRADE_SAMPLES = [name for name in PUBLIC_SAMPLES if "publicTrade" in name]
BOOK_SAMPLES = [name for name in PUBLIC_SAMPLES if "orderbook" in name]
TICKER_SAMPLES = [name for name in PUBLIC_SAMPLES if "tickers" in name]
LIST_SAMPLES = [name for name in PUBLIC_SAMPLES if "publicTrade" in name or "kline" in name or "Liq" in name]
PRIVATE_SAMPLES = ["private_order.json", "private_execution.json", "private_position.json", "private_wallet.json"]


def normalize(text: str, endpoint: Endpoint) -> Normalized:
    return Normalizer(endpoint).normalize(push_of(text, endpoint), received_ms=RECEIVED_MS, trace_id=TRACE_ID)


def events_of(name: str, endpoint: Endpoint | None = None) -> list[Outgoing]:
    return normalize(sample_text(name), endpoint or PUBLIC_SAMPLES.get(name, Endpoint.PRIVATE)).events


def encoded(event: Outgoing) -> bytes:
    return msgspec.json.encode(event.envelope)


def payload_of(event: Outgoing) -> Any:
    return json.loads(encoded(event))["payload"]


def payload_error(text: str, endpoint: Endpoint) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        normalize(text, endpoint)
    return caught.value


# -- market data: one event per item ----------------------------------------------------------------------


@pytest.mark.parametrize("name", TRADE_SAMPLES)
def test_each_trade_becomes_one_event_keyed_by_its_trade_id(name: str) -> None:
    message = sample(name)
    category = PUBLIC_SAMPLES[name].value
    symbol = message["topic"].removeprefix("publicTrade.")
    events = events_of(name)
    assert len(events) == len(message["data"])
    for event, trade in zip(events, message["data"], strict=True):
        envelope = event.envelope
        assert envelope.event_id == f"trades:{category}:{symbol}:{trade['i']}"
        assert event.routing_key == f"trades.{category}.{symbol}"
        assert event.channel_type is ChannelType.TRADES
        assert not event.account
        assert envelope.event_type == "trades"
        assert (envelope.category, envelope.symbol, envelope.topic) == (category, symbol, message["topic"])
        assert envelope.exchange_ts == trade["T"]
        assert (envelope.received_ts, envelope.published_ts, envelope.trace_id) == (RECEIVED_MS, 0, TRACE_ID)
        assert envelope.snapshot is False


def test_inverse_message_with_three_trades_gives_three_distinct_events() -> None:
    events = events_of("public_publicTrade_inverse.json")
    assert [e.envelope.event_id for e in events] == [
        "trades:inverse:BTCUSD:0cbf2330-952d-5d03-a462-4bf826c867af",
        "trades:inverse:BTCUSD:912e56de-9ed6-5f4f-9421-f0ff5a42d84a",
        "trades:inverse:BTCUSD:cb558b74-cf72-5157-b53b-93944db336ad",
    ]


def test_option_trade_routes_by_base_coin_and_keeps_the_option_symbol_in_the_payload() -> None:
    (event,) = events_of("public_publicTrade_option.json")
    assert event.routing_key == "trades.option.BTC"
    assert event.envelope.symbol == "BTC"
    assert event.envelope.event_id == "trades:option:BTC:0404c393-8419-5bac-95c3-5fea28404754"
    assert payload_of(event)["s"] == "BTC-28APR23-29500-C"


@pytest.mark.parametrize("name", LIST_SAMPLES)
def test_each_list_item_payload_is_bybits_item_unchanged(name: str) -> None:
    items = sample(name)["data"]
    assert [payload_of(event) for event in events_of(name)] == items


def test_trade_payload_keeps_decimal_strings_byte_for_byte() -> None:
    body = b"".join(encoded(event) for event in events_of("public_publicTrade_inverse.json"))
    assert b'"p":"28560.50"' in body
    assert b'"v":"5823"' in body
    spot = b"".join(encoded(event) for event in events_of("public_publicTrade_spot.json"))
    assert b'"v":"0.041732"' in spot
    assert b'"i":"2290000000050703789"' in spot


def test_unknown_trade_fields_reach_the_consumer() -> None:
    message = sample("public_publicTrade_linear.json")
    message["data"][0] |= {"RPI": True, "newField": "1.2300", "nested": {"x": ["0.10"]}}
    (event,) = normalize(compact(message), Endpoint.LINEAR).events
    body = encoded(event)
    assert b'"newField":"1.2300"' in body
    assert b'"nested":{"x":["0.10"]}' in body
    assert b'"RPI":true' in body


def test_kline_event_is_keyed_by_topic_start_timestamp_and_confirm() -> None:
    (event,) = events_of("public_kline.json")
    envelope = event.envelope
    assert envelope.event_id == "kline:linear:kline.5.BTCUSDT:1672324800000:1672324988882:false"
    assert event.routing_key == "kline.linear.BTCUSDT.5"  # the interval keeps intervals apart
    assert (envelope.event_type, envelope.symbol, envelope.exchange_ts) == ("kline", "BTCUSDT", 1672324988882)
    assert payload_of(event)["turnover"] == "34666.4005"


def test_confirmed_candle_gets_its_own_event_id() -> None:
    message = sample("public_kline.json")
    message["data"].append(dict(message["data"][0], confirm=True))
    open_candle, closed_candle = normalize(compact(message), Endpoint.LINEAR).events
    assert closed_candle.envelope.event_id == open_candle.envelope.event_id.removesuffix("false") + "true"


@pytest.mark.parametrize("name", ["public_allLiquidation.json", "public_allLiquidation_tardis.json"])
def test_each_liquidation_becomes_one_event_keyed_by_all_its_fields(name: str) -> None:
    message = sample(name)
    (item,) = message["data"]
    (event,) = events_of(name)
    symbol = item["s"]
    assert event.envelope.event_id == (f"liquidation:linear:{symbol}:{item['T']}:{item['S']}:{item['p']}:{item['v']}")
    assert event.routing_key == f"liquidation.linear.{symbol}"
    assert event.channel_type is ChannelType.LIQUIDATION
    assert event.envelope.exchange_ts == item["T"]


def test_liquidation_id_uses_the_price_string_as_sent() -> None:
    (event,) = events_of("public_allLiquidation.json")
    assert event.envelope.event_id == "liquidation:linear:ROSEUSDT:1739502302929:Sell:0.04499:20000"


# -- books and tickers are stateful: not the normalizer's job ---------------------------------------------


@pytest.mark.parametrize("name", BOOK_SAMPLES[:1] + TICKER_SAMPLES[:1])
def test_book_and_ticker_pushes_are_refused_here_because_market_state_owns_them(name: str) -> None:
    assert payload_error(sample_text(name), PUBLIC_SAMPLES[name]).kind == "unknown_topic"


# -- account data ---------------------------------------------------------------------------------------


def test_order_event_is_keyed_by_the_protocol_dedup_key() -> None:
    (event,) = events_of("private_order.json")
    envelope = event.envelope
    assert envelope.event_id == "order:5cf98598-39a7-459e-97bf-76ca765ee020:1672364262457:Filled:1"
    assert event.routing_key == "order.option"
    assert event.account
    assert event.channel_type is ChannelType.ORDER
    assert (envelope.category, envelope.symbol) == ("option", "ETH-30DEC22-1400-C")
    assert (envelope.topic, envelope.exchange_ts) == ("order", 1672364262474)


def test_racing_filled_order_messages_share_one_event_id() -> None:
    message = sample("private_order.json")
    filled = message["data"][0]
    late_cancel = dict(filled, cancelType="CancelByUser", rejectReason="EC_OrigClOrdIDDoesNotExist")
    message["data"] = [filled, late_cancel]
    first, second = normalize(compact(message), Endpoint.PRIVATE).events
    assert first.envelope.event_id == second.envelope.event_id
    assert payload_of(second)["rejectReason"] == "EC_OrigClOrdIDDoesNotExist"


def test_each_order_update_is_its_own_event_routed_by_its_own_category() -> None:
    message = sample("private_order.json")
    order = message["data"][0]
    message["data"] = [
        dict(order, category="linear", symbol="BTCUSDT", orderId="a"),
        dict(order, category="spot", symbol="ETHUSDT", orderId="b", orderStatus="New", cumExecQty="0"),
    ]
    events = normalize(compact(message), Endpoint.PRIVATE).events
    assert [e.routing_key for e in events] == ["order.linear", "order.spot"]
    assert [e.envelope.symbol for e in events] == ["BTCUSDT", "ETHUSDT"]
    assert events[1].envelope.event_id == "order:b:1672364262457:New:0"


def test_item_without_category_on_a_category_topic_takes_the_topic_category() -> None:
    message = sample("private_order.json") | {"topic": "order.linear"}
    del message["data"][0]["category"]
    (event,) = normalize(compact(message), Endpoint.PRIVATE).events
    assert (event.envelope.category, event.routing_key) == ("linear", "order.linear")


def test_execution_event_is_keyed_by_exec_id_and_keeps_every_field_as_sent() -> None:
    message = sample("private_execution.json")
    (event,) = events_of("private_execution.json")
    assert event.envelope.event_id == "execution:0ab1bdf7-4219-438b-b30a-32ec863018f7"
    assert event.routing_key == "execution.linear"
    assert (event.envelope.category, event.envelope.symbol) == ("linear", "BTCUSDT")
    assert event.envelope.exchange_ts == 1746270400355
    assert payload_of(event) == message["data"][0]


def test_execution_payload_keeps_decimal_strings_and_new_fields_byte_for_byte() -> None:
    message = sample("private_execution.json")
    message["data"][0]["brandNewField"] = "0.000100"
    (event,) = normalize(compact(message), Endpoint.PRIVATE).events
    body = encoded(event)
    assert b'"execFee":"26.3725275"' in body
    assert b'"execPrice":"95900.1"' in body
    assert b'"fee":"0.006403779"' in body
    assert b'"brandNewField":"0.000100"' in body


def test_position_event_is_keyed_by_category_symbol_index_time_and_seq() -> None:
    (event,) = events_of("private_position.json")
    assert event.envelope.event_id == "position:linear:BTCUSDT:2:1697682317038:8327597863"
    assert event.routing_key == "position.linear"
    assert event.account
    assert payload_of(event) == sample("private_position.json")["data"][0]


def test_wallet_coin_becomes_one_balance_event_and_the_account_is_kept_for_storage() -> None:
    result = normalize(sample_text("private_wallet.json"), Endpoint.PRIVATE)
    (event,) = result.events
    envelope = event.envelope
    assert envelope.event_id == "balance:592324d2bce751-ad38-48eb-8f42-4671d1fb4d4e:UNIFIED:BTC"
    assert event.routing_key == "balance.unified"
    assert event.channel_type is ChannelType.BALANCE
    assert event.account
    assert (envelope.event_type, envelope.category, envelope.symbol) == ("balance", "unified", "BTC")
    assert envelope.exchange_ts == 1700034722104
    assert payload_of(event) == sample("private_wallet.json")["data"][0]["coin"][0]
    (wallet,) = result.wallets
    assert wallet.message_id == "592324d2bce751-ad38-48eb-8f42-4671d1fb4d4e"
    assert wallet.exchange_ts == 1700034722104
    assert wallet.account.account_type == "UNIFIED"
    assert wallet.account.total_equity == Decimal("10262.91335023")
    assert wallet.account.coin[0].total_order_im is None


def test_wallet_message_with_three_coins_gives_three_balance_events() -> None:
    message = sample("private_wallet.json")
    btc = message["data"][0]["coin"][0]
    message["data"][0]["coin"] = [btc, dict(btc, coin="ETH"), dict(btc, coin="USDT", walletBalance="12.50")]
    result = normalize(compact(message), Endpoint.PRIVATE)
    assert [e.envelope.symbol for e in result.events] == ["BTC", "ETH", "USDT"]
    assert len({e.envelope.event_id for e in result.events}) == 3
    assert {e.routing_key for e in result.events} == {"balance.unified"}
    assert b'"walletBalance":"12.50"' in encoded(result.events[2])
    (wallet,) = result.wallets
    assert [coin.coin for coin in wallet.account.coin] == ["BTC", "ETH", "USDT"]


@pytest.mark.parametrize("name", PRIVATE_SAMPLES)
def test_consumer_reads_a_published_payload_with_the_shared_structs(name: str) -> None:
    for event in events_of(name):
        envelope = ENVELOPE_DECODER.decode(encoded(event))
        assert envelope.event_id == event.envelope.event_id
        if name == "private_execution.json":
            assert convert_payload(Execution, envelope.payload).exec_fee == Decimal("26.3725275")
        if name == "private_order.json":
            assert convert_payload(Order, envelope.payload).updated_time == 1672364262457


def test_empty_data_array_gives_no_events() -> None:
    message = sample("public_publicTrade_linear.json") | {"data": []}
    assert normalize(compact(message), Endpoint.LINEAR).events == []


# -- what cannot be read ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "endpoint"),
    [
        ("public_liquidation_deprecated.json", Endpoint.LINEAR),
        ("private_execution_fast.json", Endpoint.PRIVATE),
        ("private_greeks.json", Endpoint.PRIVATE),
        ("public_publicTrade_linear.json", Endpoint.PRIVATE),
        ("private_order.json", Endpoint.LINEAR),
    ],
)
def test_topic_without_a_channel_is_an_unknown_topic(name: str, endpoint: Endpoint) -> None:
    assert payload_error(sample_text(name), endpoint).kind == "unknown_topic"


@pytest.mark.parametrize("topic", ["orderbook.50", "publicTrade.", "kline.5", "spread.BTCUSDT"])
def test_public_topic_without_a_symbol_is_an_unknown_topic(topic: str) -> None:
    message = sample("public_publicTrade_linear.json") | {"topic": topic}
    assert payload_error(compact(message), Endpoint.LINEAR).kind == "unknown_topic"


def reshaped(name: str, change: Any) -> str:
    message = sample(name)
    change(message)
    return compact(message)


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def change(message: dict[str, Any]) -> None:
        target: Any = message
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _drop(path: tuple[Any, ...]) -> Any:
    def change(message: dict[str, Any]) -> None:
        target: Any = message
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


@pytest.mark.parametrize(
    ("name", "change", "kind"),
    [
        ("public_publicTrade_linear.json", _set(("data",), {"i": "x"}), "trades:bad_data"),
        ("public_publicTrade_linear.json", _drop(("data",)), "trades:bad_data"),
        ("public_publicTrade_linear.json", _drop(("data", 0, "i")), "trades:bad_data"),
        ("public_publicTrade_linear.json", _set(("data", 0, "T"), "soon"), "trades:bad_data"),
        ("public_publicTrade_linear.json", _set(("data", 0), "not an object"), "trades:bad_data"),
        ("public_kline.json", _set(("data", 0, "start"), "1672324800000"), "kline:bad_data"),
        ("public_allLiquidation.json", _drop(("data", 0, "p")), "liquidation:bad_data"),
        ("private_order.json", _drop(("data", 0, "orderId")), "order:bad_data"),
        ("private_order.json", _set(("data",), {"orderId": "x"}), "order:bad_data"),
        ("private_order.json", _drop(("data", 0, "category")), "order:no_category"),
        ("private_execution.json", _set(("data", 0, "execId"), 42), "execution:bad_data"),
        ("private_position.json", _drop(("data", 0, "symbol")), "position:bad_data"),
        ("private_position.json", _set(("data", 0, "positionIdx"), "two"), "position:bad_data"),
        ("private_wallet.json", _drop(("data", 0, "coin", 0, "coin")), "balance:bad_data"),
        ("private_wallet.json", _drop(("data", 0, "accountType")), "balance:bad_data"),
        ("private_wallet.json", _set(("data", 0, "totalEquity"), "lots"), "balance:bad_data"),
        ("private_wallet.json", _set(("data", 0, "coin"), {"coin": "BTC"}), "balance:bad_data"),
        ("private_wallet.json", _drop(("id",)), "balance:bad_envelope"),
        ("private_wallet.json", _drop(("creationTime",)), "balance:bad_envelope"),
    ],
)
def test_unreadable_data_is_a_payload_error_of_a_stable_kind(name: str, change: Any, kind: str) -> None:
    endpoint = PUBLIC_SAMPLES.get(name, Endpoint.PRIVATE)
    error = payload_error(reshaped(name, change), endpoint)
    assert error.kind == kind
    assert str(error).startswith(kind)
