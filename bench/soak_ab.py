"""Before/after soak: the same firehose and vhost, soak workers from two checkouts, interleaved (A, B, A, B, ...).

`python -m bench.soak_ab --trees /path/to/before /path/to/after` (each checkout with its own `.venv`, e.g. from
`uv sync --group bench`). Each repeat runs `python -m bench.soak` from every tree in turn and prints its CPU
time per Bybit message (the worker process's CPU over the messages it received); at the end min / median / max
per tree. CPU per message, not a rate: on a box shared with other jobs it moves far less than wall-clock rates.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.pipeline import vhost
from bench.soak import summarize


def run_one(tree: Path, firehose: str, rabbitmq: str, seconds: float, topics: int, rate: int) -> dict[str, Any]:
    args = [str(tree / ".venv/bin/python"), "-m", "bench.soak", "--firehose", firehose, "--rabbitmq", rabbitmq]
    args += ["--seconds", str(seconds), "--topics", str(topics), "--rate", str(rate)]
    done = subprocess.run(args, cwd=tree, capture_output=True, text=True, timeout=seconds + 90, check=False)
    samples = []
    for line in done.stdout.splitlines():
        with contextlib.suppress(ValueError):
            samples.append(json.loads(line))
    return summarize(samples, seconds, topics, rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trees", nargs="+", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--topics", type=int, default=500)
    parser.add_argument("--rate", type=int, default=5_000, help="Bybit messages/s over the three sockets")
    args = parser.parse_args()
    firehose = subprocess.Popen(
        [sys.executable, "-m", "bench.firehose", "--lifetime", "3600"], stdout=subprocess.PIPE, text=True
    )
    per_tree: dict[Path, list[float]] = {tree: [] for tree in args.trees}
    try:
        assert firehose.stdout is not None
        base = f"ws://127.0.0.1:{int(firehose.stdout.readline().split()[1])}"
        with vhost() as name:
            rabbitmq = f"amqp://guest:guest@127.0.0.1:5672/{name}"
            for repeat in range(args.repeats):
                for tree in args.trees:
                    try:
                        result = run_one(tree, base, rabbitmq, args.seconds, args.topics, args.rate)
                    except Exception as error:
                        print(f"repeat {repeat} {tree}: failed: {error}", flush=True)
                        continue
                    per_tree[tree].append(result["cpu_us_per_msg"])
                    print(
                        f"repeat {repeat} {tree}: {result['trades_per_s']:,.0f} msgs/s, "
                        f"{result['cpu_share']:.1%} of a core, {result['cpu_us_per_msg']:.1f} us/msg, "
                        f"dropped {result['dropped']}",
                        flush=True,
                    )
    finally:
        firehose.terminate()
        firehose.wait(10)
    for tree, values in per_tree.items():
        if values:
            median = statistics.median(values)
            print(f"{tree}: CPU us/msg min {min(values):.1f} median {median:.1f} max {max(values):.1f}")


if __name__ == "__main__":
    main()
