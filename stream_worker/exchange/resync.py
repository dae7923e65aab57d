"""Account re-sync over REST after every (re)auth of the private stream (PROTOCOL.md §9.8).

Bybit replays nothing after a reconnect, so whatever happened while we were away is fetched: wallet balance,
positions, open orders, and executions since shortly before the last private frame we received. REST items
have the shapes of the stream's, so they go through the same normalizer (same event_id rules: a consumer
recognises what it already has) and come out flagged `snapshot`. Only what some service wants is fetched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from shared.enums import Category, ChannelType, Endpoint
from stream_worker.bybit.events import Push
from stream_worker.envelopes.normalize import Normalized, Normalizer, WalletUpdate
from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.exchange.rest import BybitRest, ListResult

ALL_CATEGORIES: tuple[Category, ...] = (Category.LINEAR, Category.INVERSE, Category.SPOT, Category.OPTION)
# Linear lists need a settle coin (or a symbol); these are the settle coins Bybit's linear contracts use.
LINEAR_SETTLE_COINS = ("USDT", "USDC")
EXECUTION_MARGIN_MS = 60_000  # fetch executions from a minute before the last frame: clocks and queues differ
_ENCODE = msgspec.json.Encoder()


@dataclass(slots=True)
class ResyncResult:
    events: list[Outgoing] = field(default_factory=list)
    wallets: list[WalletUpdate] = field(default_factory=list)
    fetched: dict[str, int] = field(default_factory=dict)


def wanted_categories(topics: Iterable[str]) -> dict[ChannelType, set[Category]]:
    """Which categories each private channel covers, from the wanted private topics (`order`, `order.linear`…)."""
    roots = {"order": ChannelType.ORDER, "execution": ChannelType.EXECUTION, "position": ChannelType.POSITION}
    wanted: dict[ChannelType, set[Category]] = {}
    for topic in topics:
        root, _, category = topic.partition(".")
        if root == "wallet":
            wanted[ChannelType.BALANCE] = set()
        elif root in roots and not category.startswith("fast"):
            chosen = {Category(category)} if category else set(ALL_CATEGORIES)
            if roots[root] is ChannelType.POSITION:
                chosen.discard(Category.SPOT)  # no spot positions (§9)
            wanted.setdefault(roots[root], set()).update(chosen)
    return wanted


class AccountResync:
    def __init__(self, rest: BybitRest, *, account_type: str = "UNIFIED") -> None:
        self._rest = rest
        self._normalizer = Normalizer(Endpoint.PRIVATE)
        self._account_type = account_type

    async def run(
        self, topics: Iterable[str], *, since_ms: int | None, received_ms: int, trace_id: str
    ) -> ResyncResult:
        result = ResyncResult()
        for channel, categories in wanted_categories(topics).items():
            if channel is ChannelType.BALANCE:
                listed = await self._rest.get_list("/v5/account/wallet-balance", {"accountType": self._account_type})
                self._add(result, "wallet", listed, received_ms, trace_id)
                continue
            for category in sorted(categories):
                for params in _queries(channel, category, since_ms):
                    path = {
                        ChannelType.ORDER: "/v5/order/realtime",
                        ChannelType.POSITION: "/v5/position/list",
                        ChannelType.EXECUTION: "/v5/execution/list",
                    }[channel]
                    listed = await self._rest.get_list(path, params)
                    self._add(result, f"{channel.value}.{category.value}", listed, received_ms, trace_id)
        return result

    def _add(self, result: ResyncResult, topic: str, listed: ListResult, received_ms: int, trace_id: str) -> None:
        result.fetched[topic] = result.fetched.get(topic, 0) + len(listed.items)
        if not listed.items:
            return
        # The REST items become a push of the matching stream topic; `order.linear` tells the normalizer the
        # category, which REST puts on the result instead of on each item.
        push = Push(
            topic=topic,
            type=None,
            ts=None,
            cts=None,
            cs=None,
            id=f"rest-{listed.server_ms}",
            creation_time=listed.server_ms,
            data=msgspec.Raw(_ENCODE.encode(listed.items)),
            received_at=0.0,
        )
        normalized: Normalized = self._normalizer.normalize(push, received_ms=received_ms, trace_id=trace_id)
        result.events.extend(
            Outgoing(msgspec.structs.replace(item.envelope, snapshot=True), item.channel_type, item.routing_key, True)
            for item in normalized.events
        )
        result.wallets.extend(normalized.wallets)


def _queries(channel: ChannelType, category: Category, since_ms: int | None) -> list[dict[str, str]]:
    base: dict[str, str] = {"category": category.value, "limit": "50"}
    if channel is ChannelType.EXECUTION:
        base["limit"] = "100"
        if since_ms is not None:
            base["startTime"] = str(max(0, since_ms - EXECUTION_MARGIN_MS))
    if category is Category.LINEAR and channel is not ChannelType.EXECUTION:
        return [base | {"settleCoin": coin} for coin in LINEAR_SETTLE_COINS]
    return [base]
