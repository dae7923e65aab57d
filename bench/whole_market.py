"""Whole market: every linear and spot symbol's book, ticker and trades, over several worker processes.

`uv run --group bench python -m bench.whole_market [--fractions 0.05,0.1] [--workers 2] [--seconds 30]`

~1,100 made-up symbols (default 500 linear, 600 spot), each with `orderbook.50`, `tickers` and `publicTrade`,
split evenly over `--workers` worker processes (each the production `Worker` with a real `Publisher`, its own
linear and spot sockets on the firehose's soak mode: the test fake's market streams, one event per push). The
offered rate is a fraction of Bybit's documented maximum (PROTOCOL.md §6.2-6.3): per symbol `orderbook.50`
every 20 ms (50/s), `tickers` every 100 ms on linear (10/s) and 50 ms on spot (20/s), and trades at an assumed
4 pushes/s (Bybit documents no trade rate): 64/s per linear and 74/s per spot symbol, 76.4k msgs/s in all at
fraction 1. The firehose sends each socket's share round-robin over its topics, in 10 ms ticks.

A consumer process (aiormq, its own process) reads the three service queues every worker binds (`#` keys,
queues large enough to never drop) and counts every message and its latency, exchange `ts` (the firehose's
send time, ms) to consumer receipt. Each run reports, from the end of a warm-up to the end: Bybit messages/s
received, worker CPU µs per message (all workers' CPU time over all their messages), messages/s per worker
core, RabbitMQ's CPU (its `beam.smp` process, whole), worker RSS per 1,000 topics, p50/p99 latency, and loss:
events the workers published that the consumer never received (after a drain), beside those the workers
dropped themselves (buffer full, counted).
Fractions and publish coalescing windows (`--coalesce-us 0,500`, the worker's
`WS_GATEWAY_PUBLISH_COALESCE_US`) are interleaved over `--runs` repeats in one invocation, so their ratios are
same-run ratios. Writes `bench/results/whole_market.json` and `bench/results/whole_market.png`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from shared.enums import ChannelType, Endpoint

RESULTS = Path(__file__).parent / "results"
RABBIT = os.environ.get("BENCH_RABBITMQ_HOST", "amqp://guest:guest@127.0.0.1:5672")
# Pushes per second per symbol at Bybit's documented maximum: book 50 (20 ms), ticker 10 linear / 20 spot
# (100 ms / 50 ms); trades are not documented: 4/s assumed.
PER_SYMBOL = {Endpoint.LINEAR: 50 + 10 + 4, Endpoint.SPOT: 50 + 20 + 4}
KINDS = ("orderbook.50.{}", "tickers.{}", "publicTrade.{}")
KEYS = ((ChannelType.TRADES, "trades.#"), (ChannelType.ORDERBOOK, "orderbook.#"), (ChannelType.TICKER, "ticker.#"))
_PAGE = os.sysconf("SC_PAGE_SIZE")
LINE = 1 << 26  # the consumer prints a second's latencies on one line
_TICK = os.sysconf("SC_CLK_TCK")


def plan(linear: int, spot: int, workers: int, fraction: float) -> list[dict[str, Any]]:
    """Per worker: its topics and offered msgs/s per category (symbols dealt round-robin over the workers)."""
    shares: list[dict[str, Any]] = [{"topics": {}, "rates": {}} for _ in range(workers)]
    for endpoint, count in ((Endpoint.LINEAR, linear), (Endpoint.SPOT, spot)):
        for worker in range(workers):
            symbols = [f"WM{n:04d}USDT" for n in range(worker, count, workers)]
            shares[worker]["topics"][endpoint.value] = [kind.format(s) for s in symbols for kind in KINDS]
            shares[worker]["rates"][endpoint.value] = max(1, round(len(symbols) * PER_SYMBOL[endpoint] * fraction))
    return shares


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def broker_pid() -> int | None:
    found = subprocess.run(["pgrep", "-f", "beam.smp"], capture_output=True, text=True, check=False).stdout.split()
    return int(found[0]) if found else None


# -- the worker process ----------------------------------------------------------------------------------------


async def worker_main(
    firehose: str, rabbitmq: str, service: str, share: dict[str, Any], seconds: float, coalesce_us: int
) -> None:
    from bench.clients import bench_worker
    from stream_worker.broker.publisher import Publisher

    publisher = Publisher(rabbitmq, market_queue_max_length=5_000_000, coalesce=coalesce_us / 1e6)
    sockets = []
    async with asyncio.TaskGroup() as tasks:
        publishing = tasks.create_task(publisher.run(), name="publisher")
        async with asyncio.timeout(15):
            await publisher.wait_connected()
        for channel_type, key in KEYS:
            await publisher.bind(service, channel_type, key)
        workers = {}
        for category, topics in share["topics"].items():
            endpoint = Endpoint(category)
            base = f"{firehose}/soak=1/rate={share['rates'][category]}/seconds={int(seconds)}"
            worker = workers[category] = bench_worker(base, publisher)
            connection = worker.connections[endpoint]
            for topic in topics:
                connection.want(topic)
            sockets.append(tasks.create_task(connection.run(), name=f"wm-{category}"))
        started = time.monotonic()
        try:
            while time.monotonic() < started + seconds + 10:
                stats = publisher.stats
                rss = rss_bytes()
                sample = {
                    "t": round(time.monotonic() - started, 3),
                    "cpu": time.process_time(),
                    "rss": rss,
                    "received": sum(sum(w.dispatcher.received.values()) for w in workers.values()),
                    "published": stats.published["market"],
                    "dropped": sum(stats.dropped.values()),
                    "connected": sum(1 for c, w in workers.items() if w.connections[Endpoint(c)].connected),
                }
                print(json.dumps(sample), flush=True)
                if sample["t"] > 5 and not sample["connected"]:
                    break
                await asyncio.sleep(1.0)
            async with asyncio.timeout(10):
                await publisher.wait_drained()
            print(json.dumps({"final": True, **sample, "published": publisher.stats.published["market"]}), flush=True)
        finally:
            for task in (*sockets, publishing):
                task.cancel()


# -- the consumer process --------------------------------------------------------------------------------------


async def consumer_main(rabbitmq: str, service: str) -> None:
    import aiormq
    import msgspec

    from shared.routing import service_queue
    from stream_worker.broker.topology import declare_queue, queue_spec

    class Stamp(msgspec.Struct):
        received_ts: int
        published_ts: int
        exchange_ts: int | None = None

    decode = msgspec.json.Decoder(Stamp).decode
    latencies: list[tuple[int, int, int, int]] = []  # total, firehose -> worker, in the worker, worker -> consumer
    count = 0

    def on_message(message: Any) -> None:
        nonlocal count
        count += 1
        stamp = decode(message.body)
        if stamp.exchange_ts is not None:
            now = time.time_ns() // 1_000_000
            latencies.append(
                (
                    now - stamp.exchange_ts,
                    stamp.received_ts - stamp.exchange_ts,
                    stamp.published_ts - stamp.received_ts,
                    now - stamp.published_ts,
                )
            )

    async def deliver(message: Any) -> None:
        on_message(message)

    connection = await aiormq.connect(rabbitmq)
    channel = await connection.channel()
    await channel.basic_qos(prefetch_count=5_000)
    for channel_type, _ in KEYS:
        spec = queue_spec(service, channel_type, market_max_length=5_000_000)
        await declare_queue(channel, spec, timeout=10)
        await channel.basic_consume(service_queue(service, channel_type), deliver, no_ack=True)
    print(json.dumps({"ready": True}), flush=True)
    started = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        batch, latencies = latencies, []
        print(json.dumps({"t": round(time.monotonic() - started, 3), "count": count, "lat": batch}), flush=True)


# -- the driver ------------------------------------------------------------------------------------------------


async def lines(process: asyncio.subprocess.Process, into: list[dict[str, Any]]) -> None:
    assert process.stdout is not None
    async for line in process.stdout:
        with contextlib.suppress(ValueError):
            into.append(json.loads(line))


async def one_run(
    firehose: str, vhost_url: str, args: argparse.Namespace, fraction: float, coalesce_us: int
) -> dict[str, Any]:
    service = f"wm-{uuid.uuid4().hex[:6]}"
    shares = plan(args.linear, args.spot, args.workers, fraction)
    py = [sys.executable, "-m", "bench.whole_market"]
    consumer = await asyncio.create_subprocess_exec(
        *py, "--consumer", "--rabbitmq", vhost_url, "--service", service, stdout=asyncio.subprocess.PIPE, limit=LINE
    )
    consumed: list[dict[str, Any]] = []
    workers: list[asyncio.subprocess.Process] = []
    samples: list[list[dict[str, Any]]] = [[] for _ in shares]
    beam = broker_pid()
    # RabbitMQ is shared with other jobs on this box: its CPU over 3 s before the run is subtracted.
    idle_before = cpu_seconds(beam) if beam else 0.0
    await asyncio.sleep(3.0)
    broker_idle = (cpu_seconds(beam) - idle_before) / 3.0 if beam else 0.0
    try:
        assert consumer.stdout is not None
        await asyncio.wait_for(consumer.stdout.readline(), 30)  # ready: queues declared
        reading = [asyncio.ensure_future(lines(consumer, consumed))]
        for share in shares:
            options = ["--firehose", firehose, "--rabbitmq", vhost_url, "--service", service]
            options += ["--share", json.dumps(share), "--seconds", str(args.seconds), "--coalesce-us", str(coalesce_us)]
            process = await asyncio.create_subprocess_exec(
                *py, "--worker", *options, stdout=asyncio.subprocess.PIPE, limit=LINE
            )
            workers.append(process)
        reading += [asyncio.ensure_future(lines(w, s)) for w, s in zip(workers, samples, strict=True)]
        warm_at = max(5.0, args.seconds / 6)
        await asyncio.sleep(warm_at)
        broker_warm = cpu_seconds(beam) if beam else None
        consumed_warm = len(consumed)
        await asyncio.wait_for(asyncio.gather(*(w.wait() for w in workers)), args.seconds + 60)
        broker_end = cpu_seconds(beam) if beam else None
        published = sum(s[-1]["published"] for s in samples if s and s[-1].get("final"))
        # Drain: the consumer has everything once its count stops moving at `published`.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not consumed or consumed[-1]["count"] < published):
            await asyncio.sleep(0.5)
        for task in reading:
            task.cancel()
    finally:
        for process in (*workers, consumer):
            if process.returncode is None:
                process.kill()
                await process.wait()
    result = summarize(samples, consumed, consumed_warm, warm_at, broker_warm, broker_end, shares, fraction)
    result["broker_idle_cpu_share"] = broker_idle
    result["coalesce_us"] = coalesce_us
    if result["broker_cpu_share"] is not None:
        result["broker_cpu_share"] = max(0.0, result["broker_cpu_share"] - broker_idle)
        result["broker_cpu_us_per_msg"] = result["broker_cpu_share"] / result["received_msgs_per_s"] * 1e6
    return result


def summarize(
    samples: list[list[dict[str, Any]]],
    consumed: list[dict[str, Any]],
    consumed_warm: int,
    warm_at: float,
    broker_warm: float | None,
    broker_end: float | None,
    shares: list[dict[str, Any]],
    fraction: float,
) -> dict[str, Any]:
    received = cpu = span = 0.0
    rss_per_k, rss_mb = [], []
    for worker, share in zip(samples, shares, strict=True):
        streaming = [s for s in worker if not s.get("final") and s["t"] >= warm_at and s["connected"]]
        if len(streaming) < 3:
            raise RuntimeError(f"a worker produced too few samples: {worker[-3:]}")
        first, last = streaming[0], streaming[-1]
        received += last["received"] - first["received"]
        cpu += last["cpu"] - first["cpu"]
        span = max(span, last["t"] - first["t"])
        topics = sum(len(t) for t in share["topics"].values())
        before = worker[0]["rss"]  # the first sample: subscriptions asked for, no data yet
        rss_per_k.append((last["rss"] - before) / 2**20 / topics * 1000)
        rss_mb.append(last["rss"] / 2**20)
    published = sum(w[-1]["published"] for w in samples if w and w[-1].get("final"))
    dropped = sum(w[-1]["dropped"] for w in samples if w)
    delivered = consumed[-1]["count"] if consumed else 0
    hops = list(zip(*(x for batch in consumed[consumed_warm:] for x in batch["lat"]), strict=True))
    latencies = sorted(hops[0]) if hops else []

    def p99(values: tuple[int, ...]) -> int:
        return sorted(values)[int(len(values) * 0.99)]

    rate = received / span
    us_per_msg = cpu / received * 1e6 if received else 0.0
    broker_cpu = (broker_end - broker_warm) / span if broker_end is not None and broker_warm is not None else None
    return {
        "fraction": fraction,
        "offered_msgs_per_s": sum(sum(s["rates"].values()) for s in shares),
        "received_msgs_per_s": rate,
        "worker_cpu_us_per_msg": us_per_msg,
        "msgs_per_s_per_worker_core": 1e6 / us_per_msg if us_per_msg else 0.0,
        "worker_cpu_share": cpu / span,  # cores, all workers together
        "broker_cpu_share": broker_cpu,  # cores
        "broker_cpu_us_per_msg": broker_cpu / rate * 1e6 if broker_cpu is not None and rate else None,
        "rss_mb_per_1000_topics": statistics.mean(rss_per_k),  # growth from no data to the end
        "rss_mb_per_worker": statistics.mean(rss_mb),
        "p50_ms": latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": latencies[int(len(latencies) * 0.99)] if latencies else None,
        "max_ms": latencies[-1] if latencies else None,
        "p99_firehose_to_worker_ms": p99(hops[1]) if hops else None,
        "p99_in_worker_ms": p99(hops[2]) if hops else None,
        "p99_worker_to_consumer_ms": p99(hops[3]) if hops else None,
        "published": published,
        "delivered": delivered,
        "lost": published - delivered,  # published by a worker, never reached the consumer
        "dropped_by_workers": dropped,  # counted by the publisher (buffer full, connection lost)
        "topics": sum(sum(len(t) for t in s["topics"].values()) for s in shares),
    }


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    from bench.__main__ import firehose
    from bench.pipeline import vhost

    variants = [(float(f), int(c)) for f in args.fractions.split(",") for c in args.coalesce_us.split(",")]
    runs: dict[str, list[dict[str, Any]]] = {variant_name(*v): [] for v in variants}
    with firehose(uvloop=True) as base, vhost("wsg_wm") as name:
        url = f"{RABBIT}/{name}"
        for repeat in range(args.runs):
            for fraction, coalesce_us in variants:  # interleaved: every variant once per repeat
                try:
                    result = await one_run(base, url, args, fraction, coalesce_us)
                except Exception as error:  # a run that failed (e.g. the firehose fell behind) is reported, not fatal
                    print(f"  run {repeat + 1} {variant_name(fraction, coalesce_us)}: FAILED {error}", file=sys.stderr)
                    continue
                finally:
                    await asyncio.sleep(5)  # let the firehose finish what the last run's sockets left behind
                runs[variant_name(fraction, coalesce_us)].append(result)
                line = json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()})
                print(f"  run {repeat + 1} {variant_name(fraction, coalesce_us)}: {line}", file=sys.stderr, flush=True)
    return {"runs": runs, "workers": args.workers, "seconds": args.seconds}


def variant_name(fraction: float, coalesce_us: int) -> str:
    return f"fraction {fraction}, coalesce {coalesce_us} us"


def arithmetic(us_per_msg: float, broker_us_per_msg: float | None, full_rate: float) -> dict[str, float]:
    """Cores for the whole linear + spot market at Bybit's documented maximum, at 70 % per core."""
    result = {"full_rate_msgs_per_s": full_rate, "worker_cores": full_rate * us_per_msg / 1e6 / 0.7}
    if broker_us_per_msg is not None:
        result["broker_cores"] = full_rate * broker_us_per_msg / 1e6 / 0.7
    return result


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for variant, runs in results["runs"].items():
        offered = [r["received_msgs_per_s"] for r in runs]
        left.plot(offered, [r["worker_cpu_us_per_msg"] for r in runs], "o", label=f"workers, {variant}")
        left.plot(offered, [r["broker_cpu_us_per_msg"] or 0 for r in runs], "x", label=f"RabbitMQ, {variant}")
        right.plot(offered, [r["p99_ms"] or 0 for r in runs], "o", label=variant)
    left.set_xlabel("Bybit msgs/s received (all workers)")
    left.set_ylabel("CPU µs per message")
    left.set_title("CPU per Bybit message (each run)")
    left.legend(fontsize=7)
    right.set_xlabel("Bybit msgs/s received")
    right.set_ylabel("p99 exchange → consumer, ms")
    right.set_title("Latency p99 (each run)")
    figure.tight_layout()
    figure.savefig(path, dpi=70)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--worker", action="store_true", help="internal: run one worker process")
    parser.add_argument("--consumer", action="store_true", help="internal: run the consumer process")
    parser.add_argument("--firehose")
    parser.add_argument("--rabbitmq", default=RABBIT)
    parser.add_argument("--service")
    parser.add_argument("--share")
    parser.add_argument("--linear", type=int, default=500)
    parser.add_argument("--spot", type=int, default=600)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fractions", default="0.05,0.1")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--coalesce-us", default="0", help="publish coalescing windows to compare, µs")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import uvloop
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    if args.worker:
        share = json.loads(args.share)
        coalesce = int(args.coalesce_us)
        uvloop.run(worker_main(args.firehose, args.rabbitmq, args.service, share, args.seconds, coalesce))
        return
    if args.consumer:
        uvloop.run(consumer_main(args.rabbitmq, args.service))
        return
    results = uvloop.run(drive(args))
    summary = {}
    for variant, runs in results["runs"].items():
        if not runs:
            continue
        summary[variant] = {
            key: {
                "min": min(r[key] for r in runs),
                "median": statistics.median(r[key] for r in runs),
                "max": max(r[key] for r in runs),
            }
            for key in runs[0]
            if all(isinstance(r[key], int | float) for r in runs)
        }
    best = min(
        (s for s in summary.values()), key=lambda s: s["worker_cpu_us_per_msg"]["median"]
    )  # the least loaded fraction's per-message cost is the one that scales
    full = sum(count * PER_SYMBOL[e] for e, count in ((Endpoint.LINEAR, args.linear), (Endpoint.SPOT, args.spot)))
    broker = best.get("broker_cpu_us_per_msg", {}).get("median")
    results["summary"] = summary
    results["arithmetic"] = arithmetic(best["worker_cpu_us_per_msg"]["median"], broker, full)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "whole_market.json").write_text(json.dumps(results, indent=2))
    plot(results, RESULTS / "whole_market.png")
    print(json.dumps({"summary": summary, "arithmetic": results["arithmetic"]}, indent=2))


if __name__ == "__main__":
    main()
