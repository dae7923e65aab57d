"""Typed views of event payloads, for consumers (and the worker) to read an envelope's `payload`.

An envelope's `payload` is Bybit's data object exactly as Bybit sent it: Bybit's field names, decimal strings,
and fields these structs do not know yet. The structs below keep Bybit's names on the wire and give each
field a readable Python name (`price: Decimal | None = msgspec.field(name="p")`). Unknown fields are ignored;
every field has a default except the ids.

Decode with `decode_payload(Order, body)` or, for a payload already decoded as part of an `EventEnvelope`,
`convert_payload(Order, envelope.payload)`. Both read Bybit's conventions (PROTOCOL.md §11):
- Empty values arrive as `""` in any field (`"avgPrice": ""`, `"totalOrderIM": ""`, `"extraFees": ""`).
  msgspec cannot read `""` as a Decimal, so the JSON is first decoded to plain values, every `""` becomes
  None, and the result is converted to the struct. Hence every optional field is `X | None`, and an empty
  string reads as None in text fields too (`side` of a flat position, an unset `orderLinkId`).
- Private `*Time` fields are epoch milliseconds in strings (`"1672364262444"`); they read as `int`, because
  the conversion is lax (`strict=False`): numeric strings become ints. Decimal strings always stay exact.
  This costs two passes (about 10-20 µs for an order); the worker's hot path never decodes these structs.

Encoding a struct back (`msgspec.json.encode`) writes Bybit's names, decimals as strings and None as null.
Pure: no I/O.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


def _blank_to_none(value: Any) -> Any:
    """Bybit's `""` (no value) as None, everywhere in a decoded JSON value."""
    if value == "":
        return None
    if isinstance(value, dict):
        return {key: _blank_to_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_blank_to_none(item) for item in value]
    return value


def convert_payload(cls: type[T], payload: Any) -> T:
    """A payload already decoded to plain values (e.g. `EventEnvelope.payload`) as the struct `cls`.

    Raises `msgspec.ValidationError` when a field has the wrong type or an id is missing.
    """
    return msgspec.convert(_blank_to_none(payload), cls, strict=False)


def decode_payload(cls: type[T], data: bytes | str | msgspec.Raw) -> T:
    """A payload's JSON as the struct `cls`. Raises `msgspec.DecodeError` (or its `ValidationError`)."""
    return convert_payload(cls, msgspec.json.decode(data))


def _wire(name: str) -> Any:
    """An optional field under Bybit's name `name`."""
    return msgspec.field(default=None, name=name)


# -- public market data (PROTOCOL.md §6) ------------------------------------------------------------------


class PublicTrade(msgspec.Struct, frozen=True, kw_only=True):
    """One element of `publicTrade.{symbol}` data (§6.1). Option topics carry the base coin; `symbol` is
    the option itself, and only option trades have the mark/index price and IV fields."""

    trade_id: str = msgspec.field(name="i")
    time: int | None = _wire("T")
    symbol: str | None = _wire("s")
    side: str | None = _wire("S")  # taker side
    size: Decimal | None = _wire("v")
    price: Decimal | None = _wire("p")
    tick_direction: str | None = _wire("L")
    block_trade: bool | None = _wire("BT")
    rpi: bool | None = _wire("RPI")
    seq: int | None = None
    mark_price: Decimal | None = _wire("mP")
    index_price: Decimal | None = _wire("iP")
    mark_iv: Decimal | None = _wire("mIv")
    iv: Decimal | None = None


class Kline(msgspec.Struct, frozen=True, kw_only=True):
    """One candle of `kline.{interval}.{symbol}` (§6.4), re-sent until `confirm`. Key: (topic, start)."""

    start: int
    end: int | None = None
    interval: str | None = None
    open: Decimal | None = None
    close: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    volume: Decimal | None = None
    turnover: Decimal | None = None
    confirm: bool | None = None
    timestamp: int | None = None  # time of the candle's last match


class Liquidation(msgspec.Struct, frozen=True, kw_only=True):
    """One element of `allLiquidation.{symbol}` data (§6.5)."""

    time: int = msgspec.field(name="T")
    symbol: str = msgspec.field(name="s")
    side: str | None = _wire("S")  # the liquidated position's side: Buy means a long was liquidated
    size: Decimal | None = _wire("v")
    price: Decimal | None = _wire("p")  # bankruptcy price


class BookUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """The payload of an `orderbook` (or `orderbook_top`) event: a validated message, plus our checksum.

    Levels stay the exchange's strings: the checksum is computed over those exact strings (README, "Order
    books"). `type` is "snapshot" (replace your book) or "delta" (size "0" deletes a level, anything else sets
    it); a Bybit `u == 1` restart is published as a snapshot. Every delta's `u` is the previous event's + 1.
    """

    type: str
    ts: int | None = None
    cts: int | None = None
    symbol: str = msgspec.field(name="s")
    bids: list[tuple[str, str]] = msgspec.field(name="b", default_factory=list)
    asks: list[tuple[str, str]] = msgspec.field(name="a", default_factory=list)
    update_id: int = msgspec.field(name="u")
    seq: int | None = None
    checksum: int
    checksum_levels: int


class BookInvalid(msgspec.Struct, frozen=True, kw_only=True):
    """The payload of a `book_invalid` event: drop your book for this topic until the next snapshot."""

    cause: str  # gap | delta_before_snapshot | crossed | reconnect | malformed
    update_id: int | None = msgspec.field(default=None, name="u")  # the update id that revealed it


class ResyncIncomplete(msgspec.Struct, frozen=True, kw_only=True):
    """The payload of a `resync_incomplete` event: the REST re-sync after a gap in the private stream could not
    establish the account's state for this channel and category, so what you hold may be stale.

    `reason`: `rate_limited` (Bybit's 10006), `banned` (HTTP 403, "access too frequent": the next attempt waits
    at least 10 minutes), `failed` (any other REST error; retried with backoff), `pagination_cap` (more pages
    than the worker follows), `window_exceeded` (the gap is older than Bybit's 7-day history window), or
    `unresolved` (something we believed open that Bybit no longer lists and whose final state we could not
    fetch). A later complete re-sync is not announced; the events it publishes are the answer.
    """

    reason: str
    detail: str
    since_ms: int | None = None  # where the gap began (UTC epoch ms), if known
    retry_in_s: float | None = None  # when the worker tries again, for reasons it retries


class Ticker(msgspec.Struct, frozen=True, kw_only=True):
    """The payload of a `ticker` event: the full merged ticker (§6.3, §8), and what this update changed.

    Linear/inverse deltas are merged by the gateway, so every event is complete; `changed` lists the fields
    whose value differs from the previous event (a field present in Bybit's delta may be unchanged).
    Fields a category does not send stay None (spot has no funding, option has greeks).
    """

    type: str  # "snapshot" or "delta" (what Bybit sent; the payload is complete either way)
    symbol: str
    changed: list[str] = msgspec.field(default_factory=list)
    ts: int | None = None
    cs: int | None = None
    last_price: Decimal | None = _wire("lastPrice")
    mark_price: Decimal | None = _wire("markPrice")
    index_price: Decimal | None = _wire("indexPrice")
    high_price_24h: Decimal | None = _wire("highPrice24h")
    low_price_24h: Decimal | None = _wire("lowPrice24h")
    prev_price_24h: Decimal | None = _wire("prevPrice24h")
    price_24h_pcnt: Decimal | None = _wire("price24hPcnt")
    volume_24h: Decimal | None = _wire("volume24h")
    turnover_24h: Decimal | None = _wire("turnover24h")
    open_interest: Decimal | None = _wire("openInterest")
    open_interest_value: Decimal | None = _wire("openInterestValue")
    funding_rate: Decimal | None = _wire("fundingRate")
    next_funding_time: int | None = _wire("nextFundingTime")
    bid1_price: Decimal | None = _wire("bid1Price")
    bid1_size: Decimal | None = _wire("bid1Size")
    ask1_price: Decimal | None = _wire("ask1Price")
    ask1_size: Decimal | None = _wire("ask1Size")
    bid_price: Decimal | None = _wire("bidPrice")  # option
    ask_price: Decimal | None = _wire("askPrice")  # option
    mark_price_iv: Decimal | None = _wire("markPriceIv")  # option
    delta: Decimal | None = None  # option
    usd_index_price: Decimal | None = _wire("usdIndexPrice")  # spot


# -- private account data (PROTOCOL.md §9) ----------------------------------------------------------------


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """One element of `order` data (§9.1). Dedup key: (order_id, updated_time, order_status, cum_exec_qty)."""

    order_id: str = msgspec.field(name="orderId")
    category: str | None = None
    symbol: str | None = None
    order_link_id: str | None = _wire("orderLinkId")
    parent_order_link_id: str | None = _wire("parentOrderLinkId")
    is_leverage: str | None = _wire("isLeverage")  # "0" / "1"
    block_trade_id: str | None = _wire("blockTradeId")
    side: str | None = None
    price: Decimal | None = None
    broker_order_price: Decimal | None = _wire("brokerOrderPrice")
    qty: Decimal | None = None
    position_idx: int | None = _wire("positionIdx")
    order_status: str | None = _wire("orderStatus")
    create_type: str | None = _wire("createType")
    cancel_type: str | None = _wire("cancelType")
    reject_reason: str | None = _wire("rejectReason")
    avg_price: Decimal | None = _wire("avgPrice")
    leaves_qty: Decimal | None = _wire("leavesQty")
    leaves_value: Decimal | None = _wire("leavesValue")
    cum_exec_qty: Decimal | None = _wire("cumExecQty")
    cum_exec_value: Decimal | None = _wire("cumExecValue")
    cum_exec_fee: Decimal | None = _wire("cumExecFee")
    cum_fee_detail: dict[str, Decimal | None] | None = _wire("cumFeeDetail")  # coin -> fee
    closed_pnl: Decimal | None = _wire("closedPnl")
    fee_currency: str | None = _wire("feeCurrency")
    time_in_force: str | None = _wire("timeInForce")
    order_type: str | None = _wire("orderType")
    stop_order_type: str | None = _wire("stopOrderType")
    oco_trigger_by: str | None = _wire("ocoTriggerBy")
    order_iv: Decimal | None = _wire("orderIv")
    market_unit: str | None = _wire("marketUnit")
    slippage_tolerance_type: str | None = _wire("slippageToleranceType")
    slippage_tolerance: Decimal | None = _wire("slippageTolerance")
    trigger_price: Decimal | None = _wire("triggerPrice")
    trigger_direction: int | None = _wire("triggerDirection")
    trigger_by: str | None = _wire("triggerBy")
    take_profit: Decimal | None = _wire("takeProfit")
    stop_loss: Decimal | None = _wire("stopLoss")
    tpsl_mode: str | None = _wire("tpslMode")
    tp_limit_price: Decimal | None = _wire("tpLimitPrice")
    sl_limit_price: Decimal | None = _wire("slLimitPrice")
    tp_trigger_by: str | None = _wire("tpTriggerBy")
    sl_trigger_by: str | None = _wire("slTriggerBy")
    last_price_on_created: Decimal | None = _wire("lastPriceOnCreated")
    reduce_only: bool | None = _wire("reduceOnly")
    close_on_trigger: bool | None = _wire("closeOnTrigger")
    place_type: str | None = _wire("placeType")
    smp_type: str | None = _wire("smpType")
    smp_group: int | None = _wire("smpGroup")
    smp_order_id: str | None = _wire("smpOrderId")
    rpi_taker_access: bool | None = _wire("rpiTakerAccess")
    rpi_matched_qty: Decimal | None = _wire("rpiMatchedQty")
    created_time: int | None = _wire("createdTime")
    updated_time: int | None = _wire("updatedTime")


class ExtraFee(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of an execution's `extraFees` (for example a GST on the fee)."""

    fee_coin: str | None = _wire("feeCoin")
    fee_type: str | None = _wire("feeType")
    sub_fee_type: str | None = _wire("subFeeType")
    fee_rate: Decimal | None = _wire("feeRate")
    fee: Decimal | None = None


class Execution(msgspec.Struct, frozen=True, kw_only=True):
    """One fill (or funding, settlement, ...: see `exec_type`) of `execution` data (§9.2). Key: exec_id."""

    exec_id: str = msgspec.field(name="execId")
    category: str | None = None
    symbol: str | None = None
    order_id: str | None = _wire("orderId")
    order_link_id: str | None = _wire("orderLinkId")
    is_leverage: str | None = _wire("isLeverage")
    side: str | None = None
    order_price: Decimal | None = _wire("orderPrice")
    order_qty: Decimal | None = _wire("orderQty")
    leaves_qty: Decimal | None = _wire("leavesQty")
    create_type: str | None = _wire("createType")
    order_type: str | None = _wire("orderType")
    stop_order_type: str | None = _wire("stopOrderType")
    exec_type: str | None = _wire("execType")
    exec_price: Decimal | None = _wire("execPrice")
    exec_qty: Decimal | None = _wire("execQty")
    exec_value: Decimal | None = _wire("execValue")
    exec_fee: Decimal | None = _wire("execFee")
    exec_pnl: Decimal | None = _wire("execPnl")
    exec_time: int | None = _wire("execTime")
    is_maker: bool | None = _wire("isMaker")
    fee_rate: Decimal | None = _wire("feeRate")
    fee_currency: str | None = _wire("feeCurrency")
    extra_fees: list[ExtraFee] | None = _wire("extraFees")  # Bybit sends "" when there are none
    trade_iv: Decimal | None = _wire("tradeIv")
    mark_iv: Decimal | None = _wire("markIv")
    mark_price: Decimal | None = _wire("markPrice")
    index_price: Decimal | None = _wire("indexPrice")
    underlying_price: Decimal | None = _wire("underlyingPrice")
    block_trade_id: str | None = _wire("blockTradeId")
    closed_size: Decimal | None = _wire("closedSize")
    market_unit: str | None = _wire("marketUnit")
    seq: int | None = None


class Position(msgspec.Struct, frozen=True, kw_only=True):
    """One element of `position` data (§9.4). Key: (category, symbol, position_idx).

    Flat is size 0 and side None. Pushed on every order create, amend and cancel, even when nothing changed.
    """

    symbol: str
    category: str | None = None
    position_idx: int | None = _wire("positionIdx")
    side: str | None = None
    size: Decimal | None = None
    position_value: Decimal | None = _wire("positionValue")
    entry_price: Decimal | None = _wire("entryPrice")
    mark_price: Decimal | None = _wire("markPrice")
    break_even_price: Decimal | None = _wire("breakEvenPrice")
    session_avg_price: Decimal | None = _wire("sessionAvgPrice")
    liq_price: Decimal | None = _wire("liqPrice")
    bust_price: Decimal | None = _wire("bustPrice")  # deprecated
    leverage: Decimal | None = None
    risk_id: int | None = _wire("riskId")
    risk_limit_value: Decimal | None = _wire("riskLimitValue")
    auto_add_margin: int | None = _wire("autoAddMargin")
    position_im: Decimal | None = _wire("positionIM")
    position_mm: Decimal | None = _wire("positionMM")
    position_im_by_mp: Decimal | None = _wire("positionIMByMp")
    position_mm_by_mp: Decimal | None = _wire("positionMMByMp")
    position_balance: Decimal | None = _wire("positionBalance")  # deprecated
    take_profit: Decimal | None = _wire("takeProfit")
    stop_loss: Decimal | None = _wire("stopLoss")
    trailing_stop: Decimal | None = _wire("trailingStop")
    tpsl_mode: str | None = _wire("tpslMode")  # deprecated
    trade_mode: int | None = _wire("tradeMode")  # deprecated
    unrealised_pnl: Decimal | None = _wire("unrealisedPnl")
    cur_realised_pnl: Decimal | None = _wire("curRealisedPnl")
    cum_realised_pnl: Decimal | None = _wire("cumRealisedPnl")
    delta: Decimal | None = None
    gamma: Decimal | None = None
    vega: Decimal | None = None
    theta: Decimal | None = None
    position_status: str | None = _wire("positionStatus")
    adl_rank_indicator: int | None = _wire("adlRankIndicator")
    is_reduce_only: bool | None = _wire("isReduceOnly")
    created_time: int | None = _wire("createdTime")
    updated_time: int | None = _wire("updatedTime")
    open_time: int | None = _wire("openTime")
    mmr_sys_updated_time: int | None = _wire("mmrSysUpdatedTime")
    leverage_sys_updated_time: int | None = _wire("leverageSysUpdatedTime")
    seq: int | None = None  # -1 if never traded


class WalletCoin(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a wallet account's `coin` list (§9.5). Attribute names are the database columns'
    (`shared.schema.COIN_DECIMAL_FIELDS`, `COIN_BOOL_FIELDS`)."""

    coin: str
    equity: Decimal | None = None
    usd_value: Decimal | None = _wire("usdValue")
    wallet_balance: Decimal | None = _wire("walletBalance")
    locked: Decimal | None = None
    spot_hedging_qty: Decimal | None = _wire("spotHedgingQty")
    borrow_amount: Decimal | None = _wire("borrowAmount")
    accrued_interest: Decimal | None = _wire("accruedInterest")
    total_order_im: Decimal | None = _wire("totalOrderIM")
    total_position_im: Decimal | None = _wire("totalPositionIM")
    total_position_mm: Decimal | None = _wire("totalPositionMM")
    unrealised_pnl: Decimal | None = _wire("unrealisedPnl")
    cum_realised_pnl: Decimal | None = _wire("cumRealisedPnl")
    bonus: Decimal | None = None
    spot_borrow: Decimal | None = _wire("spotBorrow")
    available_to_withdraw: Decimal | None = _wire("availableToWithdraw")  # deprecated
    available_to_borrow: Decimal | None = _wire("availableToBorrow")  # deprecated
    free: Decimal | None = None  # deprecated
    collateral_switch: bool | None = _wire("collateralSwitch")
    margin_collateral: bool | None = _wire("marginCollateral")
    col_res: str | None = _wire("colRes")


class WalletAccount(msgspec.Struct, frozen=True, kw_only=True):
    """One element of `wallet` data (§9.5): account totals and the coins. Attribute names are the database
    columns' (`shared.schema.ACCOUNT_DECIMAL_FIELDS`). `coin` may list only the changed coins: upsert each."""

    account_type: str = msgspec.field(name="accountType")
    coin: list[WalletCoin] = msgspec.field(default_factory=list)
    total_equity: Decimal | None = _wire("totalEquity")
    total_wallet_balance: Decimal | None = _wire("totalWalletBalance")
    total_margin_balance: Decimal | None = _wire("totalMarginBalance")
    total_available_balance: Decimal | None = _wire("totalAvailableBalance")
    total_perp_upl: Decimal | None = _wire("totalPerpUPL")
    total_initial_margin: Decimal | None = _wire("totalInitialMargin")
    total_initial_margin_by_mp: Decimal | None = _wire("totalInitialMarginByMp")
    total_maintenance_margin: Decimal | None = _wire("totalMaintenanceMargin")
    total_maintenance_margin_by_mp: Decimal | None = _wire("totalMaintenanceMarginByMp")
    account_im_rate: Decimal | None = _wire("accountIMRate")
    account_im_rate_by_mp: Decimal | None = _wire("accountIMRateByMp")
    account_mm_rate: Decimal | None = _wire("accountMMRate")
    account_mm_rate_by_mp: Decimal | None = _wire("accountMMRateByMp")
    account_ltv: Decimal | None = _wire("accountLTV")  # deprecated
