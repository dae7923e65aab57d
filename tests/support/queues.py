"""Consume a queue the worker declares, once it exists: a consumer never declares the gateway's queues."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from tests.support.waiting import wait_until


@asynccontextmanager
async def consuming_with(
    rabbitmq_url: str, queue_name: str, on_message: Callable[[AbstractIncomingMessage], Awaitable[None]], timeout: float
) -> AsyncIterator[None]:
    """Hand every message of `queue_name` to `on_message`, waiting up to `timeout` s for the queue to appear."""
    connection = await aio_pika.connect(rabbitmq_url)
    try:

        async def consume_if_declared() -> bool:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(queue_name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return False
            await queue.consume(on_message)
            return True

        await wait_until(consume_if_declared, timeout=timeout, interval=0.1, what=f"queue {queue_name}")
        yield
    finally:
        await connection.close()
