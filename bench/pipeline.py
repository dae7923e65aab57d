"""End to end through RabbitMQ: firehose → our worker pieces → `Publisher` → queue → a consumer process.

The worker pieces are wired as `Worker._on_push` wires them (see `bench.clients.push_handler`) with a real,
connected `Publisher` at its production market-data settings (10,000-event drop-oldest buffer, transient
messages, no confirms) and the production market queue (max length 100,000). The consumer
(`bench.consumer`) runs in its own process and counts distinct trade ids, so loss is counted by id.

Also here: the no-confirm publish ceiling, `bench.publish.raw_market`, on the same broker and vhost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bench.clients import our_connection, push_handler
from bench.publish import raw_market
from shared.enums import ChannelType
from shared.routing import service_queue
from stream_worker.connection import Connection
from stream_worker.publisher import Publisher

MARKET_KEY = "trades.linear.BTCUSDT"


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def vhost(prefix: str = "wsg_bench") -> object:
    """A fresh RabbitMQ vhost for guest, deleted afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        with contextlib.suppress(Exception):
            rabbitmqctl("delete_vhost", name)


@dataclass
class Broker:
    url: str
    publisher: Publisher
    queue: str


@contextlib.asynccontextmanager
async def running_publisher(url: str) -> AsyncIterator[Broker]:
    service = f"bench-{uuid.uuid4().hex[:6]}"
    publisher = Publisher(url)
    running = asyncio.create_task(publisher.run(), name="publisher")
    try:
        async with asyncio.timeout(15):
            await publisher.wait_connected()
        await publisher.bind(service, ChannelType.TRADES, MARKET_KEY)
        yield Broker(url, publisher, service_queue(service, ChannelType.TRADES))
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running


async def purge(broker: Broker) -> None:
    import aiormq

    async with aiormq.connect(broker.url) as connection:
        channel = await connection.channel()
        await channel.queue_purge(broker.queue)


async def start_consumer(
    url: str, queue: str, expect: int, *, idle: float, max_seconds: float, kind: str = "ours", uvloop: bool = True
) -> asyncio.subprocess.Process:
    args = [sys.executable, "-m", "bench.consumer", "--url", url, "--queue", queue, "--expect", str(expect)]
    args += ["--idle", str(idle), "--max-seconds", str(max_seconds), "--format", kind]
    if not uvloop:
        args.append("--no-uvloop")
    process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    async with asyncio.timeout(30):
        line = await process.stdout.readline()
    if line.strip() != b"READY":
        raise RuntimeError(f"consumer did not start: {line!r}")
    return process


async def consumer_result(process: asyncio.subprocess.Process, timeout: float) -> dict[str, object]:
    assert process.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            out = await process.stdout.read()
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return json.loads(out.decode().strip().splitlines()[-1])


async def one_session(connection: Connection) -> None:
    """Run the connection until its first session ends: the firehose closes after its frames, and a reconnect
    would stream a second, different set of trades into the count."""
    async with asyncio.TaskGroup() as tasks:
        running = tasks.create_task(connection.run())
        while not connection.connects:
            await asyncio.sleep(0.005)
        while connection.connected:
            await asyncio.sleep(0.005)
        running.cancel()


async def run_ours_e2e(
    broker: Broker, firehose: str, trades: int, *, rate: int = 0, per_frame: int = 10, max_seconds: float, uvloop: bool
) -> dict[str, object]:
    """Stream `trades` unique trades (at `rate` trades/s, 0 = as fast as we read) through our pieces."""
    await purge(broker)
    before = broker.publisher.stats
    consumer = await start_consumer(broker.url, broker.queue, trades, idle=3.0, max_seconds=max_seconds, uvloop=uvloop)
    url = f"{firehose}/frames={trades // per_frame}/trades={per_frame}/rate={rate}/unique=1/v5/public/linear"
    connection = our_connection(url, push_handler(broker.publisher, None), compression=False)
    reading = asyncio.create_task(one_session(connection), name="ours-e2e")
    try:
        result = await consumer_result(consumer, max_seconds + 30)
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
    after = broker.publisher.stats
    result["dropped_by_publisher"] = sum(after.dropped.values()) - sum(before.dropped.values())
    result["published"] = after.published["market"] - before.published["market"]
    return result


async def run_publish_ceiling(broker: Broker, count: int) -> dict[str, object]:
    await purge(broker)
    rate = await raw_market(broker.url, count)
    return {"trades_per_s": rate, "messages": count}


async def run_cryptofeed_e2e(url: str, firehose: str, trades: int, *, per_frame: int = 10, max_seconds: float,
                             uvloop: bool) -> dict[str, object]:  # fmt: skip
    """cryptofeed's Bybit feed with its RabbitMQ backend (`TradeRabbit`, aio-pika, default exchange, one
    durable queue) on the same firehose, as its docs wire it. It awaits each publish (aio-pika's confirms)."""
    import aiormq
    from cryptofeed.backends.rabbitmq import TradeRabbit

    from bench.clients import Meter, run_cryptofeed

    queue = f"bench-cryptofeed-{uuid.uuid4().hex[:6]}"
    async with aiormq.connect(url) as connection:
        channel = await connection.channel()
        await channel.queue_declare(queue, durable=True, auto_delete=False)
    consumer = await start_consumer(url, queue, trades, idle=3.0, max_seconds=max_seconds, kind="cryptofeed",
                                    uvloop=uvloop)  # fmt: skip
    host = url.removeprefix("amqp://")
    backend = TradeRabbit(host=host, queue_name=queue, routing_key=queue)
    stream = f"{firehose}/frames={trades // per_frame}/trades={per_frame}/unique=1/v5/public/linear"
    meter = Meter(expected_trades=trades + per_frame, max_seconds=max_seconds)
    try:
        async with asyncio.timeout(max_seconds + 10):
            await run_cryptofeed(stream, meter, per_frame, backend=backend)
        return await consumer_result(consumer, max_seconds + 30)
    finally:
        if consumer.returncode is None:
            consumer.kill()
            await consumer.wait()
        async with aiormq.connect(url) as connection:
            channel = await connection.channel()
            await channel.queue_delete(queue)
