"""What the gateway last told consumers about each order and position, kept in `account_open_items`.

Every order and position event the worker publishes (pushed or re-synced) becomes a fact: open or not, as of
Bybit's `updatedTime`. Facts are coalesced in memory (newer wins) and written in batches from the writer's own
task, retried while PostgreSQL is away, so the private reader never waits on the database. The re-sync reads
the rows still open after a gap; they live in PostgreSQL so a worker that takes the private stream over knows
what its predecessor published.

An order is open in `New`, `PartiallyFilled` and `Untriggered` (PROTOCOL.md §9.1); a position while its size
is not zero (§9.4).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal, InvalidOperation

import msgspec
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from shared.enums import ChannelType
from shared.schema import AccountOpenItemRow
from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.state.balances import load_held_coins
from stream_worker.state.persistence import DATABASE_ERRORS, Store, WriteRetry

OPEN_ORDER_STATUSES = frozenset({"New", "PartiallyFilled", "Untriggered"})


class OpenFact(msgspec.Struct, frozen=True, kw_only=True):
    kind: str  # "order" | "position"
    category: str
    item_key: str  # orderId; "{symbol}:{positionIdx}" for positions
    symbol: str
    is_open: bool
    exchange_ms: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.category, self.item_key)


class _OrderFields(msgspec.Struct, frozen=True, kw_only=True):
    order_id: str = msgspec.field(name="orderId")
    symbol: str = ""
    order_status: str = msgspec.field(name="orderStatus", default="")
    updated_time: str | int = msgspec.field(name="updatedTime", default=0)


class _PositionFields(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    position_idx: int | str = msgspec.field(name="positionIdx", default=0)
    size: str = "0"
    updated_time: str | int = msgspec.field(name="updatedTime", default=0)


_ORDER = msgspec.json.Decoder(_OrderFields)
_POSITION = msgspec.json.Decoder(_PositionFields)


def position_key(symbol: str, position_idx: int | str) -> str:
    return f"{symbol}:{position_idx}"


def fact_of(item: Outgoing) -> OpenFact | None:
    """The open/closed fact an order or position event states; None for anything else or unreadable data."""
    envelope = item.envelope
    payload = envelope.payload
    if envelope.event_type not in ("order", "position") or not isinstance(payload, msgspec.Raw):
        return None
    try:
        if item.channel_type is ChannelType.ORDER:
            order = _ORDER.decode(payload)
            return OpenFact(
                kind="order",
                category=envelope.category,
                item_key=order.order_id,
                symbol=order.symbol,
                is_open=order.order_status in OPEN_ORDER_STATUSES,
                exchange_ms=_millis(order.updated_time),
            )
        position = _POSITION.decode(payload)
        return OpenFact(
            kind="position",
            category=envelope.category,
            item_key=position_key(position.symbol, position.position_idx),
            symbol=position.symbol,
            is_open=not _is_zero(position.size),
            exchange_ms=_millis(position.updated_time),
        )
    except msgspec.DecodeError:
        return None  # the normalizer already read these bytes; a field of an unexpected type is not a fact


def _millis(value: str | int) -> int:
    text = str(value)
    return int(text) if text.isdigit() else 0


def _is_zero(size: str) -> bool:
    try:
        return Decimal(size or "0") == 0
    except InvalidOperation:
        return False


class OpenItems:
    """Coalesces facts in memory and flushes them in batches; `believed_open` reads what is still open."""

    def __init__(
        self,
        store: Store,
        *,
        flush_interval: float = 1.0,
        retry_cap: float = 10.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._flush_interval = flush_interval
        self._retry = WriteRetry("open orders and positions", retry_cap=retry_cap, rng=rng, sleep=sleep)
        self._sleep = sleep
        self._pending: dict[tuple[str, str, str], OpenFact] = {}
        self._lock = asyncio.Lock()

    def observe(self, item: Outgoing) -> None:
        fact = fact_of(item)
        if fact is None:
            return
        known = self._pending.get(fact.key)
        if known is None or known.exchange_ms <= fact.exchange_ms:
            self._pending[fact.key] = fact

    def forget(self, fact: OpenFact) -> None:
        """Stop believing `fact` open without a newer fact from Bybit (it was reported unresolved)."""
        key = fact.key
        known = self._pending.get(key)
        if known is None or known.exchange_ms <= fact.exchange_ms:
            self._pending[key] = msgspec.structs.replace(fact, is_open=False)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        while True:
            await self._sleep(self._flush_interval)
            try:
                await self.flush()
            except DATABASE_ERRORS as error:
                await self._retry.failed(error)
                continue
            self._retry.succeeded()

    @property
    def failed_flushes(self) -> int:
        return self._retry.failures

    async def flush(self) -> None:
        """Write pending facts (newer wins in the table too); on an outage they stay pending and it raises."""
        async with self._lock:
            facts, self._pending = self._pending, {}
            try:
                await _save(self._store, facts.values())
            except BaseException:
                for key, fact in facts.items():
                    newer = self._pending.get(key)
                    if newer is None or newer.exchange_ms < fact.exchange_ms:
                        self._pending[key] = fact
                raise

    async def believed_open(self) -> list[OpenFact]:
        """Every order and position the gateway last published as open (pending facts written first)."""
        await self.flush()
        async with asyncio.timeout(self._store.timeout), self._store.engine.connect() as connection:
            rows = (await connection.execute(select(AccountOpenItemRow).where(AccountOpenItemRow.is_open))).all()
        return [
            OpenFact(
                kind=row.kind,
                category=row.category,
                item_key=row.item_key,
                symbol=row.symbol,
                is_open=True,
                exchange_ms=row.exchange_ms,
            )
            for row in rows
        ]

    async def held_coins(self, account_type: str) -> dict[str, str]:
        """Coins stored non-zero (the balance writer must be drained first), with the message that set each."""
        return await load_held_coins(self._store.engine, self._store.timeout, account_type)


async def _save(store: Store, facts: Iterable[OpenFact]) -> None:
    values = [msgspec.structs.asdict(fact) for fact in facts]
    if not values:
        return
    statement = insert(AccountOpenItemRow).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[AccountOpenItemRow.kind, AccountOpenItemRow.category, AccountOpenItemRow.item_key],
        set_={
            "symbol": statement.excluded.symbol,
            "is_open": statement.excluded.is_open,
            "exchange_ms": statement.excluded.exchange_ms,
            "updated_at": statement.excluded.updated_at,
        },
        where=AccountOpenItemRow.exchange_ms <= statement.excluded.exchange_ms,
    )
    async with asyncio.timeout(store.timeout), store.engine.begin() as connection:
        await connection.execute(statement)
