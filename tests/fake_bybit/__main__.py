"""`python -m tests.fake_bybit --port 9500 [--api-key K --api-secret S]`: serve until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

from tests.fake_bybit.server import FakeBybit


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_bybit", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9500, help="0 picks a free port")
    parser.add_argument("--api-key", action="append", default=[], help="repeat with --api-secret")
    parser.add_argument("--api-secret", action="append", default=[])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--push-interval", type=float, default=0.05, help="seconds between pushes")
    parser.add_argument("--no-auto-push", action="store_true", help="push nothing but snapshots")
    parser.add_argument("--private-idle-timeout", type=float, default=600.0)
    parser.add_argument("--samples-dir", type=Path, default=None)
    args = parser.parse_args()
    if len(args.api_key) != len(args.api_secret):
        parser.error("give one --api-secret per --api-key")
    return args


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeBybit(
        host=args.host,
        port=args.port,
        accounts=dict(zip(args.api_key, args.api_secret, strict=True)),
        samples_dir=args.samples_dir,
        seed=args.seed,
        auto_push=not args.no_auto_push,
        push_interval=args.push_interval,
        private_idle_timeout=args.private_idle_timeout,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)  # a parent's terminate() shuts down cleanly too
    async with fake:
        print(fake.url, flush=True)  # the one line a parent process reads to find the port
        await stop.wait()


def main() -> None:
    args = _parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
