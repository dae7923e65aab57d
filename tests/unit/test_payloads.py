"""The payload structs consumers decode: real samples in, exact decimals, `""` as None, ms strings as ints."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from shared.payloads import (
    Execution,
    Kline,
    Liquidation,
    Order,
    Position,
    PublicTrade,
    WalletAccount,
    WalletCoin,
    convert_payload,
    decode_payload,
)
from shared.schema import ACCOUNT_DECIMAL_FIELDS, COIN_BOOL_FIELDS, COIN_DECIMAL_FIELDS
from tests.support.samples import SAMPLES

TRADE_SAMPLES = sorted(p.name for p in SAMPLES.glob("public_publicTrade_*.json"))


def items(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((SAMPLES / name).read_text())["data"]
    return data


def item_json(name: str, **changes: Any) -> bytes:
    """The first data item of a sample, as Bybit's compact JSON, with some fields changed."""
    return json.dumps(items(name)[0] | changes, separators=(",", ":")).encode()


def test_samples_hold_every_trade_shape() -> None:
    assert len(TRADE_SAMPLES) >= 5


@pytest.mark.parametrize("name", TRADE_SAMPLES)
def test_public_trade_reads_every_trade_of_every_sample(name: str) -> None:
    for raw in items(name):
        trade = convert_payload(PublicTrade, raw)
        assert trade.trade_id == raw["i"]
        assert trade.time == raw["T"]
        assert trade.symbol == raw["s"]
        assert trade.side == raw["S"]
        assert str(trade.price) == raw["p"]  # exact: "28560.50" keeps its trailing zero
        assert str(trade.size) == raw["v"]
        assert trade.tick_direction == raw.get("L")
        assert trade.block_trade is False


def test_public_trade_keeps_trailing_zeros_and_reads_seq() -> None:
    trade = decode_payload(PublicTrade, item_json("public_publicTrade_linear.json"))
    assert trade.price == Decimal("16578.50")
    assert str(trade.price) == "16578.50"
    assert trade.seq == 1783284617
    assert trade.rpi is None


def test_option_trade_reads_mark_index_and_implied_volatility() -> None:
    body = item_json("public_publicTrade_option.json", mP="984.1", iP="28000.5", mIv="0.4567", iv="0.4501")
    trade = decode_payload(PublicTrade, body)
    assert (trade.mark_price, trade.index_price) == (Decimal("984.1"), Decimal("28000.5"))
    assert (trade.mark_iv, trade.iv) == (Decimal("0.4567"), Decimal("0.4501"))
    assert trade.symbol == "BTC-28APR23-29500-C"


def test_spot_trade_without_tick_direction_reads_none() -> None:
    assert decode_payload(PublicTrade, item_json("public_publicTrade_spot.json")).tick_direction is None


def test_kline_reads_the_candle() -> None:
    kline = decode_payload(Kline, item_json("public_kline.json"))
    assert (kline.start, kline.end, kline.timestamp) == (1672324800000, 1672325099999, 1672324988882)
    assert kline.interval == "5"
    assert (kline.open, kline.close) == (Decimal("16649.5"), Decimal("16677"))
    assert kline.turnover == Decimal("34666.4005")
    assert kline.confirm is False


@pytest.mark.parametrize("name", ["public_allLiquidation.json", "public_allLiquidation_tardis.json"])
def test_liquidation_reads_every_sample(name: str) -> None:
    raw = items(name)[0]
    liquidation = convert_payload(Liquidation, raw)
    assert (liquidation.time, liquidation.symbol, liquidation.side) == (raw["T"], raw["s"], raw["S"])
    assert (str(liquidation.price), str(liquidation.size)) == (raw["p"], raw["v"])


def test_order_reads_decimals_ms_strings_and_empty_strings() -> None:
    order = decode_payload(Order, item_json("private_order.json"))
    assert order.order_id == "5cf98598-39a7-459e-97bf-76ca765ee020"
    assert (order.category, order.symbol, order.side) == ("option", "ETH-30DEC22-1400-C", "Sell")
    assert (order.price, order.qty, order.avg_price) == (Decimal("72.5"), Decimal("1"), Decimal("75"))
    assert order.cum_exec_fee == Decimal("0.358635")
    assert order.cum_fee_detail == {"MNT": Decimal("0.00242968")}
    assert (order.created_time, order.updated_time) == (1672364262444, 1672364262457)
    assert order.leaves_qty is None  # "" on the wire
    assert order.order_link_id is None
    assert order.order_status == "Filled"
    assert (order.position_idx, order.trigger_direction, order.smp_group) == (0, 0, 0)
    assert (order.reduce_only, order.close_on_trigger, order.rpi_taker_access) == (False, False, False)


def test_order_with_empty_avg_price_reads_none() -> None:
    assert decode_payload(Order, item_json("private_order.json", avgPrice="")).avg_price is None


def test_order_without_an_order_id_is_rejected() -> None:
    raw = items("private_order.json")[0]
    del raw["orderId"]
    with pytest.raises(msgspec.ValidationError, match="orderId"):
        convert_payload(Order, raw)


def test_execution_reads_fees_times_and_extra_fees() -> None:
    execution = decode_payload(Execution, item_json("private_execution.json"))
    assert execution.exec_id == "0ab1bdf7-4219-438b-b30a-32ec863018f7"
    assert execution.exec_fee == Decimal("26.3725275")
    assert (execution.exec_price, execution.exec_qty) == (Decimal("95900.1"), Decimal("0.5"))
    assert execution.exec_time == 1746270400353
    assert execution.seq == 140612148849382
    assert execution.is_maker is False
    assert execution.trade_iv is None
    assert execution.extra_fees is not None
    (fee,) = execution.extra_fees
    assert (fee.fee_coin, fee.fee_type, fee.fee) == ("USDT", "GST", Decimal("0.006403779"))


def test_execution_with_empty_extra_fees_reads_none() -> None:
    assert decode_payload(Execution, item_json("private_execution.json", extraFees="")).extra_fees is None


def test_fast_execution_items_read_as_executions() -> None:
    execution = convert_payload(Execution, items("private_execution_fast.json")[0])
    assert execution.exec_price == Decimal("12.015")
    assert execution.order_link_id == "test-00001"


def test_position_reads_a_flat_position() -> None:
    position = decode_payload(Position, item_json("private_position.json"))
    assert (position.category, position.symbol, position.position_idx) == ("linear", "BTCUSDT", 2)
    assert position.side is None  # flat: "" on the wire
    assert position.size == Decimal("0")
    assert position.cum_realised_pnl == Decimal("-25.06579337")
    assert position.break_even_price == Decimal("93556.73034991")
    assert (position.created_time, position.updated_time) == (1694402496913, 1697682317038)
    assert position.leverage_sys_updated_time is None
    assert (position.seq, position.adl_rank_indicator, position.auto_add_margin) == (8327597863, 0, 0)
    assert position.is_reduce_only is False


def test_wallet_account_reads_totals_and_coins() -> None:
    account = decode_payload(WalletAccount, item_json("private_wallet.json"))
    assert account.account_type == "UNIFIED"
    assert account.total_equity == Decimal("10262.91335023")
    assert account.total_available_balance == Decimal("9556.6056555")
    (coin,) = account.coin
    assert coin.coin == "BTC"
    assert coin.wallet_balance == Decimal("0.00102964")
    assert coin.spot_hedging_qty == Decimal("0.01592413")
    assert (coin.total_order_im, coin.total_position_im, coin.available_to_borrow) == (None, None, None)
    assert (coin.collateral_switch, coin.margin_collateral) == (True, True)


def test_wallet_coin_attributes_are_the_database_columns() -> None:
    coin_fields = {f.name: f.encode_name for f in msgspec.structs.fields(WalletCoin)}
    for wire, column in (*COIN_DECIMAL_FIELDS, *COIN_BOOL_FIELDS):
        assert coin_fields[column] == wire
    account_fields = {f.name: f.encode_name for f in msgspec.structs.fields(WalletAccount)}
    for wire, column in ACCOUNT_DECIMAL_FIELDS:
        assert account_fields[column] == wire


def test_unknown_fields_are_ignored() -> None:
    trade = decode_payload(PublicTrade, item_json("public_publicTrade_linear.json", newField={"a": [1]}))
    assert trade.trade_id == "20f43950-d8dd-5b31-9112-a178eb6023af"


@pytest.mark.parametrize(
    ("cls", "name", "changes"),
    [
        (PublicTrade, "public_publicTrade_linear.json", {"p": "sixteen"}),
        (PublicTrade, "public_publicTrade_linear.json", {"T": "soon"}),
        (Order, "private_order.json", {"updatedTime": "yesterday"}),
        (Position, "private_position.json", {"positionIdx": "two"}),
        (WalletAccount, "private_wallet.json", {"coin": "BTC"}),
    ],
)
def test_wrong_types_are_a_validation_error(cls: type[Any], name: str, changes: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_payload(cls, item_json(name, **changes))


def test_encoding_writes_bybit_names_and_decimal_strings() -> None:
    execution = decode_payload(Execution, item_json("private_execution.json"))
    body = msgspec.json.encode(execution)
    assert b'"execFee":"26.3725275"' in body
    assert b'"execTime":1746270400353' in body
    assert b'"tradeIv":null' in body
    assert decode_payload(Execution, body) == execution
