"""Listens for change notices on `ws-gateway.commands` through this worker's durable queue.

Notices are the fast path. Whenever the listener (re)connects it asks for a full re-read of the desired set,
because notices published while it was away may be gone (level-triggered reconciliation).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import aio_pika
import msgspec
from aiormq.exceptions import AMQPError
from loguru import logger

from shared.backoff import Backoff
from shared.commands import COMMAND_DECODER, Command
from shared.config import redact_url
from shared.routing import COMMANDS_EXCHANGE

AMQP_ERRORS: tuple[type[Exception], ...] = (AMQPError, ConnectionError, OSError, TimeoutError)
# A worker that is gone for good should not leave its queue behind forever.
ABANDONED_QUEUE_EXPIRES_MS = 24 * 3600 * 1000


def command_queue(worker_id: str) -> str:
    return f"ws-gateway.worker.{worker_id}.commands"


class CommandListener:
    def __init__(
        self,
        rabbitmq_url: str,
        worker_id: str,
        on_command: Callable[[Command], Awaitable[None]],
        reread: Callable[[], Awaitable[None]],  # converge to PostgreSQL: after (re)connecting, or an unreadable notice
        *,
        timeout: float = 10.0,
        reconnect_cap: float = 10.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._url = rabbitmq_url
        self.queue_name = command_queue(worker_id)
        self._on_command = on_command
        self._reread = reread
        self._timeout = timeout
        self._backoff = Backoff(0.2, reconnect_cap, rng or random.Random())
        self._sleep = sleep
        self.connected = False
        self.received = 0
        self.undecodable = 0

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
                reason = "connection closed"
            except AMQP_ERRORS as error:
                reason = type(error).__name__
            self.connected = False
            delay = self._backoff.next_delay()
            logger.bind(reason=reason, retry_in_s=round(delay, 2), url=redact_url(self._url)).warning(
                "command listener disconnected; reconnecting"
            )
            await self._sleep(delay)

    async def _listen(self) -> None:
        connection = await aio_pika.connect(self._url, timeout=self._timeout)
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=100)
            exchange = await channel.declare_exchange(COMMANDS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
            queue = await channel.declare_queue(
                self.queue_name, durable=True, arguments={"x-expires": ABANDONED_QUEUE_EXPIRES_MS}
            )
            await queue.bind(exchange, "#")
            self.connected = True
            self._backoff.reset()
            logger.bind(queue=self.queue_name).info("listening for change notices")
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
