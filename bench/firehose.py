"""A minimal Bybit v5 public-linear WebSocket server that streams `publicTrade` frames as fast as a client reads.

Run as its own process (`python -m bench.firehose`, prints `PORT <n>` once listening) so that producing frames
never competes with the client under test on the same event loop. Each connection is configured by its path,
`key=value` segments before Bybit's own path, e.g. `ws://127.0.0.1:PORT/frames=3000/rate=0/v5/public/linear`:

- `frames`: how many data frames to send, then close (default 1000).
- `trades`: trades per frame (default 10), built from `/work/shared/bybit/samples/public_publicTrade_linear.json`
  with unique trade ids `i` (UUID-shaped: run id, then the trade's sequence number).
- `rate`: offered trades per second; 0 (default) means as fast as the client reads. Frames are then pre-built
  before the first one is sent; with a rate, each frame is built when due and stamped.
- `unique`: 1 (default) pre-builds every frame, so every trade id is unique (for counting loss); 0 cycles
  through a pool of 2,000 pre-built frames, so an ingest run can be long without the server building gigabytes.

Every trade carries `bt`, the wall-clock send time in microseconds (ignored by every client; read back by the
bench's consumer for latency). Streaming starts after the first `subscribe`; every subscribe is acked and every
ping answered in Bybit's linear shapes, echoing `req_id`. Listens on 127.0.0.1 only.

Soak mode (`soak=1`, with `rate` in messages/s and `seconds`): every topic the client subscribes to on this
socket's category (the path's last segment) gets the test fake's market stream for it (`tests.fake_bybit`:
book snapshot then deltas, ticker snapshot then deltas, trades), and messages go round-robin over the
subscribed topics at `rate` in total, for `seconds`, then the socket closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import sys
import time
import uuid
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve

SAMPLE = Path("/work/shared/bybit/samples/public_publicTrade_linear.json")
DEFAULTS = {"frames": 1000, "trades": 10, "rate": 0, "unique": 1, "soak": 0, "seconds": 60}
MAX_FRAMES = 20_000_000
POOL = 2_000  # with unique=0, frames cycle through this many pre-built ones (trade ids repeat)
MAX_SECONDS = 900.0  # no connection streams for longer than this, whatever it asked for (soak: 600 s)
_runs = itertools.count(1)


def parse_path(path: str) -> dict[str, int]:
    config = dict(DEFAULTS)
    for segment in path.split("?", maxsplit=1)[0].split("/"):
        key, sep, value = segment.partition("=")
        if sep and key in config:
            config[key] = int(value)
    config["frames"] = max(1, min(config["frames"], MAX_FRAMES))
    config["trades"] = max(1, min(config["trades"], 1000))
    return config


class FrameBuilder:
    """Builds `publicTrade.BTCUSDT` snapshot frames shaped like the sample, with unique trade ids."""

    def __init__(self, trades_per_frame: int) -> None:
        sample = json.loads(SAMPLE.read_text())
        trade = sample["data"][0]
        self.topic = sample["topic"]
        self.per_frame = trades_per_frame
        self.run = f"{os.getpid() & 0xFFFF:04x}{next(_runs) & 0xFFFF:04x}"
        self._salt = uuid.uuid4().hex[:4]
        # One trade as a format string; everything but the id, times and seq is the sample's, byte for byte.
        self._trade = (
            '{{"T":{T},"s":"'
            + trade["s"]
            + '","S":"'
            + trade["S"]
            + '","v":"'
            + trade["v"]
            + '","p":"'
            + trade["p"]
            + '","L":"'
            + trade["L"]
            + '","i":"{i}","BT":false,"seq":{seq},"bt":{bt}}}'
        )

    def frame(self, number: int, now_us: int) -> str:
        first = number * self.per_frame
        trades = ",".join(
            self._trade.format(
                T=now_us // 1000,
                i=f"{self.run}-{self._salt}-4000-8000-{n:012d}",
                seq=n,
                bt=now_us,
            )
            for n in range(first, first + self.per_frame)
        )
        return f'{{"topic":"{self.topic}","type":"snapshot","ts":{now_us // 1000},"data":[{trades}]}}'


def reply(request: dict[str, object], conn_id: str) -> str | None:
    op = request.get("op")
    req_id = request.get("req_id") or ""
    if op == "ping":
        return json.dumps({"success": True, "ret_msg": "pong", "conn_id": conn_id, "req_id": req_id, "op": "ping"})
    if op in ("subscribe", "unsubscribe"):
        return json.dumps({"success": True, "ret_msg": "", "conn_id": conn_id, "req_id": req_id, "op": op})
    return None


class SoakStreams:
    """The fake's market streams for the topics subscribed on one soak socket, sent round-robin at a rate."""

    TICK = 0.01

    def __init__(self, category: str) -> None:
        from tests.fake_bybit.samples import Samples

        self.category = category
        self._samples = Samples()
        self._rng = random.Random(7)
        self._streams: list[object] = []
        self.sent = 0

    def subscribe(self, topics: list[str]) -> list[str]:
        """Add streams for `topics`; returns the snapshots new subscribers get first."""
        from tests.fake_bybit.market import new_stream
        from tests.fake_bybit.topics import parse_public_topic

        first = []
        now_ms = time.time_ns() // 1_000_000
        for topic in topics:
            parsed = parse_public_topic(self.category, topic)  # type: ignore[arg-type]
            if parsed is None:
                continue
            stream = new_stream(self.category, parsed, self._samples, self._rng)  # type: ignore[arg-type]
            self._streams.append(stream)
            snapshot = stream.snapshot(now_ms)
            if snapshot is not None:
                first.append(json.dumps(snapshot, separators=(",", ":")))
        return first

    def next_message(self, position: int, now_ms: int) -> object:
        """The push at `position` of the round-robin over the subscribed topics."""
        streams = self._streams
        return streams[position % len(streams)].next(now_ms)  # type: ignore[attr-defined]

    async def run(self, socket: ServerConnection, rate: int, seconds: float) -> None:
        started = time.monotonic()
        position = 0
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate) - self.sent
            now_ms = time.time_ns() // 1_000_000
            for _ in range(due if self._streams else 0):
                await socket.send(json.dumps(self.next_message(position, now_ms), separators=(",", ":")))
                position += 1
                self.sent += 1
            await asyncio.sleep(self.TICK)


async def handle(socket: ServerConnection) -> None:
    path = socket.request.path if socket.request else "/"
    config = parse_path(path)
    conn_id = str(uuid.uuid4())
    subscribed = asyncio.Event()
    soak = SoakStreams(path.rstrip("/").rsplit("/", 1)[-1]) if config["soak"] else None

    async def answer() -> None:
        async for message in socket:
            try:
                request = json.loads(message)
            except ValueError:
                continue
            response = reply(request, conn_id) if isinstance(request, dict) else None
            if response is not None:
                await socket.send(response)
            if isinstance(request, dict) and request.get("op") == "subscribe":
                if soak is not None:
                    for snapshot in soak.subscribe([str(topic) for topic in request.get("args") or ()]):
                        await socket.send(snapshot)
                subscribed.set()

    async def stream() -> None:
        async with asyncio.timeout(30):
            await subscribed.wait()
        if soak is not None:
            await soak.run(socket, config["rate"], config["seconds"])
            await socket.close()
            return
        builder = FrameBuilder(config["trades"])
        frames, rate = config["frames"], config["rate"]
        if rate <= 0:
            now_us = time.time_ns() // 1000
            pool = frames if config["unique"] else min(frames, POOL)
            prebuilt = [builder.frame(n, now_us) for n in range(pool)]
            send = socket.send
            for n in range(frames):
                await send(prebuilt[n % pool])
        else:
            interval = config["trades"] / rate
            started = time.monotonic()
            for n in range(frames):
                delay = started + n * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await socket.send(builder.frame(n, time.time_ns() // 1000))
        await socket.close()

    try:
        async with asyncio.timeout(MAX_SECONDS), asyncio.TaskGroup() as tasks:
            reading = tasks.create_task(answer())
            await tasks.create_task(stream())
            reading.cancel()
    except* (TimeoutError, OSError):
        pass
    except* Exception as errors:  # a client that goes away mid-stream (ConnectionClosed) is normal here
        if not all(type(e).__name__.startswith("ConnectionClosed") for e in errors.exceptions):
            raise


async def main_async(port: int, lifetime: float) -> None:
    async with serve(handle, "127.0.0.1", port, max_size=1 << 20, compression="deflate") as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"PORT {bound}", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.get_running_loop().create_future(), lifetime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=1800.0, help="exit after this many seconds")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    try:  # a concurrent `uv sync` without the bench group can remove uvloop under us
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    work = main_async(args.port, args.lifetime)
    asyncio.run(work) if args.no_uvloop or uvloop is None else uvloop.run(work)
    sys.exit(0)


if __name__ == "__main__":
    main()
