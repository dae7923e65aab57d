"""Publisher throughput against a real RabbitMQ: `uv run python -m bench.publish [--url URL] [--json PATH]`.

Four loops, interleaved and repeated, all into the same exchange and queues (one market queue with the
production max length, one quorum account queue), with the same envelope:

- raw market: aiormq, channel without confirms, `await basic_publish(...)` per message with a pre-encoded body
  and pre-built properties: the ceiling for market data. Measured with aiormq's default `wait=True` (each
  publish waits for its write) and with `wait=False`.
- ours market: `Publisher.offer_market` for every message, timed until `wait_drained()`.
- raw account: aiormq, confirm channel, `basic_publish` tasks gathered in windows of 1,000 (pipelined confirms).
- ours account: `Publisher.put_account` from a producer task, timed until `wait_drained()` (every confirm in).

"ours" runs twice, once per publish path (`fast`: batches written into aiormq's writer; `public`: aiormq's
`basic_publish`, what `WS_GATEWAY_PUBLISH_PATH=auto` falls back to), each with its own publisher, interleaved
in the same run so the fast/public ratio is a same-run ratio. Besides msgs/s, every step reports the CPU time
of this process per message (client cost; the broker's is not in it).

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

from bench.pipeline import concrete
from shared.enums import ChannelType
from shared.events import EVENT_CONTENT_TYPE, EventEnvelope
from shared.routing import EVENTS_EXCHANGE, service_queue
from stream_worker.broker.publish_path import PublishPath
from stream_worker.broker.publisher import Publisher
from stream_worker.envelopes.outgoing import Outgoing

MARKET_KEY = "trades.linear.BTCUSDT"
ACCOUNT_KEY = "order.linear"
WINDOW = 1_000
PATHS: tuple[PublishPath, ...] = ("fast", "public")


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
        channel = concrete(await connection.channel(publisher_confirms=False))
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
    publishers = {
        path: Publisher(
            url, market_buffer=market_count, account_buffer=10_000, confirm_window=WINDOW, publish_path=path
        )
        for path in PATHS
    }
    market_items = items(market_count, ChannelType.TRADES, MARKET_KEY, account=False)
    account_items = items(account_count, ChannelType.ORDER, ACCOUNT_KEY, account=True)
    steps: list[tuple[str, int, Callable[[], Awaitable[float]]]] = [
        ("raw_market", market_count, lambda: raw_market(url, market_count)),
        ("raw_market_nowait", market_count, lambda: raw_market(url, market_count, wait=False)),
        *((f"ours_market_{p}", market_count, _bound(ours_market, publishers[p], market_items)) for p in PATHS),
        ("raw_account", account_count, lambda: raw_account(url, account_count)),
        *((f"ours_account_{p}", account_count, _bound(ours_account, publishers[p], account_items)) for p in PATHS),
    ]
    runs: dict[str, list[float]] = {name: [] for name, _, _ in steps}
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in steps}
    async with aiormq.connect(url) as admin, asyncio.TaskGroup() as tasks:
        channel = await admin.channel()
        running = [tasks.create_task(publisher.run()) for publisher in publishers.values()]
        try:
            for publisher in publishers.values():
                await asyncio.wait_for(publisher.wait_connected(), 10)
                await publisher.bind(service, ChannelType.TRADES, MARKET_KEY)
                await publisher.bind(service, ChannelType.ORDER, ACCOUNT_KEY)
            for repeat in range(repeats):
                for name, count, step in steps:
                    await purge(channel, market_queue, account_queue)
                    cpu_before = time.process_time()
                    rate = await step()
                    cpu[name].append((time.process_time() - cpu_before) / count * 1e6)
                    runs[name].append(rate)
                    print(
                        f"  run {repeat + 1} {name:>19}: {rate:>9,.0f} msgs/s  {cpu[name][-1]:5.1f} µs CPU/msg",
                        file=sys.stderr,
                    )
        finally:
            for task in running:
                task.cancel()
            for queue in (market_queue, account_queue):
                await channel.queue_delete(queue)
    result = {name: statistics.median(rates) for name, rates in runs.items()}
    result.update({f"{name}_min": min(rates) for name, rates in runs.items()})
    result.update({f"{name}_max": max(rates) for name, rates in runs.items()})
    result.update({f"{name}_cpu_us": statistics.median(values) for name, values in cpu.items()})
    result["market_share"] = result["ours_market_fast"] / result["raw_market"]
    result["market_share_nowait"] = result["ours_market_fast"] / result["raw_market_nowait"]
    result["account_share"] = result["ours_account_fast"] / result["raw_account"]
    for kind in ("market", "account"):
        # Same-run ratios per repeat (fast and public ran back to back), then their median.
        ratios = [f / p for f, p in zip(runs[f"ours_{kind}_fast"], runs[f"ours_{kind}_public"], strict=True)]
        result[f"{kind}_fast_over_public"] = statistics.median(ratios)
        result[f"{kind}_fast_over_public_min"], result[f"{kind}_fast_over_public_max"] = min(ratios), max(ratios)
    return result


def _bound(
    step: Callable[[Publisher, list[Outgoing]], Awaitable[float]], publisher: Publisher, batch: list[Outgoing]
) -> Callable[[], Awaitable[float]]:
    return lambda: step(publisher, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default=os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--market", type=int, default=50_000, help="market messages per run")
    parser.add_argument("--account", type=int, default=20_000, help="account messages per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    result = asyncio.run(bench(args.url, args.market, args.account, args.repeats))
    for kind in ("market", "account"):
        line = f"{kind:>7}: raw {result[f'raw_{kind}']:>9,.0f}/s"
        for path in PATHS:
            name = f"ours_{kind}_{path}"
            line += f"  {path} {result[name]:>9,.0f}/s ({result[name + '_cpu_us']:.1f} µs CPU/msg)"
        ratio = (result[f"{kind}_fast_over_public{end}"] for end in ("_min", "", "_max"))
        print(line + "  fast/public min/median/max " + " / ".join(f"{value:.2f}" for value in ratio))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
