"""A RabbitMQ consumer in its own process that counts distinct trades and their latency, then prints JSON.

`python -m bench.consumer --url URL --queue Q --expect N [--idle 3] [--max-seconds 60] [--format ours|cryptofeed]`

Prints `READY` once consuming, then one JSON line at the end: distinct trades, duplicates, receive rate
(first to last message) and latency percentiles of receive time - the firehose's `bt` send stamp (µs, wall
clock; both processes share the machine's clock). Ends when N distinct trades arrived, after `--idle` seconds
without a message (once one arrived; before that, --max-seconds), or after --max-seconds in all.
Auto-ack, prefetch 2,000, like a consumer that keeps up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiormq
import msgspec
from aiormq.abc import DeliveredMessage


class _Trade(msgspec.Struct):
    i: str
    bt: int = 0


class _Ours(msgspec.Struct):
    """Our envelope: the payload is Bybit's trade, byte for byte."""

    event_id: str
    payload: _Trade


class _Cryptofeed(msgspec.Struct):
    """cryptofeed's trade dict: `id` is Bybit's `i`; its `raw` trade (if kept) carries `bt`."""

    id: str
    raw: _Trade | None = None


def percentile(ordered: list[int], share: float) -> float:
    if not ordered:
        return float("nan")
    return float(ordered[min(len(ordered) - 1, int(share * len(ordered)))])


async def consume(url: str, queue: str, expect: int, idle: float, max_seconds: float, kind: str) -> dict[str, object]:
    decoder = msgspec.json.Decoder(_Ours if kind == "ours" else _Cryptofeed)
    seen: set[str] = set()
    latencies: list[int] = []
    duplicates = 0
    first = last = 0.0
    done = asyncio.Event()

    def on_message(message: DeliveredMessage) -> None:
        nonlocal duplicates, first, last
        now = time.perf_counter()
        received_us = time.time_ns() // 1000
        if not first:
            first = now
        last = now
        item = decoder.decode(message.body)
        if isinstance(item, _Ours):
            trade_id, sent_us = item.event_id, item.payload.bt
        else:
            trade_id, sent_us = item.id, item.raw.bt if item.raw else 0
        if trade_id in seen:
            duplicates += 1
            return
        seen.add(trade_id)
        if sent_us:
            latencies.append(received_us - sent_us)
        if len(seen) >= expect:
            done.set()

    async def callback(message: DeliveredMessage) -> None:
        on_message(message)

    started = time.monotonic()
    async with aiormq.connect(url) as connection:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=2_000)
        await channel.basic_consume(queue, callback, no_ack=True)
        print("READY", flush=True)
        while not done.is_set():
            now = time.monotonic()
            if now - started > max_seconds:
                break
            if first and time.perf_counter() - last > idle:
                break
            await asyncio.sleep(0.05)
    latencies.sort()
    elapsed = last - first
    return {
        "distinct": len(seen),
        "duplicates": duplicates,
        "expected": expect,
        "lost": max(0, expect - len(seen)),
        "seconds": elapsed,
        "trades_per_s": (len(seen) - 1) / elapsed if elapsed > 0 else 0.0,
        "latency_us": {
            "count": len(latencies),
            "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99),
            "max": float(latencies[-1]) if latencies else float("nan"),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--idle", type=float, default=3.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--format", choices=("ours", "cryptofeed"), default="ours")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    work = consume(args.url, args.queue, args.expect, args.idle, args.max_seconds, args.format)
    try:  # a concurrent `uv sync` without the bench group can remove uvloop under us
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    result = asyncio.run(work) if args.no_uvloop or uvloop is None else uvloop.run(work)
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
