"""Change notices: written to the outbox in the writer's transaction, relayed to RabbitMQ by one task.

The outbox is why a write accepted while RabbitMQ is down still reaches the workers: the notice is committed
with the change and published when the broker is back. Relaying may publish a notice twice (published, then
the delete failed); workers ignore revisions they have already applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aiormq.exceptions import AMQPError
from loguru import logger
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from control_api.db import Database
from control_api.errors import DatabaseUnavailable
from shared.backoff import Backoff, retry
from shared.commands import COMMAND_ENCODER, SnapshotRequested, SubscriptionChange, SubscriptionsChanged
from shared.enums import ChannelType, Endpoint
from shared.events import EVENT_CONTENT_TYPE
from shared.routing import (
    CHANGE_NOTICE_ROUTING_KEY,
    COMMANDS_EXCHANGE,
    SNAPSHOT_REQUEST_ROUTING_KEY,
    command_routing_key,
)
from shared.schema import DesiredStateRow, OutboxRow, SubscriptionRow
from shared.tasks import wait_set

RELAY_BATCH = 100
AMQP_ERRORS: tuple[type[Exception], ...] = (AMQPError, ConnectionError, OSError, TimeoutError)
RETRYABLE: tuple[type[Exception], ...] = (*AMQP_ERRORS, DatabaseUnavailable)


async def record_change(session: AsyncSession, changes: list[SubscriptionChange], trace_id: str) -> int:
    """Bump the desired-state revision and queue the notice, inside the caller's transaction."""
    revision: int = (
        await session.execute(
            update(DesiredStateRow)
            .where(DesiredStateRow.id == 1)
            .values(revision=DesiredStateRow.revision + 1, updated_at=func.now())
            .returning(DesiredStateRow.revision)
        )
    ).scalar_one()
    notice = SubscriptionsChanged(
        revision=revision, trace_id=trace_id, created_at_ms=int(time.time() * 1000), changes=changes
    )
    session.add(
        OutboxRow(
            exchange=COMMANDS_EXCHANGE,
            routing_key=CHANGE_NOTICE_ROUTING_KEY,
            body=COMMAND_ENCODER.encode(notice),
            message_id=f"revision-{revision}",
            trace_id=trace_id,
        )
    )
    return revision


async def record_snapshot_request(session: AsyncSession, row: SubscriptionRow, trace_id: str) -> None:
    """Queue a snapshot request for the workers; the desired state does not change, so no revision."""
    command = SnapshotRequested(
        subscription_id=row.id,
        requesting_service=row.requesting_service,
        channel_type=ChannelType(row.channel_type),
        endpoint=Endpoint(row.endpoint),
        topic=row.topic,
        trace_id=trace_id,
        created_at_ms=int(time.time() * 1000),
    )
    session.add(
        OutboxRow(
            exchange=COMMANDS_EXCHANGE,
            routing_key=SNAPSHOT_REQUEST_ROUTING_KEY,
            body=COMMAND_ENCODER.encode(command),
            message_id=f"snapshot-{uuid.uuid4().hex}",
            trace_id=trace_id,
        )
    )


class OutboxRelay:
    """Publishes outbox rows in order, with publisher confirms, deleting each batch once confirmed."""

    def __init__(
        self,
        database: Database,
        rabbitmq_url: str,
        *,
        retry_max: float = 5.0,
        poll_interval: float = 1.0,
        connect_timeout: float = 5.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._database = database
        self._url = rabbitmq_url
        self._backoff = Backoff(0.1, retry_max, rng or random.Random())
        self._poll_interval = poll_interval
        self._connect_timeout = connect_timeout
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._connection: AbstractConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._deployment_id: str | None = None  # read once: it never changes under a running API
        self.published = 0

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    def wake(self) -> None:
        """A writer committed a notice: relay it now instead of at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Relay forever; outages of RabbitMQ or PostgreSQL are waited out with capped, jittered backoff."""
        try:
            await retry(
                self._relay_session, errors=RETRYABLE, backoff=self._backoff, on_error=self._on_error, sleep=self._sleep
            )
        finally:
            await self._disconnect()

    async def _relay_session(self) -> None:
        """Relay until a dependency fails (raises); the backoff restarts from its first step once a batch went out."""
        try:
            deployment_id = await self._read_deployment_id()
            exchange = await self._ensure_exchange()
            while True:
                self._wake.clear()
                while await self._relay_batch(exchange, deployment_id) == RELAY_BATCH:
                    pass
                self._backoff.reset()
                await wait_set(self._wake, self._poll_interval)
        except RETRYABLE as error:
            if not isinstance(error, DatabaseUnavailable):
                await self._disconnect()  # a broker error may leave a half-open channel: start clean
            raise

    def _on_error(self, error: BaseException, delay: float) -> None:
        logger.bind(error=type(error).__name__, retry_in_s=round(delay, 2)).warning(
            "outbox relay waiting for its dependencies"
        )

    async def _ensure_exchange(self) -> AbstractExchange:
        if self._exchange is not None and self.connected:
            return self._exchange
        await self._disconnect()
        self._connection = await aio_pika.connect(self._url, timeout=self._connect_timeout)
        channel: AbstractChannel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await channel.declare_exchange(COMMANDS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        logger.info("outbox relay connected to RabbitMQ")
        return self._exchange

    async def _disconnect(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None and not connection.is_closed:
            # A close that fails means the connection is already gone: nothing more to release.
            with contextlib.suppress(*AMQP_ERRORS):
                async with asyncio.timeout(self._connect_timeout):
                    await connection.close()

    async def _read_deployment_id(self) -> str:
        if self._deployment_id is None:
            async with self._database.transaction() as session:
                query = select(DesiredStateRow.deployment_id).where(DesiredStateRow.id == 1)
                self._deployment_id = (await session.execute(query)).scalar_one()
        return self._deployment_id

    async def _relay_batch(self, exchange: AbstractExchange, deployment_id: str) -> int:
        async with self._database.transaction() as session:
            rows = (
                await session.scalars(
                    select(OutboxRow).order_by(OutboxRow.id).limit(RELAY_BATCH).with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            for row in rows:
                # Not mandatory: with no worker queue bound yet the notice is simply unroutable, and a worker
                # that starts later converges from PostgreSQL anyway.
                await exchange.publish(
                    aio_pika.Message(
                        body=row.body,
                        content_type=EVENT_CONTENT_TYPE,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=row.message_id,
                        headers={"trace_id": row.trace_id},
                    ),
                    # Only this deployment's workers bind its id; rows keep the bare key (shared.routing).
                    routing_key=command_routing_key(deployment_id, row.routing_key),
                    mandatory=False,
                    timeout=self._connect_timeout,
                )
            await session.execute(delete(OutboxRow).where(OutboxRow.id.in_([r.id for r in rows])))
        self.published += len(rows)
        logger.bind(notices=len(rows), last_message_id=rows[-1].message_id).debug("notices relayed")
        return len(rows)

    async def pending(self) -> int | None:
        try:
            async with self._database.transaction() as session:
                return int((await session.execute(select(func.count()).select_from(OutboxRow))).scalar_one())
        except DatabaseUnavailable:
            return None
