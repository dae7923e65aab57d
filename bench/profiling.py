"""A py-spy profile of our hot path: `python -m bench --profile` (or `python -m bench.profiling --target ...`).

Two targets, each run in a process of its own under `py-spy record` (sampling, so the code runs at full speed):
- `ingest`: the firehose (unlimited) through the production `Worker` into a counting sink, no RabbitMQ.
- `e2e`: the firehose at a fixed rate through the `Worker` and a real `Publisher` into RabbitMQ.
Writes py-spy's collapsed stacks (`profile_<target>.collapsed`, for any flame-graph tool) and a text summary
(`profile_<target>.txt`): the functions with the most samples on top of the stack (self) and anywhere in it
(inclusive). Without py-spy on PATH (it comes with the bench group), falls back to cProfile in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

PER_FRAME = 10


def summary(collapsed: Path, top: int = 30) -> str:
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            anywhere[frame] += samples
    lines = [f"{total} samples", "", "self (on top of the stack):"]
    lines += [f"  {count / total:6.1%}  {frame}" for frame, count in own.most_common(top)]
    lines += ["", "inclusive (anywhere in the stack):"]
    lines += [f"  {count / total:6.1%}  {frame}" for frame, count in anywhere.most_common(top)]
    return "\n".join(lines) + "\n"


def record(target: str, firehose: str, rabbitmq: str, seconds: float, out: Path) -> str:
    """Profile one target with py-spy; returns the text summary (also written next to the stacks)."""
    out.mkdir(parents=True, exist_ok=True)
    collapsed = out / f"profile_{target}.collapsed"
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    target_args = [sys.executable, "-m", "bench.profiling", "--target", target, "--firehose", firehose]
    target_args += ["--rabbitmq", rabbitmq, "--seconds", str(seconds)]
    if Path(py_spy).exists():
        command = [py_spy, "record", "--rate", "250", "--format", "raw", "--output", str(collapsed), "--"]
        done = subprocess.run(command + target_args, check=False, capture_output=True, text=True, timeout=seconds + 120)
        if done.returncode == 0 and collapsed.exists():
            text = f"py-spy, {target}: {done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ''}\n"
            text += summary(collapsed)
            (out / f"profile_{target}.txt").write_text(text)
            return text
        fallback = f"py-spy failed ({done.returncode}): {done.stderr.strip()[-300:]}; cProfile instead\n"
    else:
        fallback = "py-spy not found; cProfile instead\n"
    done = subprocess.run(
        [*target_args, "--cprofile"], check=False, capture_output=True, text=True, timeout=seconds + 120
    )
    text = fallback + done.stdout
    (out / f"profile_{target}.txt").write_text(text)
    return text


async def run_target(target: str, firehose: str, rabbitmq: str, seconds: float) -> str:
    from bench.clients import CountingSink, Meter, bench_worker, our_connection
    from bench.pipeline import one_session, running_publisher

    if target == "ingest":
        meter = Meter(expected_trades=10**10, max_seconds=seconds)
        worker = bench_worker(f"{firehose}/frames=20000000/trades={PER_FRAME}/unique=0", CountingSink(meter))
        running = asyncio.create_task(our_connection(worker).run())
        try:
            await meter.wait_done(seconds + 20)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        return f"{meter.trades:,} trades in {seconds} s of firehose"
    rate = 30_000  # trades/s offered: near what this box's broker takes, so both halves of the worker are busy
    async with running_publisher(rabbitmq) as broker:
        frames = int(rate * seconds) // PER_FRAME
        base = f"{firehose}/frames={frames}/trades={PER_FRAME}/rate={rate}/unique=1"
        await one_session(our_connection(bench_worker(base, broker.publisher)))
        await broker.publisher.wait_drained()
        stats = broker.publisher.stats
    return f"{stats.published['market']:,} published, {sum(stats.dropped.values()):,} dropped at {rate:,} trades/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", choices=("ingest", "e2e"), required=True)
    parser.add_argument("--firehose", required=True)
    parser.add_argument("--rabbitmq", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--cprofile", action="store_true", help="profile in-process with cProfile instead")
    args = parser.parse_args()
    from loguru import logger

    logger.remove()
    import uvloop

    work = run_target(args.target, args.firehose, args.rabbitmq, args.seconds)
    if not args.cprofile:
        print(uvloop.run(work))
        return
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    result = uvloop.run(work)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    stats.sort_stats("tottime").print_stats(30)
    print(result)
    print(text.getvalue())


if __name__ == "__main__":
    main()
