"""Turns a validated subscription request into the exact Bybit v5 topic (PROTOCOL.md §6, §9).

Every rule about which channel exists on which category lives here, so the API can refuse a bad request
with a 400 that names the field, and the worker never sends Bybit a topic it would reject for its shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import msgspec

from shared.enums import Category, ChannelType, Endpoint

# Depths Bybit offers per category (§6.2). Level 500 was removed in 2025-09 and 1000 added in 2025-08.
BOOK_DEPTHS: Mapping[Category, tuple[int, ...]] = {
    Category.SPOT: (1, 50, 200, 1000),
    Category.LINEAR: (1, 50, 200, 1000),
    Category.INVERSE: (1, 50, 200, 1000),
    Category.OPTION: (25, 100),
}
DEFAULT_DEPTH: Mapping[Category, int] = {
    Category.SPOT: 50,
    Category.LINEAR: 50,
    Category.INVERSE: 50,
    Category.OPTION: 25,  # option books have no level 50
}
KLINE_INTERVALS: tuple[str, ...] = (
    "1",
    "3",
    "5",
    "15",
    "30",
    "60",
    "120",
    "240",
    "360",
    "720",
    "D",
    "W",
    "M",
)
# Option klines are not documented (§6.4, UNCONFIRMED), so we do not offer them.
KLINE_CATEGORIES: tuple[Category, ...] = (Category.SPOT, Category.LINEAR, Category.INVERSE)
LIQUIDATION_CATEGORIES: tuple[Category, ...] = (Category.LINEAR, Category.INVERSE)
POSITION_CATEGORIES: tuple[Category, ...] = (Category.LINEAR, Category.INVERSE, Category.OPTION)

# Bybit symbols are upper-case letters and digits; futures and options add dash-separated parts
# (BTC-26DEC25, BTC-27DEC24-100000-C-USDT).
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,30}(?:-[A-Z0-9]{1,20}){0,4}$")
BASE_COIN_PATTERN = re.compile(r"^[A-Z0-9]{2,20}$")

_PRIVATE_TOPIC_ROOT: Mapping[ChannelType, str] = {
    ChannelType.ORDER: "order",
    ChannelType.EXECUTION: "execution",
    ChannelType.POSITION: "position",
    ChannelType.BALANCE: "wallet",
}


class TopicError(ValueError):
    """A request that names no valid Bybit topic; says which field is wrong and what is allowed."""

    def __init__(self, field: str, message: str, allowed: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.allowed = list(allowed) if allowed is not None else None


class TopicSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Where a subscription lives on Bybit and what it is called there."""

    channel_type: ChannelType
    endpoint: Endpoint
    topic: str
    category: Category | None  # None for all-in-one private topics and the wallet
    symbol: str | None
    params: dict[str, str | int]


def topic_for(
    channel_type: ChannelType,
    *,
    symbol: str | None = None,
    category: Category | None = None,
    depth: int | None = None,
    interval: str | int | None = None,
) -> TopicSpec:
    """Validate one request's fields together and return the Bybit topic they name."""
    if channel_type.is_private:
        return _private_topic(channel_type, symbol=symbol, category=category, depth=depth, interval=interval)
    return _public_topic(channel_type, symbol=symbol, category=category, depth=depth, interval=interval)


def _public_topic(
    channel_type: ChannelType,
    *,
    symbol: str | None,
    category: Category | None,
    depth: int | None,
    interval: str | int | None,
) -> TopicSpec:
    category = category or Category.LINEAR
    if symbol is None or not symbol.strip():
        raise TopicError("symbol", f"channel_type '{channel_type}' needs a symbol")
    symbol = symbol.strip().upper()
    if depth is not None and channel_type is not ChannelType.ORDERBOOK:
        raise TopicError("depth", f"depth applies only to channel_type 'orderbook', not '{channel_type}'")
    if interval is not None and channel_type is not ChannelType.KLINE:
        raise TopicError("interval", f"interval applies only to channel_type 'kline', not '{channel_type}'")

    params: dict[str, str | int] = {}
    if channel_type is ChannelType.TRADES:
        if category is Category.OPTION:
            # Option trades are published per base coin (§6.1): publicTrade.BTC carries every BTC option.
            _check_symbol(symbol, BASE_COIN_PATTERN, "option trades are per base coin, e.g. 'BTC'")
        else:
            _check_symbol(symbol, SYMBOL_PATTERN)
        topic = f"publicTrade.{symbol}"
    elif channel_type is ChannelType.TICKER:
        _check_symbol(symbol, SYMBOL_PATTERN)
        topic = f"tickers.{symbol}"
    elif channel_type is ChannelType.ORDERBOOK:
        _check_symbol(symbol, SYMBOL_PATTERN)
        allowed = BOOK_DEPTHS[category]
        chosen = DEFAULT_DEPTH[category] if depth is None else depth
        if chosen not in allowed:
            raise TopicError(
                "depth",
                f"depth {chosen} is not offered for category '{category}'",
                [str(d) for d in allowed],
            )
        params["depth"] = chosen
        topic = f"orderbook.{chosen}.{symbol}"
    elif channel_type is ChannelType.KLINE:
        _check_symbol(symbol, SYMBOL_PATTERN)
        if category not in KLINE_CATEGORIES:
            raise TopicError("category", f"kline is not offered for category '{category}'", list(KLINE_CATEGORIES))
        if interval is None:
            raise TopicError("interval", "channel_type 'kline' needs an interval", list(KLINE_INTERVALS))
        chosen_interval = str(interval).strip().upper()
        if chosen_interval not in KLINE_INTERVALS:
            raise TopicError("interval", f"interval '{interval}' is not offered", list(KLINE_INTERVALS))
        params["interval"] = chosen_interval
        topic = f"kline.{chosen_interval}.{symbol}"
    elif channel_type is ChannelType.LIQUIDATION:
        _check_symbol(symbol, SYMBOL_PATTERN)
        if category not in LIQUIDATION_CATEGORIES:
            raise TopicError(
                "category",
                f"liquidation is not offered for category '{category}'",
                list(LIQUIDATION_CATEGORIES),
            )
        topic = f"allLiquidation.{symbol}"
    else:  # pragma: no cover - every public channel is handled above
        raise TopicError("channel_type", f"unsupported channel_type '{channel_type}'")
    return TopicSpec(
        channel_type=channel_type,
        endpoint=Endpoint(category.value),
        topic=topic,
        category=category,
        symbol=symbol,
        params=params,
    )


def _private_topic(
    channel_type: ChannelType,
    *,
    symbol: str | None,
    category: Category | None,
    depth: int | None,
    interval: str | int | None,
) -> TopicSpec:
    for field, value in (("symbol", symbol), ("depth", depth), ("interval", interval)):
        if value is not None:
            raise TopicError(field, f"{field} does not apply to the private channel '{channel_type}'")
    root = _PRIVATE_TOPIC_ROOT[channel_type]
    if category is None:
        # The all-in-one form (§9): every category on one topic.
        return TopicSpec(
            channel_type=channel_type,
            endpoint=Endpoint.PRIVATE,
            topic=root,
            category=None,
            symbol=None,
            params={},
        )
    if channel_type is ChannelType.BALANCE:
        raise TopicError("category", "channel_type 'balance' takes no category: the wallet covers the account")
    if channel_type is ChannelType.POSITION and category not in POSITION_CATEGORIES:
        raise TopicError("category", f"position is not offered for category '{category}'", list(POSITION_CATEGORIES))
    return TopicSpec(
        channel_type=channel_type,
        endpoint=Endpoint.PRIVATE,
        topic=f"{root}.{category}",
        category=category,
        symbol=None,
        params={},
    )


def _check_symbol(symbol: str, pattern: re.Pattern[str], hint: str | None = None) -> None:
    if not pattern.fullmatch(symbol):
        raise TopicError("symbol", f"'{symbol}' is not a Bybit symbol" + (f": {hint}" if hint else ""))


def bybit_topic(endpoint: Endpoint, topic: str) -> str:
    """The topic the worker subscribes on Bybit for a subscription's topic.

    A categorised private topic (`order.linear`) is served by its all-in-one form (`order`): Bybit says the
    two forms "cannot be in the same subscription request", and holding both for two services would push
    each update twice or fail one of them (AUDIT B7). The all-in-one form carries every category; each event
    is routed by its own `category`, so a service bound to `order.linear` gets exactly its share, once.
    """
    if endpoint is Endpoint.PRIVATE:
        return topic.partition(".")[0]
    return topic
