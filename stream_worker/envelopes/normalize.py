"""Bybit data pushes in, event envelopes out: one `Normalizer` per socket, pure and synchronous.

Each payload is Bybit's own JSON for one item, byte for byte: field names, decimal strings, and fields we do
not know yet. `data` is split into its elements as `msgspec.Raw`, each element is the payload unchanged
(msgspec writes a `Raw` verbatim inside the envelope), and from the same bytes only a tiny view struct is
decoded for the ids and times (`event_ids`). Consumers read payloads with `shared.payloads`.

One event per trade, kline, liquidation, order update, execution, position and wallet coin. Tickers and order
books are stateful (merged, validated) and go through `stream_worker.envelopes.market` instead. Event ids: `event_ids`.

Envelope fields:
- `category`: the socket's for public data; the item's `category` for order, execution and position (the
  all-in-one topic carries several; an item without one takes the suffix of an `order.linear` style topic);
  the lowercased `accountType` for wallet coins.
- `symbol`: the topic's for public data (option trades: the base coin; the option is the payload's `s`),
  the item's `symbol` for account data, the coin for wallet coins.
- `exchange_ts`: trade and liquidation `T`, candle `timestamp`, book `cts` (else `ts`), ticker `ts`, and the
  push's `creationTime` for private data. `published_ts` is 0 until the publisher stamps it.
- routing key: `{channel}.{category}.{topic symbol}` for market data (`trades.option.BTC`),
  `{channel}.{category}` for account data (`order.linear`, `balance.unified`).

A push whose data cannot be read raises `PayloadError` with a short stable `kind` (`trades:bad_data`,
`order:no_category`, `unknown_topic`, ...) and nothing of that push is published: the caller counts it per
kind and logs once. No I/O, no clock, no logging here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from shared.enums import ChannelType, Endpoint
from shared.events import EventEnvelope
from shared.payloads import WalletAccount, decode_payload
from shared.routing import event_routing_key, topic_variant
from stream_worker.bybit.events import Push
from stream_worker.envelopes.event_ids import (
    AccountView,
    CoinView,
    ExecutionView,
    KlineView,
    LiquidationView,
    OrderView,
    PositionView,
    TradeView,
    WalletView,
    balance_event_id,
    execution_event_id,
    kline_event_id,
    liquidation_event_id,
    order_event_id,
    position_event_id,
    trade_id_prefix,
)
from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.errors import WorkerError

PUBLIC_CHANNELS: dict[str, ChannelType] = {
    "publicTrade": ChannelType.TRADES,
    "kline": ChannelType.KLINE,
    "allLiquidation": ChannelType.LIQUIDATION,
}
PRIVATE_CHANNELS: dict[str, ChannelType] = {
    "order": ChannelType.ORDER,
    "execution": ChannelType.EXECUTION,
    "position": ChannelType.POSITION,
    "wallet": ChannelType.BALANCE,
}
_SYMBOL_AFTER_PARAMETER = frozenset({ChannelType.KLINE})  # kline.5.X

_ELEMENTS = msgspec.json.Decoder(list[msgspec.Raw])
_TRADES = msgspec.json.Decoder(list[TradeView])
_KLINE = msgspec.json.Decoder(KlineView)
_LIQUIDATION = msgspec.json.Decoder(LiquidationView)
_ORDER = msgspec.json.Decoder(OrderView)
_EXECUTION = msgspec.json.Decoder(ExecutionView)
_POSITION = msgspec.json.Decoder(PositionView)
_WALLET = msgspec.json.Decoder(WalletView)
_COIN = msgspec.json.Decoder(CoinView)
_ENCODER = msgspec.json.Encoder()

_A = TypeVar("_A", bound=AccountView)


class PayloadError(WorkerError):
    """A push whose data we cannot read. `kind` is short and stable, for counting and logging once."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class WalletUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """One account of a `wallet` push, typed, for persistence. Idempotent by (message_id, account, coin)."""

    message_id: str  # the push's `id`
    exchange_ts: int  # the push's `creationTime`, epoch ms
    account: WalletAccount


@dataclass(frozen=True, slots=True)
class Normalized:
    events: list[Outgoing]
    wallets: list[WalletUpdate] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Route:
    """What a public topic resolves to, worked out once per topic."""

    channel: ChannelType
    symbol: str
    routing_key: str
    event_type: str  # channel.value, read once: an enum's .value costs ~10 % of the trade path (profiled)
    id_prefix: str  # trades only: the event id of every trade of this topic but the trade id


class Normalizer:
    """Turns the data pushes of one socket into events. Its only state is a per-topic cache of routes."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._category = endpoint.category or ""
        self._routes: dict[str, _Route] = {}

    def normalize(self, push: Push, *, received_ms: int, trace_id: str) -> Normalized:
        """The events (and, for `wallet`, the typed accounts) of one push. Raises only `PayloadError`."""
        if self._endpoint.private:
            return self._private(push, received_ms, trace_id)
        route = self._routes.get(push.topic) or self._route(push.topic)
        try:
            match route.channel:
                case ChannelType.TRADES:
                    events = self._trades(push, route, received_ms, trace_id)
                case ChannelType.KLINE:
                    events = self._klines(push, route, received_ms, trace_id)
                case ChannelType.LIQUIDATION:
                    events = self._liquidations(push, route, received_ms, trace_id)
                case _:
                    raise PayloadError("unknown_topic", f"{push.topic!r} belongs to the market state, not here")
        except msgspec.DecodeError as error:  # a ValidationError is a DecodeError
            raise PayloadError(f"{route.channel.value}:bad_data", str(error)) from error
        return Normalized(events=events)

    # -- public market data ------------------------------------------------------------------------------

    def _route(self, topic: str) -> _Route:
        head, _, symbol = topic.partition(".")
        channel = PUBLIC_CHANNELS.get(head)
        if channel is None:
            raise PayloadError("unknown_topic", f"no public channel for topic {topic!r}")
        if channel in _SYMBOL_AFTER_PARAMETER:
            symbol = symbol.partition(".")[2]
        if not symbol:
            raise PayloadError("unknown_topic", f"no symbol in topic {topic!r}")
        routing_key = event_routing_key(channel, self._category, symbol, topic_variant(channel, topic))
        prefix = trade_id_prefix(self._category, symbol) if channel is ChannelType.TRADES else ""
        route = _Route(channel, symbol, routing_key, channel.value, prefix)
        self._routes[topic] = route
        return route

    def _market(
        self,
        event_id: str,
        route: _Route,
        push: Push,
        exchange_ts: int | None,
        payload: msgspec.Raw,
        received_ms: int,
        trace_id: str,
    ) -> Outgoing:
        envelope = EventEnvelope(
            event_id=event_id,
            event_type=route.event_type,
            category=self._category,
            symbol=route.symbol,
            topic=push.topic,
            exchange_ts=exchange_ts,
            received_ts=received_ms,
            published_ts=0,
            trace_id=trace_id,
            payload=payload,
        )
        return Outgoing(envelope, route.channel, route.routing_key, account=False)

    def _trades(self, push: Push, route: _Route, received_ms: int, trace_id: str) -> list[Outgoing]:
        # The busiest path of the worker (one event per trade), so `_market` is inlined: the elements and
        # their views are decoded in one call each rather than one call per trade (~25 % less per trade).
        data, topic, category = push.data, push.topic, self._category
        prefix, event_type, symbol = route.id_prefix, route.event_type, route.symbol
        channel, routing_key = route.channel, route.routing_key
        return [
            Outgoing(
                EventEnvelope(
                    event_id=prefix + trade.trade_id,
                    event_type=event_type,
                    category=category,
                    symbol=symbol,
                    topic=topic,
                    exchange_ts=trade.time,
                    received_ts=received_ms,
                    published_ts=0,
                    trace_id=trace_id,
                    payload=raw,
                ),
                channel,
                routing_key,
                False,
            )
            for raw, trade in zip(_ELEMENTS.decode(data), _TRADES.decode(data), strict=True)
        ]

    def _klines(self, push: Push, route: _Route, received_ms: int, trace_id: str) -> list[Outgoing]:
        events = []
        for raw in _ELEMENTS.decode(push.data):
            kline = _KLINE.decode(raw)
            event_id = kline_event_id(self._category, push.topic, kline)
            events.append(self._market(event_id, route, push, kline.timestamp, raw, received_ms, trace_id))
        return events

    def _liquidations(self, push: Push, route: _Route, received_ms: int, trace_id: str) -> list[Outgoing]:
        events = []
        for raw in _ELEMENTS.decode(push.data):
            item = _LIQUIDATION.decode(raw)
            event_id = liquidation_event_id(self._category, item)
            events.append(self._market(event_id, route, push, item.time, raw, received_ms, trace_id))
        return events

    # -- private account data ----------------------------------------------------------------------------

    def _private(self, push: Push, received_ms: int, trace_id: str) -> Normalized:
        head, _, rest = push.topic.partition(".")
        channel = PRIVATE_CHANNELS.get(head)
        # execution.fast is a thinner feed of its own (§9.3); wallet has no category variants (§9).
        if (
            channel is None
            or (channel is ChannelType.EXECUTION and rest.partition(".")[0] == "fast")
            or (channel is ChannelType.BALANCE and rest)
        ):
            raise PayloadError("unknown_topic", f"no private channel for topic {push.topic!r}")
        ctx = (received_ms, trace_id, rest)
        try:
            match channel:
                case ChannelType.ORDER:
                    events = self._account(push, channel, _ORDER, order_event_id, *ctx)
                case ChannelType.EXECUTION:
                    events = self._account(push, channel, _EXECUTION, execution_event_id, *ctx)
                case ChannelType.POSITION:
                    events = self._account(push, channel, _POSITION, position_event_id, *ctx)
                case _:
                    return self._wallets(push, received_ms, trace_id)
        except msgspec.DecodeError as error:
            raise PayloadError(f"{channel.value}:bad_data", str(error)) from error
        return Normalized(events=events)

    def _account(
        self,
        push: Push,
        channel: ChannelType,
        decoder: msgspec.json.Decoder[_A],
        event_id_of: Callable[[_A, str], str],
        received_ms: int,
        trace_id: str,
        topic_category: str,
    ) -> list[Outgoing]:
        events = []
        for raw in _ELEMENTS.decode(push.data):
            item = decoder.decode(raw)
            category = item.category or topic_category
            if not category:
                raise PayloadError(f"{channel.value}:no_category", f"an item of {push.topic!r} has no category")
            envelope = EventEnvelope(
                event_id=event_id_of(item, category),
                event_type=channel.value,
                category=category,
                symbol=item.symbol,
                topic=push.topic,
                exchange_ts=push.creation_time,
                received_ts=received_ms,
                published_ts=0,
                trace_id=trace_id,
                payload=raw,
            )
            events.append(Outgoing(envelope, channel, event_routing_key(channel, category), account=True))
        return events

    def _wallets(self, push: Push, received_ms: int, trace_id: str) -> Normalized:
        message_id, created = push.id, push.creation_time
        if not message_id or created is None:
            # Both key the stored balances (idempotence, newer-wins); Bybit documents both on every push.
            raise PayloadError("balance:bad_envelope", f"a wallet push without id or creationTime: {push.topic!r}")
        events: list[Outgoing] = []
        wallets: list[WalletUpdate] = []
        try:
            for raw in _ELEMENTS.decode(push.data):
                wallet = _WALLET.decode(raw)
                category = wallet.account_type.lower()
                routing_key = event_routing_key(ChannelType.BALANCE, category)
                for coin_raw in wallet.coins:
                    coin = _COIN.decode(coin_raw).coin
                    envelope = EventEnvelope(
                        event_id=balance_event_id(message_id, wallet.account_type, coin),
                        event_type=ChannelType.BALANCE.value,
                        category=category,
                        symbol=coin,
                        topic=push.topic,
                        exchange_ts=created,
                        received_ts=received_ms,
                        published_ts=0,
                        trace_id=trace_id,
                        payload=coin_raw,
                    )
                    events.append(Outgoing(envelope, ChannelType.BALANCE, routing_key, account=True))
                account = decode_payload(WalletAccount, raw)
                wallets.append(WalletUpdate(message_id=message_id, exchange_ts=created, account=account))
        except msgspec.DecodeError as error:
            raise PayloadError("balance:bad_data", str(error)) from error
        return Normalized(events=events, wallets=wallets)
