"""Soak: many topics on three sockets at a steady rate for minutes, and the worker's memory over that time.

The worker runs in a process of its own (`python -m bench.soak ...`), so its RSS is its own: the production
`Worker` (`bench.clients.bench_worker`) with its linear, spot and inverse sockets on the firehose's soak
mode, and a real `Publisher` into RabbitMQ with one service's queues bound for every trade, book and ticker
(`#` keys; market queues capped at 20,000 messages so the broker's memory stays bounded without a consumer).
Topics are split evenly over the three categories, as books (`orderbook.50`), tickers and trades of
made-up symbols. Once a second the process prints its RSS, CPU time and counters as a JSON line; `run_soak`
reads them. CPU time per message received is what the Scale section of BENCHMARKS.md builds on.

Growth is measured from the end of a warm-up (a tenth of the run, at least 5 s: allocator pools, the books'
levels and the routing caches fill first) to the end, and also from the first sample, both reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

from shared.enums import ChannelType, Endpoint

CATEGORIES = (Endpoint.LINEAR, Endpoint.SPOT, Endpoint.INVERSE)
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def soak_topics(total: int) -> dict[Endpoint, list[str]]:
    """`total` topics over the three categories: per symbol a 50-level book, a ticker and trades."""
    topics: dict[Endpoint, list[str]] = {endpoint: [] for endpoint in CATEGORIES}
    for n in range(total):
        endpoint = CATEGORIES[n % 3]
        symbol = f"SK{n // 9:03d}{'USD' if endpoint is Endpoint.INVERSE else 'USDT'}"
        kind = (n // 3) % 3
        topics[endpoint].append((f"orderbook.50.{symbol}", f"tickers.{symbol}", f"publicTrade.{symbol}")[kind])
    return topics


async def soak_worker(firehose: str, rabbitmq: str, seconds: float, total: int, rate: int) -> None:
    from bench.clients import bench_worker
    from stream_worker.broker.publisher import Publisher

    publisher = Publisher(rabbitmq, market_queue_max_length=20_000)
    service = f"soak-{os.getpid()}"
    per_socket = rate // len(CATEGORIES)
    worker = bench_worker(f"{firehose}/soak=1/rate={per_socket}/seconds={int(seconds)}", publisher)
    async with asyncio.TaskGroup() as tasks:
        publishing = tasks.create_task(publisher.run(), name="publisher")
        async with asyncio.timeout(15):
            await publisher.wait_connected()
        for channel_type, key in ((ChannelType.TRADES, "trades.#"), (ChannelType.ORDERBOOK, "orderbook.#"),
                                  (ChannelType.TICKER, "ticker.#")):  # fmt: skip
            await publisher.bind(service, channel_type, key)
        sockets = []
        for endpoint, topics in soak_topics(total).items():
            connection = worker.connections[endpoint]
            for topic in topics:
                connection.want(topic)
            sockets.append(tasks.create_task(connection.run(), name=f"soak-{endpoint.value}"))
        started = time.monotonic()
        deadline = started + seconds + 10
        try:
            while time.monotonic() < deadline:
                received = sum(count for (_, _), count in worker.dispatcher.received.items())
                stats = publisher.stats
                sample = {
                    "t": round(time.monotonic() - started, 3),
                    "rss": rss_bytes(),
                    "cpu": round(time.process_time(), 3),
                    "received": received,
                    "published": stats.published["market"],
                    "dropped": sum(stats.dropped.values()),
                    "buffered": stats.market_depth,  # a slow broker fills the 10,000-event buffer: RSS, not a leak
                    "subscribed": sum(len(c.protocol.subscribed) for c in worker.connections.values()),
                    "connected": sum(1 for endpoint in CATEGORIES if worker.connections[endpoint].connected),
                }
                print(json.dumps(sample), flush=True)
                if sample["t"] > 5 and not sample["connected"]:
                    break  # every soak socket was closed by the firehose: the run is over
                await asyncio.sleep(1.0)
        finally:
            for task in (*sockets, publishing):
                task.cancel()


def summarize(samples: list[dict[str, Any]], seconds: float, topics: int, rate: int) -> dict[str, Any]:
    streaming = [s for s in samples if s["received"] > 0]
    if len(streaming) < 3:
        raise RuntimeError(f"the soak produced too few samples: {samples[-3:]}")
    first, last = streaming[0], streaming[-1]
    warm_at = first["t"] + max(5.0, seconds / 10)
    warm = next((s for s in streaming if s["t"] >= warm_at), streaming[len(streaming) // 2])
    span = last["t"] - first["t"]
    received = last["received"] - first["received"]
    growth = (last["rss"] - warm["rss"]) / warm["rss"]
    cpu = (last["cpu"] - first["cpu"]) / span if span > 0 else 0.0
    minutes = max(1e-9, (last["t"] - warm["t"]) / 60)
    return {
        "trades_per_s": received / span if span > 0 else 0.0,  # Bybit messages/s received (all kinds)
        "topics": topics,
        "offered_msgs_per_s": rate,
        "seconds": span,
        "cpu_share": cpu,  # of one core, for everything the worker did (it is one thread)
        "cpu_us_per_msg": cpu / (received / span) * 1e6 if received else 0.0,
        "rss_start_mb": first["rss"] / 2**20,
        "rss_warm_mb": warm["rss"] / 2**20,
        "rss_end_mb": last["rss"] / 2**20,
        "rss_growth": growth,
        "rss_growth_from_start": (last["rss"] - first["rss"]) / first["rss"],
        "rss_growth_mb_per_min": (last["rss"] - warm["rss"]) / 2**20 / minutes,
        "subscribed": last["subscribed"],
        "published": last["published"] - first["published"],
        "dropped": last["dropped"],
        "max_buffered": max(s["buffered"] for s in streaming),
    }


async def run_soak(
    firehose: str, rabbitmq: str, seconds: float, topics: int, rate: int, uvloop: bool
) -> dict[str, Any]:
    args = [sys.executable, "-m", "bench.soak", "--firehose", firehose, "--rabbitmq", rabbitmq]
    args += ["--seconds", str(seconds), "--topics", str(topics), "--rate", str(rate)]
    if not uvloop:
        args.append("--no-uvloop")
    process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    samples: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(seconds + 60):
            async for line in process.stdout:
                with contextlib.suppress(ValueError):
                    samples.append(json.loads(line))
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    result = summarize(samples, seconds, topics, rate)
    result["samples"] = [(s["t"], s["rss"]) for s in samples]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--firehose", required=True)
    parser.add_argument("--rabbitmq", required=True)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--topics", type=int, default=500)
    parser.add_argument("--rate", type=int, default=5_000, help="Bybit messages/s over all sockets")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    from loguru import logger

    logger.remove()  # the worker's state-change logs (500 subscribe acks) would flood the bench's terminal
    logger.add(sys.stderr, level="WARNING")
    work = soak_worker(args.firehose, args.rabbitmq, args.seconds, args.topics, args.rate)
    if args.no_uvloop:
        asyncio.run(work)
    else:
        import uvloop

        uvloop.run(work)


if __name__ == "__main__":
    main()
