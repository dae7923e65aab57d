"""The account as the fake's private pushes described it: what the REST endpoints (rest.py) answer from.

Every private push the fake builds is recorded here, even when nobody is connected, so a test changes the
account "while the gateway was away" by pushing. Wallet coins are kept per coin (a push that lists a coin at
"0" zeroes it), orders by id, positions by (category, symbol, positionIdx), executions in arrival order.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

JsonObject = dict[str, Any]

OPEN_STATUSES = frozenset({"New", "PartiallyFilled", "Untriggered"})
# `Cancelled`, `Rejected` and `Deactivated` end an order without fills; order history keeps them 24 hours.
UNFILLED_END_STATUSES = frozenset({"Cancelled", "Rejected", "Deactivated"})
_QUOTES = ("USDT", "USDC", "PERP", "USD", "BTC", "ETH", "EUR")


def settle_coin(category: str, symbol: str) -> str:
    """The coin a contract settles in, from its name (the fake lists no instruments)."""
    if category == "inverse":
        return base_coin(category, symbol)
    if category == "option":
        return "USDT" if symbol.endswith("-USDT") else "USDC"
    if symbol.endswith("USDT"):
        return "USDT"
    return "USDC"  # BTCPERP, BTCUSDC, BTC-27DEC24 (USDC futures)


def base_coin(category: str, symbol: str) -> str:
    if category == "option" or "-" in symbol:
        return symbol.split("-", 1)[0]
    for quote in _QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)]
    return symbol


def is_zero(value: Any) -> bool:
    """A decimal string that is 0 (missing and empty count as 0, as Bybit prints "" for "none")."""
    if value in (None, ""):
        return True
    try:
        return Decimal(str(value)) == 0
    except InvalidOperation:
        return False


@dataclass
class AccountLedger:
    accounts: dict[str, JsonObject] = field(default_factory=dict)  # accountType -> latest row without coins
    coins: dict[str, dict[str, JsonObject]] = field(default_factory=dict)  # accountType -> coin -> row
    orders: dict[str, JsonObject] = field(default_factory=dict)  # orderId -> latest order row
    positions: dict[tuple[str, str, int], JsonObject] = field(default_factory=dict)
    executions: list[JsonObject] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # paths of every REST request, signed or not
    queries: list[str] = field(default_factory=list)  # path?query of every REST request, as sent

    def record(self, message: Mapping[str, Any]) -> None:
        kind = str(message.get("topic", "")).split(".", 1)[0]
        for row in message.get("data", []):
            if kind == "wallet":
                account_type = row["accountType"]
                self.accounts[account_type] = {key: value for key, value in row.items() if key != "coin"}
                held = self.coins.setdefault(account_type, {})
                for coin in row.get("coin", []):
                    held[coin["coin"]] = dict(coin)
            elif kind == "order":
                self.orders[row["orderId"]] = dict(row)
            elif kind == "position":
                self.positions[(row["category"], row["symbol"], int(row["positionIdx"]))] = dict(row)
            elif kind == "execution" and "execType" in row:  # execution.fast rows are a thinner copy
                self.executions.append(dict(row))

    def wallet_row(self, account_type: str, coins: list[JsonObject]) -> JsonObject | None:
        account = self.accounts.get(account_type)
        return None if account is None else {**account, "coin": coins}

    @property
    def wallets(self) -> dict[str, JsonObject]:
        """accountType -> the account row with every coin ever pushed (zeros included): what the stream said."""
        return {
            account_type: {**row, "coin": list(self.coins.get(account_type, {}).values())}
            for account_type, row in self.accounts.items()
        }
