"""Listens for change notices on `ws-gateway.commands` through this worker process's own queue.

Notices are the fast path. Whenever the listener (re)connects it asks for a full re-read of the desired set,
because notices published while it was away may be gone (level-triggered reconciliation). So the queue need not
outlive the connection: it is exclusive, named for this process (worker id and instance id), and bound to this
deployment's notices only (`shared.routing.command_binding`). Two deployments on one vhost, or a worker id used
by both, never take each other's notices, and a stopped worker leaves no queue behind.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import aio_pika
import msgspec
from aiormq.exceptions import AMQPError, ChannelInvalidStateError
from loguru import logger

from shared.backoff import Backoff
from shared.commands import COMMAND_DECODER, Command
from shared.config import redact_url
from shared.routing import COMMANDS_EXCHANGE, command_binding, command_queue
from stream_worker.state.persistence import DATABASE_ERRORS

# ChannelInvalidStateError is a RuntimeError, not an AMQPError: a slow broker's RPC timeout closes the channel
# with it, and that must be a reconnect, not the end of the worker (seen under load in the e2e suite).
AMQP_ERRORS: tuple[type[Exception], ...] = (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, TimeoutError)


class CommandListener:
    def __init__(
        self,
        rabbitmq_url: str,
        worker_id: str,
        instance_id: str,
        deployment_id: Callable[[], Awaitable[str]],  # read from PostgreSQL, where the API reads it too
        on_command: Callable[[Command], Awaitable[None]],
        reread: Callable[[], Awaitable[None]],  # converge to PostgreSQL: after (re)connecting, or an unreadable notice
        *,
        timeout: float = 10.0,
        reconnect_cap: float = 10.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._url = rabbitmq_url
        self.queue_name = command_queue(worker_id, instance_id)
        self._read_deployment_id = deployment_id
        self.deployment_id: str | None = None
        self._on_command = on_command
        self._reread = reread
        self._timeout = timeout
        self._backoff = Backoff(0.2, reconnect_cap, rng or random.Random())
        self._sleep = sleep
        self.connected = False
        self._down_since: float | None = time.monotonic()  # not listening yet counts as down, from the start
        self.received = 0
        self.undecodable = 0

    def down_for(self, now: float) -> float | None:
        """Seconds (monotonic `now`) since the listener lost RabbitMQ or since start; None while listening."""
        return None if self._down_since is None else max(0.0, now - self._down_since)

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
                reason = "connection closed"
            except (*AMQP_ERRORS, *DATABASE_ERRORS) as error:
                reason = type(error).__name__
            self.connected = False
            if self._down_since is None:
                self._down_since = time.monotonic()
            delay = self._backoff.next_delay()
            logger.bind(reason=reason, retry_in_s=round(delay, 2), url=redact_url(self._url)).warning(
                "command listener disconnected; reconnecting"
            )
            await self._sleep(delay)

    async def _listen(self) -> None:
        if self.deployment_id is None:
            self.deployment_id = await self._read_deployment_id()
        connection = await aio_pika.connect(self._url, timeout=self._timeout)
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=100)
            exchange = await channel.declare_exchange(COMMANDS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
            queue = await channel.declare_queue(self.queue_name, exclusive=True)
            await queue.bind(exchange, command_binding(self.deployment_id))
            self.connected = True
            self._down_since = None
            self._backoff.reset()
            logger.bind(queue=self.queue_name, deployment_id=self.deployment_id).info("listening for change notices")
            await self._reread()
            async with queue.iterator() as messages:
                async for message in messages:
                    try:
                        command = COMMAND_DECODER.decode(message.body)
                    except (msgspec.DecodeError, msgspec.ValidationError) as error:
                        self.undecodable += 1
                        logger.bind(error=str(error)).warning("dropping an undecodable change notice; re-reading")
                        await message.reject(requeue=False)
                        # What it said is in PostgreSQL: converge to that now instead of at the next timer.
                        await self._reread()
                        continue
                    self.received += 1
                    with logger.contextualize(trace_id=command.trace_id):
                        await self._on_command(command)
                    await message.ack()
