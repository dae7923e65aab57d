"""Which REST queries a re-sync sends, per channel and category: pure, no I/O, no clock.

- Limits are each endpoint's documented maximum: orders "[`1`, `50`]", positions "[`1`, `200`]", executions
  "[`1`, `100`]" (open-order.mdx, position.mdx, execution.mdx).
- Linear lists need a settle coin: "For **linear**, either `symbol`, `baseCoin`, `settleCoin` is **required**".
- Option executions are per base coin: `baseCoin` "For type `option`, default value is BTC" (execution.mdx),
  so without one an ETH option fill is never listed.
- Executions come in windows: "If both are passed, the rule is endTime - startTime <= 7 days". A gap that
  began before `max_lookback_ms` cannot be fetched whole: the caller reports `window_exceeded`.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.enums import Category, ChannelType

LINEAR_SETTLE_COINS = ("USDT", "USDC")
WEEK_MS = 7 * 24 * 3600 * 1000
EXECUTION_MARGIN_MS = 60_000  # fetch executions from a minute before the last frame: clocks and queues differ
LIMITS = {ChannelType.ORDER: "50", ChannelType.POSITION: "200", ChannelType.EXECUTION: "100"}
LIST_PATHS = {
    ChannelType.ORDER: "/v5/order/realtime",
    ChannelType.POSITION: "/v5/position/list",
    ChannelType.EXECUTION: "/v5/execution/list",
}
ORDER_HISTORY_PATH = "/v5/order/history"
WALLET_PATH = "/v5/account/wallet-balance"


def list_queries(channel: ChannelType, category: Category) -> list[dict[str, str]]:
    """Queries for the current state of orders or positions of `category` (not executions)."""
    base = {"category": category.value, "limit": LIMITS[channel]}
    if category is Category.LINEAR:
        return [base | {"settleCoin": coin} for coin in LINEAR_SETTLE_COINS]
    return [base]


def execution_windows(
    since_ms: int | None, now_ms: int, *, max_lookback_ms: int = WEEK_MS
) -> tuple[list[tuple[int, int]], bool]:
    """[startTime, endTime] windows covering the gap, oldest first, and whether the gap reached past
    `max_lookback_ms` (then the windows start at the limit). No windows means Bybit's default (7 days)."""
    if since_ms is None:
        return [], False
    end_limit = now_ms + EXECUTION_MARGIN_MS
    floor = end_limit - max_lookback_ms
    start = since_ms - EXECUTION_MARGIN_MS
    exceeded = start < floor
    start = max(start, floor)
    windows = []
    while start < end_limit:
        end = min(start + WEEK_MS, end_limit)
        windows.append((start, end))
        start = end + 1
    return windows, exceeded


def execution_queries(
    category: Category, windows: list[tuple[int, int]], option_base_coins: Iterable[str]
) -> list[dict[str, str]]:
    base = {"category": category.value, "limit": LIMITS[ChannelType.EXECUTION]}
    scopes = (
        [base | {"baseCoin": coin} for coin in sorted(set(option_base_coins))]
        if category is Category.OPTION
        else [base]
    )
    if not windows:
        return scopes
    return [scope | {"startTime": str(start), "endTime": str(end)} for scope in scopes for start, end in windows]


def order_history_queries(category: Category, windows: list[tuple[int, int]]) -> list[dict[str, str]]:
    """Closed orders of `category` updated within each window (the gap), at the documented maximum page."""
    base = {"category": category.value, "limit": LIMITS[ChannelType.ORDER]}
    scopes = [base | {"settleCoin": coin} for coin in LINEAR_SETTLE_COINS] if category is Category.LINEAR else [base]
    return [scope | {"startTime": str(start), "endTime": str(end)} for scope in scopes for start, end in windows]


def option_base_coin(symbol: str) -> str:
    """`BTC` of `BTC-30DEC26-100000-C`."""
    return symbol.split("-", 1)[0]
