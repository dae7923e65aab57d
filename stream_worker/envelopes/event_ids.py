"""Event ids, and the few fields of each Bybit data item they are derived from.

An event id is built from Bybit's own ids, so a consumer can drop duplicates across reconnects and replays.
Each item of a push is read twice, cheaply: once as raw bytes (the payload, see `normalize`) and once into a
view struct below that names only the fields the id and the envelope need. Parts are rendered as Bybit sent
them (`updatedTime` stays its ms string, `cumExecQty` its decimal string); a missing part renders empty;
booleans render as `true`/`false`.

| channel     | event_id                                                              | one event per  |
|-------------|-----------------------------------------------------------------------|----------------|
| trades      | `trades:{category}:{topic symbol}:{i}`                                | trade          |
| ticker      | `ticker:{category}:{topic}:{cs}:{ts}`                                 | push           |
| orderbook   | `orderbook:{category}:{topic}:{u}:{seq}:{type}`                       | push           |
| kline       | `kline:{category}:{topic}:{start}:{timestamp}:{confirm}`              | candle         |
| liquidation | `liquidation:{category}:{s}:{T}:{S}:{p}:{v}`                          | liquidation    |
| order       | `order:{orderId}:{updatedTime}:{orderStatus}:{cumExecQty}`            | order update   |
| execution   | `execution:{execId}`                                                  | execution      |
| position    | `position:{category}:{symbol}:{positionIdx}:{updatedTime}:{seq}`      | position       |
| balance     | `balance:{message id}:{accountType}:{coin}`                           | wallet coin    |

- order: PROTOCOL.md §9.1's dedup key. The two `Filled` messages of a fill/cancel race share it, and they
  are duplicates. execution: `execId` is Bybit's unique fill id (§9.2).
- trades: option trades use the topic's base coin (`trades:option:BTC:{i}`); the trade id is unique anyway.
  Never key trades on `seq`: one `seq` spans several messages (§12).
- ticker: option tickers carry no `cs`, so that part is empty and `ts` tells them apart.
- orderbook: `u` starts again at 1 when Bybit restarts a book, so `u` alone repeats; `seq` (the cross sequence)
  never goes back, so the pair names one update across restarts.
- balance: the wallet message's `id` (opaque, §9) names the message; account type and coin name the entry.

Pure: no I/O.
"""

from __future__ import annotations

import msgspec

from stream_worker.bybit.events import Push


def id_part(value: object) -> str:
    """One part of an event id: as sent, empty when missing, JSON spelling for booleans."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- public market data -----------------------------------------------------------------------------------


class TradeView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    trade_id: str = msgspec.field(name="i")
    time: int | None = msgspec.field(default=None, name="T")


class KlineView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    start: int
    timestamp: int | None = None
    confirm: bool | None = None


class LiquidationView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    time: int = msgspec.field(name="T")
    symbol: str = msgspec.field(name="s")
    side: str = msgspec.field(name="S")
    price: str = msgspec.field(name="p")  # the decimal string as sent, for the id
    size: str = msgspec.field(name="v")


def trade_id_prefix(category: str, symbol: str) -> str:
    """Everything of a trade's event id but the trade id, shared by every trade of a push."""
    return f"trades:{category}:{symbol}:"


def kline_event_id(category: str, topic: str, kline: KlineView) -> str:
    return f"kline:{category}:{topic}:{kline.start}:{id_part(kline.timestamp)}:{id_part(kline.confirm)}"


def liquidation_event_id(category: str, item: LiquidationView) -> str:
    return f"liquidation:{category}:{item.symbol}:{item.time}:{item.side}:{item.price}:{item.size}"


def book_event_id(category: str, topic: str, update_id: int, seq: int | None, kind: str) -> str:
    """`kind` is what we publish: "snapshot" or "delta" (a u == 1 restart is published as a snapshot)."""
    return f"orderbook:{category}:{topic}:{update_id}:{id_part(seq)}:{kind}"


def ticker_event_id(category: str, push: Push) -> str:
    return f"ticker:{category}:{push.topic}:{id_part(push.cs)}:{id_part(push.ts)}"


# -- private account data ---------------------------------------------------------------------------------


class AccountView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What every order, execution and position item carries for the envelope."""

    category: str | None = None
    symbol: str | None = None


class OrderView(AccountView, frozen=True, kw_only=True, gc=False):
    order_id: str = msgspec.field(name="orderId")
    updated_time: str | int | None = msgspec.field(default=None, name="updatedTime")
    order_status: str | None = msgspec.field(default=None, name="orderStatus")
    cum_exec_qty: str | None = msgspec.field(default=None, name="cumExecQty")


class ExecutionView(AccountView, frozen=True, kw_only=True, gc=False):
    exec_id: str = msgspec.field(name="execId")


class PositionView(AccountView, frozen=True, kw_only=True, gc=False):
    symbol: str
    position_idx: int | None = msgspec.field(default=None, name="positionIdx")
    updated_time: str | int | None = msgspec.field(default=None, name="updatedTime")
    seq: int | None = None


class WalletView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    account_type: str = msgspec.field(name="accountType")
    coins: list[msgspec.Raw] = msgspec.field(default_factory=list, name="coin")


class CoinView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    coin: str


def order_event_id(item: OrderView, category: str) -> str:
    status, qty = id_part(item.order_status), id_part(item.cum_exec_qty)
    return f"order:{item.order_id}:{id_part(item.updated_time)}:{status}:{qty}"


def execution_event_id(item: ExecutionView, category: str) -> str:
    return f"execution:{item.exec_id}"


def position_event_id(item: PositionView, category: str) -> str:
    index, updated, seq = id_part(item.position_idx), id_part(item.updated_time), id_part(item.seq)
    return f"position:{category}:{item.symbol}:{index}:{updated}:{seq}"


def balance_event_id(message_id: str, account_type: str, coin: str) -> str:
    return f"balance:{message_id}:{account_type}:{coin}"
