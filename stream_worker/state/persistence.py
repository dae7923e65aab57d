"""The worker's PostgreSQL work: read the desired set and its tombstones, settle those, write back statuses,
event times and heartbeats.

The Bybit readers never await this module: they record facts in `StateWriter`, which coalesces them (the
latest status per topic, the latest event time per topic) and writes them in batches from its own task,
retrying while PostgreSQL is away. Nothing is written per message.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from loguru import logger
from sqlalchemy import Row, bindparam, func, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import schema
from shared.backoff import Backoff
from shared.enums import Category, ChannelType, Endpoint, SubscriptionStatus
from shared.heartbeat import WorkerHeartbeat
from shared.schema import DesiredStateRow, SubscriptionRow, WorkerHeartbeatRow
from shared.tasks import wait_set
from stream_worker.state.desired import DesiredSet, Want
from stream_worker.state.tombstones import MAX_AGE, Tombstone

TopicKey = tuple[Endpoint, str]
StatusUpdate = tuple[SubscriptionStatus, str | None]  # the status and Bybit's reason for a failure

DATABASE_ERRORS: tuple[type[Exception], ...] = (OSError, TimeoutError, sa_exc.DBAPIError, sa_exc.TimeoutError)


def create_engine(database_url: str, timeout: float) -> AsyncEngine:
    return schema.create_engine(database_url, timeout, pool_size=3, max_overflow=2)


class Store:
    """Queries; each call is one bounded transaction and raises one of DATABASE_ERRORS on an outage."""

    def __init__(self, engine: AsyncEngine, timeout: float) -> None:
        self.engine = engine
        self.timeout = timeout

    async def deployment_id(self) -> str:
        """This deployment's id (migration 0008): the routing key prefix of its change notices."""
        async with asyncio.timeout(self.timeout), self.engine.connect() as connection:
            query = select(DesiredStateRow.deployment_id).where(DesiredStateRow.id == 1)
            return str((await connection.execute(query)).scalar_one())

    async def load_desired(self) -> tuple[DesiredSet, list[Tombstone]]:
        """Every live subscription and the revision they belong to, and the pending tombstones (cancelled rows
        whose binding may still be in RabbitMQ), from one snapshot: a tombstone is never newer than the set."""
        pending = (
            ~SubscriptionRow.is_active
            & SubscriptionRow.tombstone_settled_at.is_(None)
            & (SubscriptionRow.cancelled_at > func.now() - MAX_AGE)
        )
        async with asyncio.timeout(self.timeout), self.engine.connect() as connection:
            await connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            revision = (
                await connection.execute(select(DesiredStateRow.revision).where(DesiredStateRow.id == 1))
            ).scalar_one()
            rows = (await connection.execute(select(SubscriptionRow).where(SubscriptionRow.is_active))).all()
            cancelled = (await connection.execute(select(SubscriptionRow).where(pending))).all()
            await connection.rollback()
        wants = [_want_of(row) for row in rows]
        tombstones = []
        for row in cancelled:
            want = _want_of(row)
            tombstones.append(
                Tombstone(
                    subscription_id=want.subscription_id,
                    binding=want.binding,
                    endpoint=want.endpoint,
                    topic=want.topic,
                )
            )
        return DesiredSet(wants, revision=revision), tombstones

    async def settle_tombstones(self, subscription_ids: Collection[uuid.UUID]) -> None:
        """Mark tombstones dealt with, and give up those older than `MAX_AGE` that no owner applied."""
        async with asyncio.timeout(self.timeout), self.engine.begin() as connection:
            await connection.execute(
                update(SubscriptionRow)
                .where(SubscriptionRow.id.in_(list(subscription_ids)), ~SubscriptionRow.is_active)
                .values(tombstone_settled_at=func.now())
            )
            await connection.execute(
                update(SubscriptionRow)
                .where(
                    ~SubscriptionRow.is_active,
                    SubscriptionRow.tombstone_settled_at.is_(None),
                    SubscriptionRow.cancelled_at <= func.now() - MAX_AGE,
                )
                .values(tombstone_settled_at=func.now())
            )

    async def write_statuses(self, statuses: Mapping[TopicKey, tuple[SubscriptionStatus, str | None]]) -> None:
        async with asyncio.timeout(self.timeout), self.engine.begin() as connection:
            for (endpoint, topic), (status, error) in statuses.items():
                await connection.execute(
                    update(SubscriptionRow)
                    .where(
                        SubscriptionRow.is_active,
                        SubscriptionRow.endpoint == endpoint.value,
                        SubscriptionRow.topic == topic,
                    )
                    .values(status=status.value, last_error=error, updated_at=datetime.now(UTC))
                )

    async def write_stale(self, stale: Mapping[TopicKey, int | None]) -> None:
        """`stale_since` of the live rows of each topic: epoch ms, or None when data flows again."""
        async with asyncio.timeout(self.timeout), self.engine.begin() as connection:
            for (endpoint, topic), since_ms in stale.items():
                since = None if since_ms is None else datetime.fromtimestamp(since_ms / 1000, UTC)
                await connection.execute(
                    update(SubscriptionRow)
                    .where(
                        SubscriptionRow.is_active,
                        SubscriptionRow.endpoint == endpoint.value,
                        SubscriptionRow.topic == topic,
                    )
                    .values(stale_since=since, updated_at=datetime.now(UTC))
                )

    async def write_event_times(self, times: Mapping[TopicKey, int]) -> None:
        statement = (
            update(SubscriptionRow)
            .where(
                SubscriptionRow.is_active,
                SubscriptionRow.endpoint == bindparam("b_endpoint"),
                SubscriptionRow.topic == bindparam("b_topic"),
            )
            .values(last_event_at=bindparam("b_at"))
        )
        parameters = [
            {"b_endpoint": endpoint.value, "b_topic": served, "b_at": datetime.fromtimestamp(ms / 1000, UTC)}
            for (endpoint, topic), ms in times.items()
            for served in _served_topics(endpoint, topic)
        ]
        async with asyncio.timeout(self.timeout), self.engine.begin() as connection:
            await connection.execute(statement.execution_options(synchronize_session=False), parameters)

    async def write_heartbeat(self, worker_id: str, heartbeat: WorkerHeartbeat) -> None:
        now = datetime.now(UTC)
        state = heartbeat.to_json()
        statement = insert(WorkerHeartbeatRow).values(worker_id=worker_id, updated_at=now, state=state)
        statement = statement.on_conflict_do_update(
            index_elements=[WorkerHeartbeatRow.worker_id], set_={"updated_at": now, "state": state}
        )
        async with asyncio.timeout(self.timeout), self.engine.begin() as connection:
            await connection.execute(statement)


def _want_of(row: Row[Any]) -> Want:
    """A subscription row, read as columns, as the want it is (or was, for a tombstone)."""
    return Want(
        subscription_id=row.id,
        service=row.requesting_service,
        channel_type=ChannelType(row.channel_type),
        endpoint=Endpoint(row.endpoint),
        topic=row.topic,
        category=Category(row.category) if row.category else None,
        symbol=row.symbol,
    )


def _served_topics(endpoint: Endpoint, topic: str) -> list[str]:
    """A private push arrives on the all-in-one topic (`order`); rows of `order.linear` are served by it too."""
    if endpoint is Endpoint.PRIVATE and "." not in topic:
        return [topic, *(f"{topic}.{category.value}" for category in Category)]
    return [topic]


class WriteRetry:
    """What a batched writer does when PostgreSQL refuses a flush: count it, warn, back off; reset on success."""

    def __init__(
        self,
        what: str,
        *,
        retry_cap: float = 10.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._what = what
        self._backoff = Backoff(0.2, retry_cap, rng or random.Random())
        self._sleep = sleep
        self.failures = 0

    async def failed(self, error: BaseException) -> None:
        self.failures += 1
        delay = self._backoff.next_delay()
        logger.bind(error=type(error).__name__, retry_in_s=round(delay, 2)).warning(
            f"could not write {self._what}; will retry"
        )
        await self._sleep(delay)

    def succeeded(self) -> None:
        self._backoff.reset()


class StateWriter:
    """Coalesces status changes and event times in memory and flushes them in batches."""

    def __init__(
        self,
        store: Store,
        *,
        flush_interval: float = 2.0,
        retry_cap: float = 10.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._flush_interval = flush_interval
        self._retry = WriteRetry("subscription state", retry_cap=retry_cap, rng=rng, sleep=sleep)
        self._statuses: dict[TopicKey, StatusUpdate] = {}
        self._event_times: dict[TopicKey, int] = {}
        self._stale: dict[TopicKey, int | None] = {}
        self._wake = asyncio.Event()

    def set_status(self, endpoint: Endpoint, topic: str, status: SubscriptionStatus, error: str | None = None) -> None:
        self._statuses[(endpoint, topic)] = (status, error)
        self._wake.set()  # statuses are what people watch in the API: write them promptly

    def set_stale(self, endpoint: Endpoint, topic: str, since_ms: int | None) -> None:
        self._stale[(endpoint, topic)] = since_ms
        self._wake.set()

    def touch(self, endpoint: Endpoint, topic: str, at_ms: int) -> None:
        self._event_times[(endpoint, topic)] = at_ms

    @property
    def pending(self) -> int:
        return len(self._statuses) + len(self._event_times) + len(self._stale)

    async def run(self) -> None:
        while True:
            self._wake.clear()
            await wait_set(self._wake, self._flush_interval)
            await self.flush()

    async def flush(self) -> bool:
        """Write what is pending; on an outage keep it (newer facts win) and back off. True if written."""
        statuses, self._statuses = self._statuses, {}
        times, self._event_times = self._event_times, {}
        stale, self._stale = self._stale, {}
        try:
            if statuses:
                await self._store.write_statuses(statuses)
            if stale:
                await self._store.write_stale(stale)
            if times:
                await self._store.write_event_times(times)
        except DATABASE_ERRORS as error:
            self._statuses = {**statuses, **self._statuses}
            self._event_times = {**times, **self._event_times}
            self._stale = {**stale, **self._stale}
            await self._retry.failed(error)
            return False
        self._retry.succeeded()
        return True

    @property
    def failed_flushes(self) -> int:
        return self._retry.failures
