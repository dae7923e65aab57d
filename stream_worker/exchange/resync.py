"""Account re-sync over REST after every (re)auth of the private stream (PROTOCOL.md §9.8).

Bybit replays nothing after a reconnect, so whatever happened while we were away is fetched: wallet balance,
positions, open orders, and executions since shortly before the last private frame we received. REST items
have the shapes of the stream's, so they go through the same normalizer (same event_id rules: a consumer
recognises what it already has) and come out flagged `snapshot`. Only what some service wants is fetched.

Bybit's lists only show what is open or held now, so what closed during the gap is fetched too. Orders updated
within the gap come from `/v5/order/history` by time window (AUDIT B1's fix): that covers an order the gateway
published as open but could not record before the private stream moved (a worker killed within its open-items
flush, or stopped while its database link was down). Anything else the gateway last published as open that a
list no longer shows is resolved one by one (AUDIT B1-B3):
- an order: its final state from `/v5/order/history` by `orderId` (open-order.mdx: "filled, cancelled, and
  rejected orders ... should only be queried through order history");
- a position: `/v5/position/list` by `symbol` ("If `symbol` passed, it returns data regardless of having
  position or not"), else a flat row made from what we knew;
- a coin: `wallet-balance` with `coin=` ("If not passed, it returns non-zero asset info"), else a zero row.
What cannot be fetched whole (pagination cap, a gap past the 7-day window, an order history no longer keeps)
is a `Shortfall`, which the caller publishes and counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from shared.enums import Category, ChannelType, Endpoint
from stream_worker.bybit.events import Push
from stream_worker.envelopes.normalize import Normalized, Normalizer, WalletUpdate
from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.exchange import resync_queries as queries
from stream_worker.exchange.rest import BybitRest, ListResult
from stream_worker.state.open_items import OpenFact, position_key

ALL_CATEGORIES: tuple[Category, ...] = (Category.LINEAR, Category.INVERSE, Category.SPOT, Category.OPTION)
DEFAULT_OPTION_BASE_COINS = ("BTC", "ETH", "SOL")
_ENCODE = msgspec.json.Encoder()
_OBJECTS = msgspec.json.Decoder(list[dict[str, Any]])


class AccountMemory(Protocol):
    """What the gateway last published: the open orders and positions, and the coins it holds non-zero."""

    async def believed_open(self) -> list[OpenFact]: ...

    async def held_coins(self, account_type: str) -> dict[str, str]: ...  # coin -> message id that set it

    def forget(self, fact: OpenFact) -> None: ...  # reported unresolved: stop asking about it


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Part of a re-sync that could not be completed; published as a `resync_incomplete` event."""

    channel: ChannelType
    category: str  # the routing category: `linear`, ... or the account type for balances (`unified`)
    reason: str  # pagination_cap | window_exceeded | unresolved
    detail: str


@dataclass(slots=True)
class ResyncResult:
    events: list[Outgoing] = field(default_factory=list)
    wallets: list[WalletUpdate] = field(default_factory=list)
    fetched: dict[str, int] = field(default_factory=dict)
    resolved: dict[str, int] = field(default_factory=dict)  # orders, positions, coins resolved as closed
    shortfalls: list[Shortfall] = field(default_factory=list)


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
    def __init__(
        self,
        rest: BybitRest,
        memory: AccountMemory,
        *,
        account_type: str = "UNIFIED",
        option_base_coins: Iterable[str] = DEFAULT_OPTION_BASE_COINS,
        max_lookback_ms: int = queries.WEEK_MS,
    ) -> None:
        self._rest = rest
        self._memory = memory
        self._normalizer = Normalizer(Endpoint.PRIVATE)
        self._account_type = account_type
        self._option_base_coins = tuple(option_base_coins)
        self._max_lookback_ms = max_lookback_ms

    async def run(
        self,
        topics: Iterable[str],
        *,
        since_ms: int | None,
        received_ms: int,
        trace_id: str,
        closed_in_gap: bool = True,
    ) -> ResyncResult:
        """`closed_in_gap`: also list the orders closed since `since_ms` (a periodic re-sync, whose worker
        recorded everything it published as open, resolves those one by one and skips the window's queries)."""
        result = ResyncResult()
        run = _Run(
            self._rest,
            self._normalizer,
            result,
            forget=self._memory.forget,
            account_type=self._account_type,
            max_lookback_ms=self._max_lookback_ms,
            received_ms=received_ms,
            trace_id=trace_id,
        )
        wanted = wanted_categories(topics)
        believed: list[OpenFact] = []
        if ChannelType.ORDER in wanted or ChannelType.POSITION in wanted or ChannelType.EXECUTION in wanted:
            believed = await self._memory.believed_open()
        for channel, categories in wanted.items():
            if channel is ChannelType.BALANCE:
                await run.wallet(await self._memory.held_coins(self._account_type))
                continue
            for category in sorted(categories):
                if channel is ChannelType.EXECUTION:
                    await run.executions(category, since_ms, _option_coins(self._option_base_coins, believed))
                elif channel is ChannelType.ORDER:
                    mine = [f for f in believed if f.kind == "order" and f.category == category]
                    await run.orders(category, mine, since_ms if closed_in_gap else None)
                else:
                    open_positions = [f for f in believed if f.kind == "position" and f.category == category]
                    await run.positions(category, open_positions)
        return result


def _option_coins(configured: tuple[str, ...], believed: list[OpenFact]) -> set[str]:
    # The configured base coins plus any an open option order or position of ours names.
    seen = {queries.option_base_coin(f.symbol) for f in believed if f.category == Category.OPTION.value and f.symbol}
    return set(configured) | seen


class _Run:
    """One re-sync: the REST calls and what they add to the result."""

    def __init__(
        self,
        rest: BybitRest,
        normalizer: Normalizer,
        result: ResyncResult,
        *,
        forget: Callable[[OpenFact], None],
        account_type: str,
        max_lookback_ms: int,
        received_ms: int,
        trace_id: str,
    ) -> None:
        self._rest = rest
        self._normalizer = normalizer
        self._forget = forget
        self._result = result
        self._account_type = account_type
        self._max_lookback_ms = max_lookback_ms
        self._received_ms = received_ms
        self._trace_id = trace_id

    async def _list(self, path: str, params: dict[str, str], channel: ChannelType, category: str) -> ListResult:
        listed = await self._rest.get_list(path, params)
        if listed.truncated:
            detail = f"{path} {sorted(params.items())}: more pages than the worker follows"
            self._result.shortfalls.append(Shortfall(channel, category, "pagination_cap", detail))
        return listed

    # -- balances -------------------------------------------------------------------------------------

    async def wallet(self, held: dict[str, str]) -> None:
        account_type = self._account_type
        routing = account_type.lower()
        listed = await self._list(queries.WALLET_PATH, {"accountType": account_type}, ChannelType.BALANCE, routing)
        self._add("wallet", listed.items, listed.server_ms, f"rest-{listed.server_ms}")
        rows = _OBJECTS.decode(_ENCODE.encode(listed.items))
        fallback: dict[str, Any] = {"accountType": account_type}
        account = next((row for row in rows if row.get("accountType") == account_type), fallback)
        listed_coins = {coin.get("coin") for coin in account.get("coin", [])}
        gone = sorted(set(held) - listed_coins)
        if not gone:
            return
        named = await self._list(
            queries.WALLET_PATH, {"accountType": account_type, "coin": ",".join(gone)}, ChannelType.BALANCE, routing
        )
        named_rows = _OBJECTS.decode(_ENCODE.encode(named.items))
        fetched = {coin["coin"]: coin for row in named_rows for coin in row.get("coin", []) if "coin" in coin}
        totals = {key: value for key, value in account.items() if key != "coin"}
        for coin in gone:
            row = fetched.get(coin) or _zero_coin(coin)
            # One push per coin, named by the message that last set it: a second worker or a retry resolving
            # the same coin publishes the same event_id (`balance:zeroed-{message id}:{account}:{coin}`).
            message_id = f"zeroed-{held[coin]}"
            self._add("wallet", [msgspec.Raw(_ENCODE.encode({**totals, "coin": [row]}))], listed.server_ms, message_id)
            self._count_resolved("coins")

    # -- orders ---------------------------------------------------------------------------------------

    async def orders(self, category: Category, believed: list[OpenFact], closed_since_ms: int | None) -> None:
        listed_ids: set[str] = set()
        for params in queries.list_queries(ChannelType.ORDER, category):
            listed = await self._list(queries.LIST_PATHS[ChannelType.ORDER], params, ChannelType.ORDER, category.value)
            self._add(f"order.{category.value}", listed.items, listed.server_ms)
            listed_ids.update(_order_ids(listed.items))
        closed_ids: set[str] = set()
        if closed_since_ms is not None:
            # The window query cannot report its own limit (an order kept 24 h only): orders we believed open are
            # still resolved one by one below when the window did not list them.
            windows, _ = queries.execution_windows(
                closed_since_ms, self._received_ms, max_lookback_ms=self._max_lookback_ms
            )
            for params in queries.order_history_queries(category, windows):
                closed = await self._list(queries.ORDER_HISTORY_PATH, params, ChannelType.ORDER, category.value)
                fresh = [
                    item
                    for item, order_id in zip(closed.items, _order_id_list(closed.items), strict=True)
                    if order_id not in closed_ids
                ]
                self._add(f"order.{category.value}", fresh, closed.server_ms)
                closed_ids.update(_order_ids(closed.items))
        for fact in believed:
            if fact.item_key in listed_ids:
                continue
            if fact.item_key in closed_ids:
                self._count_resolved("orders")
                continue
            params = {"category": category.value, "orderId": fact.item_key}
            history = await self._list(queries.ORDER_HISTORY_PATH, params, ChannelType.ORDER, category.value)
            if history.items:
                self._add(f"order.{category.value}", history.items, history.server_ms)
                self._count_resolved("orders")
            else:
                detail = f"order {fact.item_key} ({fact.symbol}) is neither open nor in Bybit's order history"
                self._result.shortfalls.append(Shortfall(ChannelType.ORDER, category.value, "unresolved", detail))
                self._forget(fact)  # reported once; history will not bring it back

    # -- positions ------------------------------------------------------------------------------------

    async def positions(self, category: Category, believed: list[OpenFact]) -> None:
        path = queries.LIST_PATHS[ChannelType.POSITION]
        listed_keys: set[str] = set()
        for params in queries.list_queries(ChannelType.POSITION, category):
            listed = await self._list(path, params, ChannelType.POSITION, category.value)
            self._add(f"position.{category.value}", listed.items, listed.server_ms)
            listed_keys.update(_position_keys(listed.items))
        gone = [fact for fact in believed if fact.item_key not in listed_keys]
        for symbol in sorted({fact.symbol for fact in gone}):
            params = {"category": category.value, "symbol": symbol, "limit": queries.LIMITS[ChannelType.POSITION]}
            by_symbol = await self._list(path, params, ChannelType.POSITION, category.value)
            rows = dict(zip(_position_keys(by_symbol.items), by_symbol.items, strict=True))
            for fact in (f for f in gone if f.symbol == symbol):
                row = rows.get(fact.item_key) or msgspec.Raw(_ENCODE.encode(_flat_position(fact)))
                self._add(f"position.{category.value}", [row], by_symbol.server_ms)
                self._count_resolved("positions")

    # -- executions -----------------------------------------------------------------------------------

    async def executions(self, category: Category, since_ms: int | None, option_coins: set[str]) -> None:
        lookback = self._max_lookback_ms
        windows, exceeded = queries.execution_windows(since_ms, self._received_ms, max_lookback_ms=lookback)
        if exceeded:
            days = lookback / queries.WEEK_MS * 7
            detail = f"the gap began at {since_ms} (UTC ms), more than {days:g} days ago; older fills are not fetched"
            self._result.shortfalls.append(Shortfall(ChannelType.EXECUTION, category.value, "window_exceeded", detail))
        path = queries.LIST_PATHS[ChannelType.EXECUTION]
        for params in queries.execution_queries(category, windows, option_coins):
            listed = await self._list(path, params, ChannelType.EXECUTION, category.value)
            self._add(f"execution.{category.value}", listed.items, listed.server_ms)

    # -- shared ---------------------------------------------------------------------------------------

    def _count_resolved(self, kind: str) -> None:
        self._result.resolved[kind] = self._result.resolved.get(kind, 0) + 1

    def _add(self, topic: str, items: list[msgspec.Raw], server_ms: int, message_id: str | None = None) -> None:
        result = self._result
        result.fetched[topic] = result.fetched.get(topic, 0) + len(items)
        if not items:
            return
        # The REST items become a push of the matching stream topic; `order.linear` tells the normalizer the
        # category, which REST puts on the result instead of on each item.
        push = Push(
            topic=topic,
            type=None,
            ts=None,
            cts=None,
            cs=None,
            id=message_id or f"rest-{server_ms}",
            creation_time=server_ms,
            data=msgspec.Raw(_ENCODE.encode(items)),
            received_at=0.0,
        )
        normalized: Normalized = self._normalizer.normalize(
            push, received_ms=self._received_ms, trace_id=self._trace_id
        )
        result.events.extend(
            Outgoing(msgspec.structs.replace(item.envelope, snapshot=True), item.channel_type, item.routing_key, True)
            for item in normalized.events
        )
        result.wallets.extend(normalized.wallets)


class _Keyed(msgspec.Struct, frozen=True):
    order_id: str = msgspec.field(name="orderId", default="")
    symbol: str = ""
    position_idx: int | str = msgspec.field(name="positionIdx", default=0)


_KEYED = msgspec.json.Decoder(_Keyed)


def _order_ids(items: list[msgspec.Raw]) -> set[str]:
    return set(_order_id_list(items))


def _order_id_list(items: list[msgspec.Raw]) -> list[str]:
    return [_KEYED.decode(item).order_id for item in items]


def _position_keys(items: list[msgspec.Raw]) -> list[str]:
    keyed = [_KEYED.decode(item) for item in items]
    return [position_key(item.symbol, item.position_idx) for item in keyed]


def _flat_position(fact: OpenFact) -> dict[str, Any]:
    """A closed position in Bybit's shape (§9.4: size "0", side ""), from what we knew. `seq` -1 keeps its
    event_id apart from the open state we published at the same `updatedTime`."""
    symbol, _, index = fact.item_key.rpartition(":")
    return {
        "symbol": symbol,
        "positionIdx": int(index) if index.isdigit() else 0,
        "side": "",
        "size": "0",
        "positionValue": "0",
        "updatedTime": str(fact.exchange_ms),
        "seq": -1,
    }


def _zero_coin(coin: str) -> dict[str, Any]:
    return {"coin": coin, "equity": "0", "walletBalance": "0", "usdValue": "0", "borrowAmount": "0", "locked": "0"}
