"""A change notice the worker cannot read is dropped, and the worker converges to PostgreSQL at once instead of
waiting for its reconcile timer: what the notice said is there."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika

from shared.routing import CHANGE_NOTICE_ROUTING_KEY, COMMANDS_EXCHANGE, command_routing_key
from stream_worker.broker.commands import CommandListener
from tests.support.waiting import wait_until


async def test_an_unreadable_notice_is_dropped_and_triggers_a_reread(rabbitmq_url: str) -> None:
    rereads: list[int] = []
    commands: list[object] = []

    async def reread() -> None:
        rereads.append(1)

    async def on_command(command: object) -> None:
        commands.append(command)

    deployment_id = uuid.uuid4().hex

    async def read_deployment_id() -> str:
        return deployment_id

    listener = CommandListener(
        rabbitmq_url, f"test-{uuid.uuid4().hex[:8]}", "instance", read_deployment_id, on_command, reread=reread
    )
    task = asyncio.create_task(listener.run())
    try:
        await wait_until(lambda: listener.connected and len(rereads) == 1, what="listening, after one re-read")
        connection = await aio_pika.connect(rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(COMMANDS_EXCHANGE)
            notice = b'{"kind": "subscriptions_changed", "revision": 3, "changes": [{"action": "paused"}]}'
            await exchange.publish(
                aio_pika.Message(notice), routing_key=command_routing_key(deployment_id, CHANGE_NOTICE_ROUTING_KEY)
            )
        await wait_until(lambda: len(rereads) == 2, what="a re-read after the unreadable notice")
        assert (listener.undecodable, commands) == (1, [])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
