"""A py-spy profile of our hot path: `python -m bench --profile` (or `python -m bench.profiling --target ...`).

Two targets, each in a process of its own, sampled by `py-spy record` attached once it streams (so imports
and connecting are not in the profile, and the code runs at full speed):
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


# Where a trade's time goes, by component: inclusive share of the samples under each of these frames.
COMPONENTS = (
    ("socket read + websockets frame parsing", ("Connection.recv (websockets", "Connection.data_received")),
    ("BybitProtocol.receive (frame decode)", ("BybitProtocol.receive",)),
    ("Worker._on_push (bookkeeping per push)", ("Worker._on_push",)),
    ("Normalizer.normalize (envelopes)", ("Normalizer.normalize",)),
    ("Publisher.offer_market (buffer)", ("Publisher.offer_market", "CountingSink.offer_market")),
    ("Stamper.add (stamp + JSON)", ("Stamper.add",)),
    ("  PublishFrames.encode (AMQP frames)", ("PublishFrames.encode",)),
    ("  PublishTally.on_handed_over (metrics)", ("PublishTally.on_handed_over",)),
    ("ChannelWriter.flush + aiormq writer", ("ChannelWriter.flush", "Connection.__writer")),
)


def summary(collapsed: Path, top: int = 25) -> str:
    """Top functions of the samples taken while the event loop ran (start-up and imports left out)."""
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or "Runner.run" not in stack or "importlib" in stack:
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            anywhere[frame] += samples
    if not total:
        return "no samples\n"
    lines = [f"{total} samples in the event loop", "", "by component (inclusive):"]
    for label, markers in COMPONENTS:
        hits = sum(count for frame, count in anywhere.items() if frame.startswith(markers))
        lines.append(f"  {hits / total:6.1%}  {label}")
    lines += ["", "self (on top of the stack; 'Runner.run' is uvloop's own C code):"]
    lines += [f"  {count / total:6.1%}  {frame}" for frame, count in own.most_common(top)]
    lines += ["", "inclusive (anywhere in the stack):"]
    lines += [f"  {count / total:6.1%}  {frame}" for frame, count in anywhere.most_common(top)]
    return "\n".join(lines) + "\n"


def record(target: str, firehose: str, rabbitmq: str, seconds: float, out: Path) -> str:
    """Profile one target with py-spy, attached once it is streaming; returns the text summary (also written
    next to the collapsed stacks)."""
    out.mkdir(parents=True, exist_ok=True)
    collapsed = out / f"profile_{target}.collapsed"
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    target_args = [sys.executable, "-m", "bench.profiling", "--target", target, "--firehose", firehose]
    target_args += ["--rabbitmq", rabbitmq, "--seconds", str(seconds + 2)]
    if not Path(py_spy).exists():
        return _cprofile(target_args, out / f"profile_{target}.txt", "py-spy not found; cProfile instead")
    process = subprocess.Popen(target_args, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "STREAMING":
            raise RuntimeError(f"the {target} target did not start")
        command = [py_spy, "record", "--pid", str(process.pid), "--duration", str(int(seconds)), "--rate", "250"]
        command += ["--format", "raw", "--output", str(collapsed)]
        spied = subprocess.run(command, check=False, capture_output=True, text=True, timeout=seconds + 60)
        outcome = process.stdout.read().strip()
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
    if spied.returncode != 0 or not collapsed.exists():
        reason = f"py-spy failed ({spied.returncode}): {spied.stderr.strip()[-300:]}; cProfile instead"
        return _cprofile(target_args, out / f"profile_{target}.txt", reason)
    text = f"py-spy, {target}, {int(seconds)} s: {outcome}\n" + summary(collapsed)
    (out / f"profile_{target}.txt").write_text(text)
    return text


def _cprofile(target_args: list[str], path: Path, reason: str) -> str:
    done = subprocess.run([*target_args, "--cprofile"], check=False, capture_output=True, text=True, timeout=300)
    text = f"{reason}\n{done.stdout}"
    path.write_text(text)
    return text


async def run_target(target: str, firehose: str, rabbitmq: str, seconds: float) -> str:
    """Stream for `seconds`; prints STREAMING once the first data arrived, so the profiler can attach."""
    from bench.clients import CountingSink, Meter, bench_worker, our_connection
    from bench.pipeline import running_publisher

    if target == "ingest":
        meter = Meter(expected_trades=10**10, max_seconds=seconds)
        worker = bench_worker(f"{firehose}/frames=20000000/trades={PER_FRAME}/unique=0", CountingSink(meter))
        running = asyncio.create_task(our_connection(worker).run())
        try:
            while not meter.trades:
                await asyncio.sleep(0.01)
            print("STREAMING", flush=True)
            await meter.wait_done(seconds + 20)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        return f"{meter.trades:,} trades ingested"
    rate = 20_000  # trades/s offered: what this box's broker takes comfortably, so both halves are busy
    async with running_publisher(rabbitmq) as broker:
        frames = int(rate * seconds) // PER_FRAME
        base = f"{firehose}/frames={frames}/trades={PER_FRAME}/rate={rate}/unique=1"
        connection = our_connection(bench_worker(base, broker.publisher))
        running = asyncio.create_task(connection.run())
        try:
            while not broker.publisher.stats.published["market"]:
                await asyncio.sleep(0.01)
            print("STREAMING", flush=True)
            await asyncio.sleep(seconds)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
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
        import bench.clients  # noqa: F401  (imports before streaming starts, out of the profile)

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
