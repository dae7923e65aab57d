"""Which topics exist on which endpoint, and the texts the fake answers when a subscribe is refused.

Pure: no I/O. The validity rules follow PROTOCOL.md §6 (public) and §9 (private); any topic outside them
is refused with `error:handler not found,...` as Bybit does for unknown names and depths (§5.3). Topics
Bybit has but the fake does not generate (`orderbook.rpi`, `orderbook.full`, `insurance`, the deprecated
`liquidation`, ...) are refused the same way, so a test never subscribes to something that stays silent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Category = Literal["spot", "linear", "inverse", "option"]
Endpoint = Literal["spot", "linear", "inverse", "option", "private"]

PUBLIC_CATEGORIES: tuple[Category, ...] = ("spot", "linear", "inverse", "option")
ENDPOINTS: tuple[Endpoint, ...] = ("spot", "linear", "inverse", "option", "private")

BOOK_DEPTHS: dict[Category, frozenset[int]] = {
    "spot": frozenset({1, 50, 200, 1000}),
    "linear": frozenset({1, 50, 200, 1000}),
    "inverse": frozenset({1, 50, 200, 1000}),
    "option": frozenset({25, 100}),
}
KLINE_INTERVALS = ("1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M")

# §5.2 limits.
SPOT_MAX_ARGS_PER_REQUEST = 10
PUBLIC_MAX_ARGS_CHARS = 21_000
OPTION_MAX_TOPICS = 2_000

# §9: all-in-one private topics and their category forms.
PRIVATE_CATEGORY_TOPICS: dict[str, tuple[str, ...]] = {
    "order": ("spot", "linear", "inverse", "option"),
    "execution": ("spot", "linear", "inverse", "option"),
    "execution.fast": ("spot", "linear", "inverse", "option"),
    "position": ("linear", "inverse", "option"),
}
PRIVATE_PLAIN_TOPICS = frozenset({"wallet", "greeks", "dcp.future", "dcp.spot", "dcp.option"})

# Texts. CAP: seen from Bybit (§12.1). The others are UNCONFIRMED and invented to be clear.
ARGS_SIZE_SPOT = "args size >10"  # CAP
AUTH_FAILED = "Params Error"  # CAP
NOT_AUTHORIZED = "Request not authorized"  # UNCONFIRMED (third-party client)
ARGS_CHARS_EXCEEDED = "error:args length >21000"  # UNCONFIRMED
OPTION_TOPICS_EXCEEDED = "error:topics size >2000"  # UNCONFIRMED
INVALID_OP = "error:invalid op"  # legacy CAP, UNCONFIRMED on v5
INVALID_REQUEST = "error:invalid request"  # UNCONFIRMED: a frame that is not a JSON object
INVALID_ARGS = "error:invalid args"  # UNCONFIRMED: args missing or not a list of strings
REPEAT_AUTH = "repeat auth"  # UNCONFIRMED: borrowed from order entry (retCode 20001)


def handler_not_found(topic: str) -> str:
    return f"error:handler not found,topic:{topic}"  # CAP


def already_subscribed(topic: str) -> str:
    return f"error:already subscribed,topic:{topic}"  # CAP


def all_in_one_conflict(topic: str) -> str:
    return f"error:all-in-one and category topics in one request,topic:{topic}"  # UNCONFIRMED


_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9-]*$")
_BASE_COIN = re.compile(r"^[A-Z0-9]+$")


@dataclass(frozen=True, kw_only=True)
class PublicTopic:
    """A public topic the fake knows how to generate, parsed."""

    name: str
    kind: Literal["orderbook", "tickers", "publicTrade", "kline", "allLiquidation"]
    symbol: str  # the base coin for option `publicTrade`
    depth: int = 0
    interval: str = ""


def parse_public_topic(category: Category, topic: str) -> PublicTopic | None:
    """The parsed topic, or None when `category`'s endpoint has no handler for it."""
    parts = topic.split(".")
    kind = parts[0]
    if kind == "orderbook" and len(parts) == 3 and parts[1].isdigit():
        depth = int(parts[1])
        if depth in BOOK_DEPTHS[category] and _SYMBOL.match(parts[2]):
            return PublicTopic(name=topic, kind="orderbook", symbol=parts[2], depth=depth)
        return None
    if kind == "kline" and len(parts) == 3:
        if category != "option" and parts[1] in KLINE_INTERVALS and _SYMBOL.match(parts[2]):
            return PublicTopic(name=topic, kind="kline", symbol=parts[2], interval=parts[1])
        return None
    if len(parts) != 2:
        return None
    symbol = parts[1]
    if kind == "publicTrade":
        # §6.1: option trades are per base coin (`publicTrade.BTC`), never per option symbol.
        pattern = _BASE_COIN if category == "option" else _SYMBOL
        return PublicTopic(name=topic, kind="publicTrade", symbol=symbol) if pattern.match(symbol) else None
    if kind == "tickers" and _SYMBOL.match(symbol):
        return PublicTopic(name=topic, kind="tickers", symbol=symbol)
    if kind == "allLiquidation" and category in ("linear", "inverse") and _SYMBOL.match(symbol):
        return PublicTopic(name=topic, kind="allLiquidation", symbol=symbol)
    return None


def is_private_topic(topic: str) -> bool:
    if topic in PRIVATE_PLAIN_TOPICS or topic in PRIVATE_CATEGORY_TOPICS:
        return True
    base, _, category = topic.rpartition(".")
    return category in PRIVATE_CATEGORY_TOPICS.get(base, ())


def all_in_one_of(topic: str) -> str | None:
    """`order` for `order.linear`; None for a topic that is not a category form."""
    base, _, category = topic.rpartition(".")
    return base if category in PRIVATE_CATEGORY_TOPICS.get(base, ()) else None


def private_topics_matching(kind: str, category: str | None) -> frozenset[str]:
    """Subscribed topic names that receive a `kind` push about `category` (all-in-one or categorised)."""
    if category is None or kind not in PRIVATE_CATEGORY_TOPICS:
        return frozenset({kind})
    return frozenset({kind, f"{kind}.{category}"})
