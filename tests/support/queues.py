"""Consume a queue the worker declares, once it exists: a consumer never declares the gateway's queues."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from tests.support.waiting import wait_until


@asynccontextmanager
async def consuming_with(
    rabbitmq_url: str, queue_name: str, on_message: Callable[[AbstractIncomingMessage], Awaitable[None]], timeout: float
) -> AsyncIterator[None]:
    """Hand every message of `queue_name` to `on_message`, waiting up to `timeout` s for the queue to appear.

    A quorum queue that was declared a moment ago may not have its Raft leader yet; RabbitMQ then answers
    `basic.consume` by closing the whole connection with 541 INTERNAL_ERROR (seen in CI on a loaded box). That is
    "not ready yet", the same as a queue not declared yet: open a new connection and try again.
    """
    connection: AbstractConnection = await aio_pika.connect(rabbitmq_url)
    try:

        async def consume_if_declared() -> bool:
            nonlocal connection
            if connection.is_closed:
                connection = await aio_pika.connect(rabbitmq_url)
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(queue_name, passive=True)
                await queue.consume(on_message)
            except aio_pika.exceptions.ChannelClosed:
                return False
            except aiormq.exceptions.ConnectionClosed:
                await connection.close()
                return False
            return True

        await wait_until(consume_if_declared, timeout=timeout, interval=0.1, what=f"queue {queue_name}")
        yield
    finally:
        await connection.close()
