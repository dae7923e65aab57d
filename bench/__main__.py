"""The benchmark harness: `uv run --group bench python -m bench [--quick] [--no-uvloop] [--profile]`.

Starts a firehose Bybit server (`bench.firehose`, its own process), a RabbitMQ vhost of its own, runs every
scenario 3 times, interleaved (repeat 1 of all, then repeat 2, ...), and prints min/median/max per scenario
and the headline ratios, each computed from medians measured in this same run. Writes
`bench/results/results.json` and `bench/results/bench.png`. See BENCHMARKS.md for what each scenario means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import book_apply
from bench.clients import Meter, run_ceiling, run_cryptofeed, run_ours, run_pybit
from bench.pipeline import run_cryptofeed_e2e, run_ours_e2e, run_publish_ceiling, running_publisher, vhost
from bench.report import plot, print_table

RESULTS = Path(__file__).parent / "results"
PER_FRAME = 10
RABBIT = os.environ.get("BENCH_RABBITMQ_HOST", "amqp://guest:guest@127.0.0.1:5672")


@dataclass(frozen=True)
class Plan:
    repeats: int = 3
    ingest_seconds: float = 4.0  # per ingest run, from the first frame
    e2e_trades: int = 200_000
    cryptofeed_trades: int = 30_000  # cryptofeed's backend awaits a confirm per trade: slow, so fewer
    publish_count: int = 100_000
    latency_seconds: float = 20.0
    latency_rates: tuple[int, ...] = (1_000, 5_000)
    book_deltas: int = 20_000
    book_repeats: int = 5


QUICK = Plan(
    ingest_seconds=1.2,
    e2e_trades=40_000,
    cryptofeed_trades=6_000,
    publish_count=30_000,
    latency_seconds=5.0,
    book_deltas=5_000,
    book_repeats=3,
)
FULL = Plan()


@contextlib.contextmanager
def firehose(uvloop: bool) -> Iterator[str]:
    args = [sys.executable, "-m", "bench.firehose", "--lifetime", "1800"] + ([] if uvloop else ["--no-uvloop"])
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"firehose did not start: {line!r}")
        yield f"ws://127.0.0.1:{int(line.split()[1])}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- scenarios ----------------------------------------------------------------------------------------------


def ingest_clients(base: str, seconds: float) -> dict[str, Callable[[], Awaitable[dict[str, Any]]]]:
    url = f"{base}/frames=20000000/trades={PER_FRAME}/unique=0/v5/public/linear"

    def measured(run: Callable[[Meter], Awaitable[None]]) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def go() -> dict[str, Any]:
            meter = Meter(expected_trades=10**10, max_seconds=seconds)
            async with asyncio.timeout(seconds + 30):
                await run(meter)
            return meter.result(PER_FRAME)

        return go

    limit = seconds + 20
    return {
        "ingest.ceiling": measured(lambda m: run_ceiling(url, m, compression=False)),
        "ingest.ceiling_deflate": measured(lambda m: run_ceiling(url, m, compression=True)),
        "ingest.ours": measured(lambda m: run_ours(url, m, compression=False, timeout=limit)),
        "ingest.ours_deflate": measured(lambda m: run_ours(url, m, compression=True, timeout=limit)),
        "ingest.pybit": measured(lambda m: run_pybit(url, m, timeout=limit)),
        "ingest.cryptofeed": measured(lambda m: run_cryptofeed(url, m, PER_FRAME)),
    }


async def run_all(plan: Plan, uvloop: bool, only: set[str]) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {}

    def record(name: str, result: dict[str, Any]) -> None:
        runs.setdefault(name, []).append(result)
        rate = result.get("trades_per_s", 0.0)
        extra = f"  lost {result['lost']}" if "lost" in result else ""
        latency = result.get("latency_us")
        if latency and latency.get("count"):
            extra += f"  p50 {latency['p50'] / 1000:.2f} ms  p99 {latency['p99'] / 1000:.2f} ms"
        log(f"  {name:<28} {rate:>12,.0f} trades/s{extra}")

    with firehose(uvloop) as base:
        if "ingest" in only:
            clients = ingest_clients(base, plan.ingest_seconds)
            for repeat in range(plan.repeats):
                log(f"ingest, repeat {repeat + 1}/{plan.repeats}")
                for name, go in clients.items():
                    try:
                        record(name, await go())
                    except Exception as error:  # one broken peer must not lose the whole run
                        log(f"  {name}: FAILED {type(error).__name__}: {error}")
        if only & {"e2e", "latency"}:
            with vhost() as name:
                url = f"{RABBIT}/{name}"
                async with running_publisher(url) as broker:
                    for repeat in range(plan.repeats):
                        if "e2e" in only:
                            log(f"end to end, repeat {repeat + 1}/{plan.repeats}")
                            record("e2e.publish_ceiling", await run_publish_ceiling(broker, plan.publish_count))
                            record(
                                "e2e.ours",
                                await run_ours_e2e(broker, base, plan.e2e_trades, max_seconds=60, uvloop=uvloop),
                            )
                            try:
                                record(
                                    "e2e.cryptofeed",
                                    await run_cryptofeed_e2e(
                                        url, base, plan.cryptofeed_trades, max_seconds=30, uvloop=uvloop
                                    ),
                                )
                            except Exception as error:
                                log(f"  e2e.cryptofeed: FAILED {type(error).__name__}: {error}")
                        if "latency" in only:
                            log(f"latency, repeat {repeat + 1}/{plan.repeats}")
                            for rate in plan.latency_rates:
                                trades = int(rate * plan.latency_seconds)
                                result = await run_ours_e2e(
                                    broker, base, trades, rate=rate, max_seconds=plan.latency_seconds + 30,
                                    uvloop=uvloop,
                                )  # fmt: skip
                                record(f"latency.ours_{rate // 1000}k", result)
    book: list[dict[str, Any]] = []
    if "book" in only:
        log("order-book apply")
        book = [book_apply.measure(n, plan.book_deltas, plan.book_repeats, 1) for n in (50, 200, 1000)]
    return {"runs": runs, "book_apply": book}


# -- summary ------------------------------------------------------------------------------------------------


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        rates = [r["trades_per_s"] for r in results]
        entry: dict[str, Any] = {
            "runs": len(rates),
            "min": min(rates),
            "median": statistics.median(rates),
            "max": max(rates),
        }
        if "lost" in results[0]:
            entry["lost"] = [r["lost"] for r in results]
            entry["expected"] = results[0]["expected"]
            entry["dropped_by_publisher"] = [r.get("dropped_by_publisher", 0) for r in results]
        if "latency_us" in results[0]:
            for key in ("p50", "p99", "max"):
                values = [r["latency_us"][key] / 1000 for r in results]
                entry[f"latency_ms_{key}"] = {
                    "min": min(values),
                    "median": statistics.median(values),
                    "max": max(values),
                }
        summary[name] = entry
    return summary


def ratios(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    def median(name: str) -> float | None:
        entry = summary.get(name)
        return entry["median"] if entry else None

    wanted = [
        ("ours / cryptofeed (ingest)", "ingest.ours", "ingest.cryptofeed", 1.0),
        ("ours / pybit (ingest)", "ingest.ours", "ingest.pybit", 4.0),
        ("ours / ceiling (ingest)", "ingest.ours", "ingest.ceiling", None),
        ("ceiling deflate / ceiling", "ingest.ceiling_deflate", "ingest.ceiling", None),
        ("ours deflate / ours", "ingest.ours_deflate", "ingest.ours", None),
        ("e2e ours / no-confirm publish ceiling", "e2e.ours", "e2e.publish_ceiling", 0.8),
        ("e2e ours / cryptofeed + RabbitMQ backend", "e2e.ours", "e2e.cryptofeed", 3.0),
    ]
    out = []
    for label, top, bottom, target in wanted:
        a, b = median(top), median(bottom)
        if a is None or not b:
            continue
        ratio = a / b
        out.append(
            {"ratio": label, "value": ratio, "target": target, "met": None if target is None else ratio >= target}
        )
    return out


def profile_ours(base_url: str, seconds: float, uvloop: bool) -> str:
    url = f"{base_url}/frames=20000000/trades={PER_FRAME}/unique=0/v5/public/linear"

    async def go() -> None:
        meter = Meter(expected_trades=10**10, max_seconds=seconds)
        await run_ours(url, meter, compression=False, timeout=seconds + 20)

    profiler = cProfile.Profile()
    profiler.enable()
    loop_run(go(), uvloop)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(20)
    return text.getvalue()


def loop_run(work: Awaitable[Any], uvloop: bool) -> Any:
    if uvloop:
        import uvloop as _uvloop

        return _uvloop.run(work)  # type: ignore[arg-type]
    return asyncio.run(work)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs: the whole thing in under ~3 minutes")
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's default loop (and in subprocesses)")
    parser.add_argument("--only", nargs="+", choices=("ingest", "e2e", "latency", "book"),
                        default=["ingest", "e2e", "latency", "book"])  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="also profile our ingest path once (cProfile)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    uvloop = not args.no_uvloop
    started = time.monotonic()
    log(f"ws-gateway bench: {'quick' if args.quick else 'full'}, {'uvloop' if uvloop else 'asyncio'} loop, "
        f"{plan.repeats} repeats, Python {platform.python_version()}, {os.cpu_count()} CPUs")  # fmt: skip
    raw = loop_run(run_all(plan, uvloop, set(args.only)), uvloop)
    summary = summarize(raw["runs"])
    results = {
        "meta": {
            "mode": "quick" if args.quick else "full",
            "loop": "uvloop" if uvloop else "asyncio",
            "repeats": plan.repeats,
            "plan": plan.__dict__,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": time.monotonic() - started,
        },
        "summary": summary,
        "ratios": ratios(summary),
        "book_apply": raw["book_apply"],
        "runs": raw["runs"],
    }
    if args.profile:
        with firehose(uvloop) as base:
            profile = profile_ours(base, plan.ingest_seconds * 2, uvloop)
        results["profile_top"] = profile
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "bench.png")
    print_table(results)
    if args.profile:
        (args.out / "profile.txt").write_text(results["profile_top"])
        print(f"\nprofile of our ingest path: {args.out / 'profile.txt'}")
    print(f"\nresults: {args.out / 'results.json'}, plot: {args.out / 'bench.png'} "
          f"({results['meta']['seconds']:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
