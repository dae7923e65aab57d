"""CPU per Bybit message on the worker's hot path, without sockets: `uv run --group bench python -m bench.hot_path`.

The soak's traffic (`bench.soak`: books, tickers and trades of made-up symbols over linear, spot and inverse,
one event per push) is generated up front by the fake's market streams, then fed frame by frame through the
production code a socket's read loop runs: `BybitProtocol.receive`, the `Dispatcher` (books, tickers, the
normalizer), and, for every event it offers, the `Stamper` with the publisher's AMQP frame encoder and the
metrics tally. No event loop, no socket, no broker: what is left is the Python work per message, which is what
the issue-17 target is about, measured with `time.process_time` over the frames after a warm-up quarter.

Less noisy than the soak (no other process's turns in between), and cache-warm, so it is a floor: the soak,
with the firehose and RabbitMQ on the same cores, pays 1.5-3x this. `--trees A B` runs the same measurement
from each checkout's own `.venv`, interleaved, for a before/after.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shared.enums import Endpoint

BATCH = 50  # events stamped together, about what one pump burst takes under this load


class _Sink:
    """Stands in for the publisher: keeps the offered events for the stamping step."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.on_handed_over: object = None

    def offer_market(self, item: Any) -> None:
        self.items.append(item)

    async def put_account(self, item: Any) -> None:
        self.items.append(item)


class _Writer:
    """`ChannelWriter.add` without a channel: the same AMQP frame encoding, kept until the batch is done."""

    path = "fast"

    def __init__(self) -> None:
        from stream_worker.broker.amqp_frames import PublishFrames

        self.frames = PublishFrames(1, "ws_gateway.events", "application/json", 131_072)
        self.direct = PublishFrames(1, "", "application/json", 131_072)
        self.out: list[bytes] = []

    def add(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        trace_id: str,
        timestamp: int,
        delivery_mode: int,
        direct: bool = False,
    ) -> None:
        encoder = self.direct if direct else self.frames
        ids = {"message_id": message_id, "trace_id": trace_id}
        frame = encoder.encode(routing_key, body, **ids, timestamp=timestamp, delivery_mode=delivery_mode)
        self.out.append(frame)

    def __len__(self) -> int:
        return len(self.out)

    async def flush(self, *, drain: bool) -> None:
        self.out.clear()

    async def flush_confirmed(self) -> list[Any]:
        self.out.clear()
        return []

    async def checkpoint(self, timeout: float) -> None:
        return None


def _frames(worker: Any, topics: int, per_socket: int) -> list[tuple[Endpoint, Any, str]]:
    """The soak's frames, the three sockets interleaved: the first each topic's snapshot, then its pushes."""
    from bench.firehose import SoakStreams
    from bench.soak import soak_topics

    per_category: list[tuple[Endpoint, Any, list[str]]] = []
    now_ms = int(time.time() * 1000)
    for endpoint, names in soak_topics(topics).items():
        sockets = worker.connections[endpoint]
        for topic in names:
            sockets.want(topic)
        streams = SoakStreams(endpoint.value)
        texts = streams.subscribe(names)
        texts += [json.dumps(streams.next_message(i, now_ms), separators=(",", ":")) for i in range(per_socket)]
        per_category.append((endpoint, sockets.connections[0].protocol, texts))
    longest = max(len(texts) for _, _, texts in per_category)
    return [
        (endpoint, protocol, texts[i])
        for i in range(longest)
        for endpoint, protocol, texts in per_category
        if i < len(texts)
    ]


def _drive(coroutine: Any) -> None:
    """Run a handler that never suspends for market data (as the read loop finds it) to its end."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("a market push suspended: the harness cannot run it without a loop")


def measure(topics: int, per_socket: int) -> dict[str, float]:
    from bench.clients import bench_worker
    from stream_worker.broker.stamping import Stamper

    sink = _Sink()
    worker = bench_worker("ws://127.0.0.1:1", sink)  # never connects: only its handlers run
    stamper = Stamper(time.time)
    stamper.on_handed_over = worker.published.on_handed_over
    writer = _Writer()
    frames = _frames(worker, topics, per_socket)
    dispatcher = worker.dispatcher

    def run(part: list[tuple[Endpoint, Any, str]]) -> int:
        events = 0
        for endpoint, protocol, text in part:
            for event in protocol.receive(text, time.monotonic()):
                _drive(dispatcher.on_event(endpoint, event))
            if len(sink.items) >= BATCH:
                events += len(sink.items)
                for item in sink.items:
                    stamper.add(item, 1, writer)
                sink.items.clear()
                writer.out.clear()
        return events

    warm = len(frames) // 4
    run(frames[:warm])
    started = time.process_time()
    events = run(frames[warm:])
    spent = time.process_time() - started
    measured = len(frames) - warm
    return {"frames": measured, "events": events, "us_per_message": spent / measured * 1e6}


def _repeats(args: argparse.Namespace) -> Iterator[tuple[str, dict[str, float]]]:
    if not args.trees:
        for _ in range(args.repeats):
            yield ".", measure(args.topics, args.per_socket)
        return
    for _ in range(args.repeats):
        for tree in args.trees:
            command = [str(tree / ".venv/bin/python"), "-m", "bench.hot_path", "--json", "--repeats", "1"]
            command += ["--topics", str(args.topics), "--per-socket", str(args.per_socket)]
            done = subprocess.run(command, cwd=tree, capture_output=True, text=True, check=True, timeout=600)
            yield str(tree), json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--topics", type=int, default=500)
    parser.add_argument("--per-socket", type=int, default=20_000, help="pushes generated per socket")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trees", nargs="*", type=Path, help="checkouts to compare, interleaved")
    parser.add_argument("--json", action="store_true", help="print each repeat as one JSON line only")
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    for tree, result in _repeats(args):
        results.setdefault(tree, []).append(result["us_per_message"])
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            cost = result["us_per_message"]
            print(f"{tree}: {result['frames']:,} messages, {cost:.2f} µs CPU per message", flush=True)
    if not args.json:
        for tree, values in results.items():
            low, mid, high = min(values), statistics.median(values), max(values)
            print(f"{tree}: µs per message min {low:.2f} median {mid:.2f} max {high:.2f}")


if __name__ == "__main__":
    main()
