"""Publisher throughput against a real RabbitMQ: `uv run python -m bench.publish [--url URL] [--json PATH]`.

Four loops, interleaved and repeated, all into the same exchange and queues (one market queue with the
production max length, one quorum account queue), with the same envelope:

- raw market: aiormq, channel without confirms, `await basic_publish(...)` per message with a pre-encoded body
  and pre-built properties: the ceiling for market data. Measured with aiormq's default `wait=True` (each
  publish waits for its write) and with `wait=False`.
- ours market: `Publisher.offer_market` for every message, timed until `wait_drained()`.
- raw account: aiormq, confirm channel, `basic_publish` tasks gathered in windows of 1,000 (pipelined confirms).
- ours account: `Publisher.put_account` from a producer task, timed until `wait_drained()` (every confirm in).

Reports the median msgs/s of each and ours as a share of raw. Queues are purged between runs and deleted at
the end. Needs a RabbitMQ at --url (default: BENCH_RABBITMQ_URL or amqp://guest:guest@127.0.0.1:5672/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiormq
import msgspec
from aiormq.abc import AbstractChannel
from pamqp.commands import Basic

from shared.enums import ChannelType
from shared.events import EVENT_CONTENT_TYPE, EventEnvelope
from shared.routing import EVENTS_EXCHANGE, service_queue
from stream_worker.broker.publisher import Publisher
from stream_worker.envelopes.outgoing import Outgoing

MARKET_KEY = "trades.linear.BTCUSDT"
ACCOUNT_KEY = "order.linear"
WINDOW = 1_000


def envelope(n: int, channel_type: ChannelType) -> EventEnvelope:
    """About the size of a normalized Bybit trade or order push."""
    return EventEnvelope(
        event_id=f"{channel_type.value}-{n:08d}",
        event_type=channel_type.value,
        category="linear",
        symbol="BTCUSDT",
        topic="publicTrade.BTCUSDT" if channel_type is ChannelType.TRADES else "order",
        exchange_ts=1_700_000_000_000 + n,
        received_ts=1_700_000_000_005 + n,
        published_ts=0,
        trace_id=f"bench-{n}",
        payload={"T": 1_700_000_000_000 + n, "s": "BTCUSDT", "S": "Buy", "v": "0.001", "p": "30000.50", "i": str(n)},
    )


def items(count: int, channel_type: ChannelType, key: str, account: bool) -> list[Outgoing]:
    return [
        Outgoing(envelope=envelope(n, channel_type), channel_type=channel_type, routing_key=key, account=account)
        for n in range(count)
    ]


async def raw_market(url: str, count: int, *, wait: bool = True) -> float:
    body = msgspec.json.encode(envelope(0, ChannelType.TRADES))
    properties = Basic.Properties(content_type=EVENT_CONTENT_TYPE, delivery_mode=1, headers={"trace_id": "t"})
    async with aiormq.connect(url) as connection:
        channel = await connection.channel(publisher_confirms=False)
        started = time.perf_counter()
        for _ in range(count):
            await channel.basic_publish(
                body, exchange=EVENTS_EXCHANGE, routing_key=MARKET_KEY, properties=properties, wait=wait
            )
        return count / (time.perf_counter() - started)


async def raw_account(url: str, count: int) -> float:
    body = msgspec.json.encode(envelope(0, ChannelType.ORDER))
    properties = Basic.Properties(content_type=EVENT_CONTENT_TYPE, delivery_mode=2, headers={"trace_id": "t"})
    async with aiormq.connect(url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        started = time.perf_counter()
        for start in range(0, count, WINDOW):
            await asyncio.gather(
                *(
                    channel.basic_publish(
                        body, exchange=EVENTS_EXCHANGE, routing_key=ACCOUNT_KEY, properties=properties
                    )
                    for _ in range(min(WINDOW, count - start))
                )
            )
        return count / (time.perf_counter() - started)


async def ours_market(publisher: Publisher, batch: list[Outgoing]) -> float:
    started = time.perf_counter()
    for item in batch:
        publisher.offer_market(item)
    await publisher.wait_drained()
    return len(batch) / (time.perf_counter() - started)


async def ours_account(publisher: Publisher, batch: list[Outgoing]) -> float:
    async def produce() -> None:
        for item in batch:
            await publisher.put_account(item)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(produce())
    await publisher.wait_drained()
    return len(batch) / (time.perf_counter() - started)


async def purge(channel: AbstractChannel, *queues: str) -> None:
    for queue in queues:
        await channel.queue_purge(queue)


async def bench(url: str, market_count: int, account_count: int, repeats: int) -> dict[str, float]:
    service = f"bench-{uuid.uuid4().hex[:8]}"
    market_queue, account_queue = service_queue(service, ChannelType.TRADES), service_queue(service, ChannelType.ORDER)
    publisher = Publisher(url, market_buffer=market_count, account_buffer=10_000, confirm_window=WINDOW)
    market_items = items(market_count, ChannelType.TRADES, MARKET_KEY, account=False)
    account_items = items(account_count, ChannelType.ORDER, ACCOUNT_KEY, account=True)
    runs: dict[str, list[float]] = {
        "raw_market": [],
        "raw_market_nowait": [],
        "ours_market": [],
        "raw_account": [],
        "ours_account": [],
    }
    async with aiormq.connect(url) as admin:
        channel = await admin.channel()
        running = asyncio.create_task(publisher.run())
        try:
            await asyncio.wait_for(publisher.wait_connected(), 10)
            await publisher.bind(service, ChannelType.TRADES, MARKET_KEY)
            await publisher.bind(service, ChannelType.ORDER, ACCOUNT_KEY)
            steps: list[tuple[str, Callable[[], Awaitable[float]]]] = [
                ("raw_market", lambda: raw_market(url, market_count)),
                ("raw_market_nowait", lambda: raw_market(url, market_count, wait=False)),
                ("ours_market", lambda: ours_market(publisher, market_items)),
                ("raw_account", lambda: raw_account(url, account_count)),
                ("ours_account", lambda: ours_account(publisher, account_items)),
            ]
            for repeat in range(repeats):
                for name, step in steps:
                    await purge(channel, market_queue, account_queue)
                    rate = await step()
                    runs[name].append(rate)
                    print(f"  run {repeat + 1} {name:>17}: {rate:>9,.0f} msgs/s", file=sys.stderr)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            for queue in (market_queue, account_queue):
                await channel.queue_delete(queue)
    result = {name: statistics.median(rates) for name, rates in runs.items()}
    result["market_share"] = result["ours_market"] / result["raw_market"]
    result["market_share_nowait"] = result["ours_market"] / result["raw_market_nowait"]
    result["account_share"] = result["ours_account"] / result["raw_account"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default=os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--market", type=int, default=50_000, help="market messages per run")
    parser.add_argument("--account", type=int, default=20_000, help="account messages per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    result = asyncio.run(bench(args.url, args.market, args.account, args.repeats))
    print(
        f"market : raw {result['raw_market']:>9,.0f}/s  ours {result['ours_market']:>9,.0f}/s  "
        f"({result['market_share']:.0%}; {result['market_share_nowait']:.0%} of wait=False "
        f"{result['raw_market_nowait']:,.0f}/s)"
    )
    print(
        f"account: raw {result['raw_account']:>9,.0f}/s  ours {result['ours_account']:>9,.0f}/s  "
        f"({result['account_share']:.0%})"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
