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
import json
import os
import platform
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
from bench.pipeline import (
    Broker,
    run_batched_ceiling,
    run_confirm_ceiling,
    run_cryptofeed_e2e,
    run_latency_ceiling,
    run_ours_e2e,
    run_publish_ceiling,
    running_publisher,
    vhost,
)
from bench.profiling import record
from bench.report import plot, print_table
from bench.soak import run_soak

RESULTS = Path(__file__).parent / "results"
PER_FRAME = 10
RABBIT = os.environ.get("BENCH_RABBITMQ_HOST", "amqp://guest:guest@127.0.0.1:5672")


@dataclass(frozen=True)
class Plan:
    repeats: int = 3
    ingest_seconds: float = 4.0  # per ingest run, from the first frame
    ceiling_messages: int = 100_000  # per publish-ceiling run (the market queue holds 100,000)
    e2e_trades: int = 200_000
    account_trades: int = 100_000
    cryptofeed_trades: int = 30_000  # cryptofeed's backend awaits a confirm per trade: slow, so fewer
    cryptofeed_seconds: float = 30.0  # and bounded in time whatever the machine does
    latency_seconds: float = 20.0
    latency_rates: tuple[int, ...] = (1_000, 5_000, 10_000)
    sustained_rates: tuple[int, ...] = (15_000, 20_000, 30_000, 40_000)
    sustained_seconds: float = 10.0
    soak_seconds: float = 600.0
    soak_topics: int = 500
    soak_rate: int = 5_000  # Bybit messages/s over the three sockets
    book_deltas: int = 20_000
    book_repeats: int = 5


QUICK = Plan(
    ingest_seconds=1.2,
    ceiling_messages=30_000,
    e2e_trades=40_000,
    account_trades=20_000,
    cryptofeed_trades=6_000,
    cryptofeed_seconds=10.0,
    latency_seconds=4.0,
    sustained_rates=(15_000, 25_000, 40_000),
    sustained_seconds=3.0,
    soak_seconds=30.0,
    book_deltas=5_000,
    book_repeats=3,
)
FULL = Plan()
SCENARIOS = ("ingest", "ceiling", "e2e", "latency", "sustained", "soak", "book")


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


_STARTED = time.monotonic()


def log(text: str) -> None:
    print(f"[{time.monotonic() - _STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


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
    base_options = url.removesuffix("/v5/public/linear")  # the worker appends each socket's path itself
    return {
        "ingest.ceiling": measured(lambda m: run_ceiling(url, m, compression=False)),
        "ingest.ceiling_deflate": measured(lambda m: run_ceiling(url, m, compression=True)),
        "ingest.ours": measured(lambda m: run_ours(base_options, m, compression=False, timeout=limit)),
        "ingest.ours_deflate": measured(lambda m: run_ours(base_options, m, compression=True, timeout=limit)),
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
        if "rss_growth" in result:
            extra += f"  RSS {result['rss_warm_mb']:.1f} -> {result['rss_end_mb']:.1f} MB ({result['rss_growth']:+.2%})"
        log(f"  {name:<28} {rate:>12,.0f} {'msgs' if name.startswith(('ceiling', 'soak')) else 'trades'}/s{extra}")

    async def attempt(name: str, work: Awaitable[dict[str, Any]]) -> dict[str, Any] | None:
        try:
            result = await work
        except Exception as error:  # one broken scenario or peer must not lose the whole run
            log(f"  {name}: FAILED {type(error).__name__}: {error}")
            return None
        record(name, result)
        return result

    with firehose(uvloop) as base:
        if "ingest" in only:
            clients = ingest_clients(base, plan.ingest_seconds)
            for repeat in range(plan.repeats):
                log(f"ingest, repeat {repeat + 1}/{plan.repeats}")
                for name, go in clients.items():
                    await attempt(name, go())
        if only & {"ceiling", "e2e", "latency", "sustained", "soak"}:
            with vhost() as name:
                url = f"{RABBIT}/{name}"
                async with running_publisher(url) as broker:
                    for repeat in range(plan.repeats):
                        await broker_round(broker, base, plan, only, uvloop, repeat, attempt, record)
                        if "soak" in only:
                            log(f"soak, repeat {repeat + 1}/{plan.repeats} ({plan.soak_seconds:.0f} s)")
                            soak = run_soak(base, url, plan.soak_seconds, plan.soak_topics, plan.soak_rate, uvloop)
                            await attempt("soak.ours", soak)
    book: list[dict[str, Any]] = []
    if "book" in only:
        log("order-book apply")
        book = [book_apply.measure(n, plan.book_deltas, plan.book_repeats, 1) for n in (50, 200, 1000)]
    return {"runs": runs, "book_apply": book}


Attempt = Callable[[str, Awaitable[dict[str, Any]]], Awaitable[dict[str, Any] | None]]
Record = Callable[[str, dict[str, Any]], None]


async def broker_round(
    broker: Broker,
    base: str,
    plan: Plan,
    only: set[str],
    uvloop: bool,
    repeat: int,
    attempt: Attempt,
    record: Record,
) -> None:
    """One repeat of every scenario that goes through RabbitMQ, ceilings first."""
    of = f"{repeat + 1}/{plan.repeats}"
    if "ceiling" in only:
        log(f"publish ceilings, repeat {of}")
        await attempt("ceiling.publish", run_publish_ceiling(broker, plan.ceiling_messages))
        await attempt("ceiling.publish_confirms", run_confirm_ceiling(broker, plan.ceiling_messages // 2))
        await attempt("ceiling.publish_batched", run_batched_ceiling(broker, plan.ceiling_messages))
    if "e2e" in only:
        log(f"end to end, repeat {of}")
        await attempt("e2e.ours", run_ours_e2e(broker, base, plan.e2e_trades, max_seconds=60, uvloop=uvloop))
        # Bybit's real shape: one trade per push (issue 17), the same burst beyond capacity.
        single = run_ours_e2e(broker, base, plan.e2e_trades, per_frame=1, max_seconds=60, uvloop=uvloop)
        await attempt("e2e.ours_single", single)
        account = run_ours_e2e(broker, base, plan.account_trades, max_seconds=60, uvloop=uvloop, account=True)
        await attempt("e2e.ours_account", account)
        cryptofeed = run_cryptofeed_e2e(
            broker.url, base, plan.cryptofeed_trades, max_seconds=plan.cryptofeed_seconds, uvloop=uvloop
        )
        await attempt("e2e.cryptofeed", cryptofeed)
    if "latency" in only:
        log(f"latency, repeat {of}")
        for rate in plan.latency_rates:
            trades, limit = int(rate * plan.latency_seconds), plan.latency_seconds + 30
            work = run_ours_e2e(broker, base, trades, rate=rate, max_seconds=limit, uvloop=uvloop)
            await attempt(f"latency.ours_{rate // 1000}k", work)
            ceiling = run_latency_ceiling(broker, trades, rate=rate, max_seconds=limit, uvloop=uvloop)
            await attempt(f"latency.ceiling_{rate // 1000}k", ceiling)
    if "sustained" in only:
        log(f"sustained (fixed offered rates), repeat {of}")
        best = 0.0
        for rate in plan.sustained_rates:
            trades = int(rate * plan.sustained_seconds)
            work = run_ours_e2e(broker, base, trades, rate=rate, max_seconds=plan.sustained_seconds + 30, uvloop=uvloop)
            result = await attempt(f"sustained.offered_{rate // 1000}k", work)
            if result is None or result["lost"]:
                break  # the first rate with loss: higher ones would only lose more
            best = max(best, result["trades_per_s"])
        # The highest delivered rate among the offered rates that lost nothing.
        record("e2e.ours_sustained", {"trades_per_s": best})


# -- summary ------------------------------------------------------------------------------------------------


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        entry = spread([r["trades_per_s"] for r in results])
        entry["runs"] = len(results)
        if "lost" in results[0]:
            entry["lost"] = [r["lost"] for r in results]
            entry["expected"] = results[0]["expected"]
            entry["dropped_by_publisher"] = [r.get("dropped_by_publisher", 0) for r in results]
        if "cpu_us_per_trade" in results[0]:
            entry["cpu_us_per_trade"] = spread([r["cpu_us_per_trade"] for r in results])
        if "latency_us" in results[0]:
            for key in ("p50", "p99", "max"):
                entry[f"latency_ms_{key}"] = spread([r["latency_us"][key] / 1000 for r in results])
        if "rss_growth" in results[0]:
            for key in ("rss_start_mb", "rss_warm_mb", "rss_end_mb", "rss_growth", "rss_growth_from_start",
                        "rss_growth_mb_per_min", "dropped", "max_buffered", "cpu_share", "cpu_us_per_msg"):  # fmt: skip
                entry[key] = spread([r[key] for r in results])
            entry["topics"], entry["seconds"] = results[0]["topics"], results[0]["seconds"]
        summary[name] = entry
    return summary


def spread(values: list[float]) -> dict[str, Any]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


RATIOS = [
    # label, numerator, denominator, target (None: reported, no target)
    ("ingest: ours / cryptofeed", "ingest.ours", "ingest.cryptofeed", 1.0),
    ("ingest: ours / pybit", "ingest.ours", "ingest.pybit", 4.0),
    ("ingest: ours / websockets+msgspec ceiling", "ingest.ours", "ingest.ceiling", None),
    ("ingest: ceiling deflate / ceiling", "ingest.ceiling_deflate", "ingest.ceiling", None),
    ("ingest: ours deflate / ours", "ingest.ours_deflate", "ingest.ours", None),
    ("e2e market (burst) / aiormq no-confirm ceiling", "e2e.ours", "ceiling.publish", 0.8),
    ("e2e market (sustained) / aiormq no-confirm ceiling", "e2e.ours_sustained", "ceiling.publish", 0.8),
    ("e2e market (burst) / broker ceiling (batched)", "e2e.ours", "ceiling.publish_batched", 0.8),
    (
        "e2e market (burst, 1 trade a frame) / broker ceiling (batched)",
        "e2e.ours_single",
        "ceiling.publish_batched",
        0.8,
    ),
    ("e2e market (burst, 1 trade a frame) / sustained, 0 loss", "e2e.ours_single", "e2e.ours_sustained", 0.9),
    ("e2e market (burst) / cryptofeed + RabbitMQ", "e2e.ours", "e2e.cryptofeed", 3.0),
    ("e2e account / aiormq pipelined-confirm ceiling", "e2e.ours_account", "ceiling.publish_confirms", 0.8),
]


def ratios(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for label, top, bottom, target in RATIOS:
        if top not in summary or not summary.get(bottom, {}).get("median"):
            continue
        ratio = summary[top]["median"] / summary[bottom]["median"]
        out.append(
            {"ratio": label, "value": ratio, "target": target, "met": None if target is None else ratio >= target}
        )
    return out


def checks(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The absolute targets: latency p99 with 0 loss, and RSS growth over the soak (medians of the runs)."""
    out = []
    for name, limit_ms in (("latency.ours_1k", 5.0), ("latency.ours_5k", 20.0)):
        entry = summary.get(name)
        if entry:
            p99, lost = entry["latency_ms_p99"]["median"], max(entry["lost"])
            out.append({"check": f"{name} p99 ≤ {limit_ms:g} ms, 0 lost", "value": f"{p99:.2f} ms, lost {lost}",
                        "met": p99 <= limit_ms and lost == 0})  # fmt: skip
    soak = summary.get("soak.ours")
    if soak:
        growth = soak["rss_growth"]["median"]
        out.append({"check": f"soak RSS growth < 5 % ({soak['seconds']:.0f} s, {soak['topics']} topics)",
                    "value": f"{growth:+.2%}", "met": growth < 0.05})  # fmt: skip
    return out


def loop_run(work: Awaitable[Any], uvloop: bool) -> Any:
    if uvloop:
        import uvloop as _uvloop

        return _uvloop.run(work)  # type: ignore[arg-type]
    return asyncio.run(work)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs (30 s soak): the whole thing in ~6 minutes")
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's default loop (and in subprocesses)")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--profile", action="store_true", help="also profile our hot path with py-spy (ingest, e2e)")
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
        "checks": checks(summary),
        "book_apply": raw["book_apply"],
        "runs": raw["runs"],
    }
    if args.profile:
        log("profiling (py-spy): ingest, then end to end")
        with firehose(uvloop) as base, vhost() as name:
            results["profile"] = {
                target: record(target, base, f"{RABBIT}/{name}", max(5.0, plan.ingest_seconds * 3), args.out)
                for target in ("ingest", "e2e")
            }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "bench.png")
    print_table(results)
    if args.profile:
        print(f"\nprofiles: {args.out}/profile_ingest.txt, {args.out}/profile_e2e.txt (+ .collapsed stacks)")
    print(f"\nresults: {args.out / 'results.json'}, plot: {args.out / 'bench.png'} "
          f"({results['meta']['seconds']:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
