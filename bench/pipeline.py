"""End to end through RabbitMQ, and the publish ceilings measured against the same broker in the same run.

Ours: firehose → the production `Worker` (`bench.clients.bench_worker`) → a real, connected `Publisher` at its
production settings (market: 10,000-event drop-oldest buffer, transient, no confirms, into a classic queue
with max length 100,000; account: blocking 10,000-event buffer, persistent, 1,000 confirms in flight, into a
quorum queue) → a consumer process (`bench.consumer`) counting distinct trade ids, so loss is counted by id.
For the account-event settings the same firehose trades are re-labelled as account events (`AsAccount`):
the Bybit private stream cannot be fire-hosed, and what is measured is the publishing path, which is the same.

Ceilings, each timed until every message has landed (in the queue, or confirmed), with the same envelope
bytes ours publishes for a firehose trade:
- `ceiling.publish`: aiormq `basic_publish` in a loop, no confirms (`wait=False`, its fastest form).
- `ceiling.publish_confirms`: aiormq with publisher confirms, 1,000 publishes gathered per window.
- `ceiling.publish_batched`: our frame encoder writing batches of 256 pre-encoded publishes, no confirms: what
  the broker takes when the client costs next to nothing, i.e. the broker's own ceiling on this machine.
- `latency.ceiling_<rate>`: aiormq publishing stamped envelopes at a fixed rate to the same consumer: the
  broker hop's own latency, which ours cannot go below.
Also cryptofeed's Bybit feed with its RabbitMQ backend on the same firehose (`run_cryptofeed_e2e`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiormq
import msgspec
from aiormq.abc import AbstractChannel, ChannelFrame
from pamqp.commands import Basic

from bench.clients import bench_worker, our_connection
from bench.firehose import FrameBuilder
from shared.enums import ChannelType, Endpoint
from shared.events import EVENT_CONTENT_TYPE
from shared.routing import EVENTS_EXCHANGE, service_queue
from stream_worker.broker.amqp_frames import PublishFrames
from stream_worker.broker.publisher import Publisher
from stream_worker.bybit.events import Push
from stream_worker.bybit.protocol import BybitProtocol
from stream_worker.envelopes.normalize import Normalized, Normalizer
from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.exchange.sockets import Sockets

MARKET_KEY = "trades.linear.BTCUSDT"
ACCOUNT_KEY = "order.linear"
CONFIRM_WINDOW = 1_000
BATCH = 256
IDLE = 2.0  # a consumer that got nothing for this long has got everything that will come


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def vhost(prefix: str = "wsg_bench") -> Iterator[str]:
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
    market_queue: str  # classic, max length 100,000, drop-head: a market-data queue
    account_queue: str  # quorum: an account-data queue


@contextlib.asynccontextmanager
async def running_publisher(url: str) -> AsyncIterator[Broker]:
    service = f"bench-{uuid.uuid4().hex[:6]}"
    publisher = Publisher(url)
    running = asyncio.create_task(publisher.run(), name="publisher")
    try:
        async with asyncio.timeout(15):
            await publisher.wait_connected()
        await publisher.bind(service, ChannelType.TRADES, MARKET_KEY)
        await publisher.bind(service, ChannelType.ORDER, ACCOUNT_KEY)
        yield Broker(
            url, publisher, service_queue(service, ChannelType.TRADES), service_queue(service, ChannelType.ORDER)
        )
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running


def concrete(channel: AbstractChannel) -> aiormq.Channel:
    """aiormq's own channel: its `basic_publish` takes `wait` (False: do not wait for the write), which the abstract
    interface does not declare."""
    assert isinstance(channel, aiormq.Channel)
    return channel


async def purge(url: str, *queues: str) -> None:
    async with aiormq.connect(url) as connection:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_purge(queue)


async def wait_depth(url: str, queue: str, count: int, timeout: float) -> None:
    async with aiormq.connect(url) as connection:
        channel = await connection.channel()
        async with asyncio.timeout(timeout):
            while ((await channel.queue_declare(queue, passive=True)).message_count or 0) < count:
                await asyncio.sleep(0.01)


# -- the consumer process -------------------------------------------------------------------------------------


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
    result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
    return result


# -- ours -------------------------------------------------------------------------------------------------------


class AsAccount(Normalizer):
    """Bench only: a normalizer whose trades come out as account events (persistent, confirmed, never dropped,
    routed to `order.linear`), to run the firehose through the account-data settings."""

    def __init__(self, inner: Normalizer) -> None:
        super().__init__(Endpoint.LINEAR)
        self._inner = inner

    def normalize(self, push: Push, *, received_ms: int, trace_id: str) -> Normalized:
        events = self._inner.normalize(push, received_ms=received_ms, trace_id=trace_id).events
        return Normalized(
            events=[Outgoing(item.envelope, ChannelType.ORDER, ACCOUNT_KEY, account=True) for item in events]
        )


async def one_session(connection: Sockets) -> None:
    """Run the connection until its first session ends: the firehose closes after its frames, and a reconnect
    would stream a second, different set of trades into the count."""
    async with asyncio.TaskGroup() as tasks:
        running = tasks.create_task(connection.run())
        while not connection.first.connects:
            await asyncio.sleep(0.005)
        while connection.connected:
            await asyncio.sleep(0.005)
        running.cancel()


async def run_ours_e2e(
    broker: Broker,
    firehose: str,
    trades: int,
    *,
    rate: int = 0,
    per_frame: int = 10,
    max_seconds: float,
    uvloop: bool,
    account: bool = False,
) -> dict[str, object]:
    """Stream `trades` unique trades (at `rate` trades/s, 0 = as fast as we read) through the worker."""
    queue = broker.account_queue if account else broker.market_queue
    await purge(broker.url, queue)
    before = broker.publisher.stats
    consumer = await start_consumer(broker.url, queue, trades, idle=IDLE, max_seconds=max_seconds, uvloop=uvloop)
    base = f"{firehose}/frames={trades // per_frame}/trades={per_frame}/rate={rate}/unique=1"
    worker = bench_worker(base, broker.publisher)
    if account:
        worker.normalizers[Endpoint.LINEAR] = AsAccount(worker.normalizers[Endpoint.LINEAR])
    cpu = time.process_time()
    reading = asyncio.create_task(one_session(our_connection(worker)), name="ours-e2e")
    try:
        result = await consumer_result(consumer, max_seconds + 30)
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
    # This process is the worker (socket, normalize, publish): its CPU per trade read is what a worker costs.
    result["cpu_us_per_trade"] = (time.process_time() - cpu) / trades * 1e6
    after = broker.publisher.stats
    result["dropped_by_publisher"] = sum(after.dropped.values()) - sum(before.dropped.values())
    kind = "account" if account else "market"
    result["published"] = after.published[kind] - before.published[kind]
    return result


# -- ceilings ---------------------------------------------------------------------------------------------------


def trade_body() -> bytes:
    """The envelope ours publishes for one firehose trade, encoded: the ceilings publish these bytes."""
    frame = FrameBuilder(1).frame(0, time.time_ns() // 1000)
    [push] = BybitProtocol(endpoint=Endpoint.LINEAR).receive(frame, 0.0)
    assert isinstance(push, Push)
    [item] = Normalizer(Endpoint.LINEAR).normalize(push, received_ms=1, trace_id="bench-1").events
    envelope = msgspec.structs.replace(item.envelope, published_ts=int(time.time() * 1000))
    return msgspec.json.encode(envelope)


def _properties(delivery_mode: int) -> Basic.Properties:
    return Basic.Properties(
        content_type=EVENT_CONTENT_TYPE, delivery_mode=delivery_mode, message_id="m", headers={"trace_id": "t"}
    )


async def run_publish_ceiling(broker: Broker, count: int) -> dict[str, object]:
    """aiormq, no confirms, `wait=False`: publish `count`, timed until all are in the market queue."""
    await purge(broker.url, broker.market_queue)
    body, properties = trade_body(), _properties(1)
    async with aiormq.connect(broker.url) as connection:
        channel = concrete(await connection.channel(publisher_confirms=False))
        started = time.perf_counter()
        for _ in range(count):
            await channel.basic_publish(
                body, exchange=EVENTS_EXCHANGE, routing_key=MARKET_KEY, properties=properties, wait=False
            )
        await wait_depth(broker.url, broker.market_queue, count, 60)
        elapsed = time.perf_counter() - started
    return {"trades_per_s": count / elapsed, "messages": count}


async def run_batched_ceiling(broker: Broker, count: int) -> dict[str, object]:
    """Pre-encoded publishes, `BATCH` per write on aiormq's writer, timed until all are in the queue."""
    await purge(broker.url, broker.market_queue)
    body = trade_body()
    async with aiormq.connect(broker.url) as connection:
        channel = await connection.channel(publisher_confirms=False)
        assert isinstance(channel, aiormq.Channel)
        frames = PublishFrames(channel.number, EVENTS_EXCHANGE, EVENT_CONTENT_TYPE, 131_072)
        one = frames.encode(MARKET_KEY, body, message_id="m", trace_id="t", timestamp=1, delivery_mode=1)
        started = time.perf_counter()
        for start in range(0, count, BATCH):
            # One pre-encoded frame per batch straight onto aiormq's writer: as little client work as possible.
            drained = channel.create_future()
            payload = one * min(BATCH, count - start)
            await channel.write_queue.put(ChannelFrame(payload=payload, should_close=False, drain_future=drained))
            await drained
        await wait_depth(broker.url, broker.market_queue, count, 60)
        elapsed = time.perf_counter() - started
    return {"trades_per_s": count / elapsed, "messages": count}


async def run_confirm_ceiling(broker: Broker, count: int) -> dict[str, object]:
    """aiormq with publisher confirms, windows of 1,000 gathered, into the quorum queue: timed to the last ack."""
    await purge(broker.url, broker.account_queue)
    body, properties = trade_body(), _properties(2)
    async with aiormq.connect(broker.url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        started = time.perf_counter()
        for start in range(0, count, CONFIRM_WINDOW):
            publishes = (
                channel.basic_publish(body, exchange=EVENTS_EXCHANGE, routing_key=ACCOUNT_KEY, properties=properties)
                for _ in range(min(CONFIRM_WINDOW, count - start))
            )
            await asyncio.gather(*publishes)
        elapsed = time.perf_counter() - started
    await purge(broker.url, broker.account_queue)
    return {"trades_per_s": count / elapsed, "messages": count}


async def run_latency_ceiling(
    broker: Broker, trades: int, *, rate: int, per_frame: int = 10, max_seconds: float, uvloop: bool
) -> dict[str, object]:
    """The broker's own latency at a fixed rate: aiormq publishes `per_frame` small envelopes (stamped `bt`
    now, unique ids) every `per_frame / rate` s, straight into the market queue, to the same consumer. What
    ours adds is its latency minus this."""
    await purge(broker.url, broker.market_queue)
    consumer = await start_consumer(
        broker.url, broker.market_queue, trades, idle=IDLE, max_seconds=max_seconds, uvloop=uvloop
    )
    encode, properties, run = msgspec.json.encode, _properties(1), uuid.uuid4().hex[:8]
    loop = asyncio.get_running_loop()
    async with aiormq.connect(broker.url) as connection:
        channel = concrete(await connection.channel(publisher_confirms=False))
        started, interval = loop.time(), per_frame / rate
        for frame in range(trades // per_frame):
            delay = started + frame * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now_us = time.time_ns() // 1000
            for n in range(frame * per_frame, (frame + 1) * per_frame):
                body = encode({"event_id": f"{run}-{n}", "payload": {"i": str(n), "bt": now_us}})
                await channel.basic_publish(
                    body, exchange=EVENTS_EXCHANGE, routing_key=MARKET_KEY, properties=properties, wait=False
                )
        return await consumer_result(consumer, max_seconds + 30)


# -- cryptofeed + its RabbitMQ backend ----------------------------------------------------------------------


async def run_cryptofeed_e2e(
    url: str, firehose: str, trades: int, *, per_frame: int = 10, max_seconds: float, uvloop: bool
) -> dict[str, object]:
    """cryptofeed's Bybit feed with its RabbitMQ backend (`TradeRabbit`, aio-pika, default exchange, one
    durable queue) on the same firehose, as its docs wire it. It awaits a confirm per trade, so it gets fewer
    trades; `max_seconds` bounds it whatever the machine does (the rate stays valid on a partial run)."""
    from cryptofeed.backends.rabbitmq import TradeRabbit

    from bench.clients import Meter, run_cryptofeed

    queue = f"bench-cryptofeed-{uuid.uuid4().hex[:6]}"
    async with aiormq.connect(url) as connection:
        channel = await connection.channel()
        await channel.queue_declare(queue, durable=True, auto_delete=False)
    consumer = await start_consumer(
        url, queue, trades, idle=IDLE, max_seconds=max_seconds + 5, kind="cryptofeed", uvloop=uvloop
    )
    host = url.removeprefix("amqp://")
    backend = TradeRabbit(host=host, queue_name=queue, routing_key=queue)
    stream = f"{firehose}/frames={trades // per_frame}/trades={per_frame}/unique=1/v5/public/linear"
    meter = Meter(expected_trades=trades, max_seconds=max_seconds)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max_seconds + 10):
                await run_cryptofeed(stream, meter, per_frame, backend=backend)
        result = await consumer_result(consumer, max_seconds + 30)
        if meter.trades < trades:  # cut short by max_seconds: count loss against what cryptofeed handled
            result["expected"] = meter.trades
            result["lost"] = max(0, meter.trades - int(str(result["distinct"])))
        result["complete"] = meter.trades >= trades
        return result
    finally:
        if consumer.returncode is None:
            consumer.kill()
            await consumer.wait()
        # TradeRabbit never closes the aio-pika connection it opened; left open, it logs a traceback when
        # the bench deletes its vhost at the end.
        opened = getattr(backend.conn, "_connection", None)
        if opened is not None:
            with contextlib.suppress(Exception):
                await opened.close()
        async with aiormq.connect(url) as connection:
            channel = await connection.channel()
            await channel.queue_delete(queue)
