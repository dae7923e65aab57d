"""Builders of private account pushes (`order`, `execution`, `execution.fast`, `position`, `wallet`,
`greeks`) in the shapes of `samples/private_*.json`, with fresh ids and times on every call.

Pure: no I/O; time comes from the injected `clock_ms`, ids from the injected `random.Random`. A builder
returns the message with the all-in-one topic (`order`); the server rewrites `topic` to whatever each
connection subscribed (`order.linear`), see PROTOCOL.md §9 (UNCONFIRMED which one Bybit sends).
Private messages have no `ts` and no `type` (§9); `*Time` fields are ms in strings (§11).
"""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from tests.fake_bybit.samples import Samples

JsonObject = dict[str, Any]

ACCOUNT_KINDS = ("order", "execution", "execution.fast", "position", "wallet", "greeks")


class AccountFactory:
    """Makes private pushes. Remembers orders and positions so follow-ups stay consistent."""

    def __init__(self, samples: Samples, rng: random.Random, clock_ms: Callable[[], int]) -> None:
        self._rng = rng
        self._clock_ms = clock_ms
        self._templates = {kind: samples.get(f"private_{kind.replace('.', '_')}") for kind in ACCOUNT_KINDS}
        self._uid = rng.randint(100_000_000, 999_999_999)
        self._last_ms = 0
        self._seq = rng.randint(10_000_000_000, 90_000_000_000)
        self._order_created: dict[str, str] = {}
        self._positions: dict[tuple[str, str, int], JsonObject] = {}

    def build(self, kind: str, **kwargs: Any) -> JsonObject:
        """One push of `kind` (see ACCOUNT_KINDS); keyword arguments go to that kind's builder."""
        builders: dict[str, Callable[..., JsonObject]] = {
            "order": self.order,
            "execution": self.execution,
            "execution.fast": self.execution_fast,
            "position": self.position,
            "wallet": self.wallet,
            "greeks": self.greeks,
        }
        if kind not in builders:
            raise ValueError(f"unknown account push {kind!r}; expected one of {ACCOUNT_KINDS}")
        return builders[kind](**kwargs)

    # ---- order ---------------------------------------------------------------------------------
    def order(
        self,
        *,
        category: str = "linear",
        symbol: str = "BTCUSDT",
        status: str = "New",
        side: str = "Buy",
        qty: str = "0.01",
        price: str = "30000",
        cum_exec_qty: str | None = None,
        order_id: str | None = None,
        order_link_id: str = "",
        **fields: Any,
    ) -> JsonObject:
        """An `order` push; sizes follow `status` unless `cum_exec_qty` or `fields` say otherwise."""
        order_id = order_id or self._uuid()
        now = self._now_text()
        created = self._order_created.setdefault(order_id, now)
        quantity, limit = Decimal(qty), Decimal(price)
        filled = Decimal(cum_exec_qty) if cum_exec_qty is not None else _filled_for(status, quantity)
        leaves = Decimal(0) if status in ("Filled", "Cancelled", "Rejected", "Deactivated") else quantity - filled
        row = self._row("order")
        row.update(
            category=category,
            symbol=symbol,
            orderId=order_id,
            orderLinkId=order_link_id,
            side=side,
            orderType="Limit",
            price=price,
            qty=qty,
            timeInForce="GTC",
            orderStatus=status,
            cancelType="CancelByUser" if status == "Cancelled" else "UNKNOWN",
            rejectReason="EC_NoError",
            leavesQty=_text(leaves),
            leavesValue=_text(leaves * limit),
            cumExecQty=_text(filled),
            cumExecValue=_text(filled * limit),
            cumExecFee=_text(filled * limit * Decimal("0.00055")),
            avgPrice=price if filled else "",
            createdTime=created,
            updatedTime=now,
        )
        if category not in ("spot", "option"):
            row["createType"] = "CreateByUser"  # §9.1: not on spot or option
        row.update(fields)
        return self._envelope("order", [row])

    def duplicate_filled(self, **kwargs: Any) -> list[JsonObject]:
        """§9.1: a cancel racing a fill yields two `Filled` pushes for one order; the second carries the
        failed cancel (`CancelByUser`, `EC_OrigClOrdIDDoesNotExist`)."""
        kwargs.setdefault("order_id", self._uuid())
        first = self.order(status="Filled", **kwargs)
        second = self.order(
            status="Filled", cancelType="CancelByUser", rejectReason="EC_OrigClOrdIDDoesNotExist", **kwargs
        )
        return [first, second]

    # ---- executions ----------------------------------------------------------------------------
    def execution(
        self,
        *,
        category: str = "linear",
        symbol: str = "BTCUSDT",
        fills: int = 1,
        side: str = "Buy",
        qty: str = "0.01",
        price: str = "30000",
        order_id: str | None = None,
        exec_type: str = "Trade",
        **fields: Any,
    ) -> JsonObject:
        """An `execution` push with `fills` fills of `qty` each for one order, each with its own execId."""
        order_id = order_id or self._uuid()
        now = self._now_text()
        self._seq += self._rng.randint(1, 1000)
        quantity, fill_price = Decimal(qty), Decimal(price)
        order_qty = quantity * fills
        rows = []
        for number in range(1, fills + 1):
            row = self._row("execution")
            value = quantity * fill_price
            row.update(
                category=category,
                symbol=symbol,
                orderId=order_id,
                side=side,
                orderPrice=price,
                orderQty=_text(order_qty),
                leavesQty=_text(order_qty - quantity * number),
                orderType="Limit",
                execId=self._uuid(),
                execPrice=price,
                execQty=qty,
                execValue=_text(value),
                execFee=_text(value * Decimal("0.00055")),
                execType=exec_type,
                execTime=now,
                markPrice=price,
                closedSize="0",
                execPnl="0",
                seq=self._seq,  # fills matched together share seq (§9.2)
            )
            row.update(fields)
            rows.append(row)
        message = self._envelope("execution", rows)
        message["id"] = f"{self._uid}_{symbol}_{self._seq}"  # the sample's id shape
        return message

    def execution_fast(
        self,
        *,
        category: str = "linear",
        symbol: str = "BTCUSDT",
        side: str = "Buy",
        qty: str = "0.01",
        price: str = "30000",
        order_id: str | None = None,
        **fields: Any,
    ) -> JsonObject:
        """An `execution.fast` push (§9.3): one Trade fill, few fields, no `id` (as in the docs' example)."""
        self._seq += self._rng.randint(1, 1000)
        row = self._row("execution.fast")
        row.update(
            category=category,
            symbol=symbol,
            execId=self._uuid(),
            execPrice=price,
            execQty=qty,
            orderId=order_id or self._uuid(),
            orderLinkId="",
            side=side,
            execTime=self._now_text(),
            seq=self._seq,
        )
        row.update(fields)
        return self._envelope("execution.fast", [row])

    # ---- position, wallet, greeks --------------------------------------------------------------
    def position(
        self,
        *,
        category: str = "linear",
        symbol: str = "BTCUSDT",
        size: str = "0.01",
        side: str = "Buy",
        entry_price: str = "30000",
        position_idx: int = 0,
        noop: bool = False,
        **fields: Any,
    ) -> JsonObject:
        """A `position` push. `noop=True` repeats the last state of that position unchanged (§9.4: Bybit
        pushes one on every order create, amend and cancel even when nothing changed)."""
        key = (category, symbol, position_idx)
        if noop and key in self._positions:
            return self._envelope("position", [dict(self._positions[key])])
        self._seq += self._rng.randint(1, 1000)
        row = self._row("position")
        flat = Decimal(size) == 0
        row.update(
            category=category,
            symbol=symbol,
            positionIdx=position_idx,
            side="" if flat else side,  # a closed position is size "0" with side "" (§9.4)
            size=size,
            entryPrice="0" if flat else entry_price,
            positionValue=_text(Decimal(size) * Decimal(entry_price)),
            markPrice=entry_price,
            updatedTime=self._now_text(),
            seq=self._seq,
        )
        row.update(fields)
        self._positions[key] = row
        return self._envelope("position", [dict(row)])

    def wallet(self, *, coins: Mapping[str, str] | None = None, **fields: Any) -> JsonObject:
        """A `wallet` push for the UNIFIED account; `coins` maps coin -> balance (valued 1:1 in USD)."""
        balances = {"USDT": "10000"} if coins is None else dict(coins)
        row = self._row("wallet")
        coin_template = row["coin"][0]
        rows = []
        for coin, balance in balances.items():
            entry = dict(coin_template)
            entry.update(coin=coin, equity=balance, walletBalance=balance, usdValue=balance, locked="0")
            rows.append(entry)
        total = _text(sum((Decimal(balance) for balance in balances.values()), Decimal(0)))
        row.update(
            coin=rows,
            totalEquity=total,
            totalWalletBalance=total,
            totalMarginBalance=total,
            totalAvailableBalance=total,
        )
        row.update(fields)
        return self._envelope("wallet", [row])

    def greeks(self, *, base_coin: str = "BTC", **fields: Any) -> JsonObject:
        row = self._row("greeks")
        row.update(baseCoin=base_coin)
        row.update(fields)
        return self._envelope("greeks", [row])

    # ---- internals -----------------------------------------------------------------------------
    def _row(self, kind: str) -> JsonObject:
        row: JsonObject = copy.deepcopy(self._templates[kind]["data"][0])
        return row

    def _envelope(self, kind: str, rows: list[JsonObject]) -> JsonObject:
        message = dict(self._templates[kind])
        message.update(topic=kind, creationTime=int(self._now_text()), data=rows)
        if "id" in message:
            message["id"] = f"{self._uid}{self._uuid()}"
        return message

    def _now_text(self) -> str:
        # Strictly increasing, so two pushes in one millisecond still order by updatedTime (§9.1).
        self._last_ms = max(self._clock_ms(), self._last_ms + 1)
        return str(self._last_ms)

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))


def _filled_for(status: str, quantity: Decimal) -> Decimal:
    if status == "Filled":
        return quantity
    if status in ("PartiallyFilled", "PartiallyFilledCanceled"):
        return quantity / 2
    return Decimal(0)


def _text(number: Decimal) -> str:
    """Decimal as Bybit prints it: plain digits, no exponent, no trailing zeros."""
    if number == 0:
        return "0"
    return f"{number.normalize():f}"
