"""A RabbitMQ consumer in its own process that counts distinct trades and their latency, then prints JSON.

`python -m bench.consumer --url URL --queue Q --expect N [--idle 3] [--max-seconds 60] [--format ours|cryptofeed]`

Prints `READY` once consuming, then one JSON line at the end: distinct trades, duplicates, receive rate
(first to last message) and latency percentiles of receive time - the firehose's `bt` send stamp (µs, wall
clock; both processes share the machine's clock). Ends when N distinct trades arrived, after `--idle` seconds
without a message (once one arrived; before that, --max-seconds), or after --max-seconds in all.

It is measuring equipment, so it must not be the bottleneck: an aiormq consumer tops out at ~12k msgs/s on a
2-core box (pamqp unmarshals three frames per delivery), below what the gateway publishes. So the handshake
uses pamqp, and deliveries are read straight off the socket: frame headers parsed with `struct`, bodies
decoded with msgspec. No-ack, prefetch 0 (unlimited), heartbeats off: the consumer that keeps up with anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import msgspec
import pamqp.frame
from pamqp import commands
from pamqp.base import Frame
from pamqp.header import ProtocolHeader

_FRAME_HEAD = struct.Struct(">BHI")
_DELIVER = struct.pack(">HH", 60, 60)  # Basic.Deliver: class 60, method 60
_METHOD, _HEADER, _BODY, _HEARTBEAT = 1, 2, 3, 8
CHANNEL = 1


class _Trade(msgspec.Struct):
    i: str
    bt: int = 0


class _Ours(msgspec.Struct):
    """Our envelope: the payload is Bybit's trade, byte for byte."""

    event_id: str
    payload: _Trade
    received_ts: int = 0
    published_ts: int = 0


class _Cryptofeed(msgspec.Struct):
    """cryptofeed's trade dict: `id` is Bybit's `i`; its `raw` trade (if kept) carries `bt`."""

    id: str
    raw: _Trade | None = None


def percentile(ordered: list[int], share: float) -> float:
    if not ordered:
        return float("nan")
    return float(ordered[min(len(ordered) - 1, int(share * len(ordered)))])


class Counter:
    def __init__(self, kind: str, expect: int) -> None:
        self.decode: Callable[[bytes], _Ours | _Cryptofeed] = (
            msgspec.json.Decoder(_Ours).decode if kind == "ours" else msgspec.json.Decoder(_Cryptofeed).decode
        )
        self.expect = expect
        self.seen: set[str] = set()
        self.latencies: list[int] = []
        self.hops: list[tuple[int, int, int]] = []  # µs: firehose → worker, in the worker, worker → consumer
        self.duplicates = 0
        self.first = self.last = 0.0
        self.done = asyncio.Event()

    def on_body(self, body: bytes, now: float, received_us: int) -> None:
        if not self.first:
            self.first = now
        self.last = now
        item = self.decode(body)
        if isinstance(item, _Ours):
            trade_id, sent_us = item.event_id, item.payload.bt
            if sent_us and item.published_ts:
                received, published = item.received_ts * 1000, item.published_ts * 1000
                self.hops.append((received - sent_us, published - received, received_us - published))
        else:
            trade_id, sent_us = item.id, item.raw.bt if item.raw else 0
        if trade_id in self.seen:
            self.duplicates += 1
            return
        self.seen.add(trade_id)
        if sent_us:
            self.latencies.append(received_us - sent_us)
        if len(self.seen) >= self.expect:
            self.done.set()


async def _read_frame(reader: asyncio.StreamReader) -> Frame:
    head = await reader.readexactly(7)
    size = _FRAME_HEAD.unpack(head)[2]
    rest = await reader.readexactly(size + 1)
    return pamqp.frame.unmarshal(head + rest)[2]  # type: ignore[return-value]


async def _expect(reader: asyncio.StreamReader, kind: type[Frame]) -> Frame:
    frame = await _read_frame(reader)
    if not isinstance(frame, kind):
        raise RuntimeError(f"expected {kind.__name__}, got {frame!r}")
    return frame


async def open_consumer(url: str, queue: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, authenticate (PLAIN), open channel 1 and start a no-ack consumer on `queue`."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 5672)
    writer.write(pamqp.frame.marshal(ProtocolHeader(), 0))

    def send(frame: Frame, channel: int) -> None:
        writer.write(pamqp.frame.marshal(frame, channel))

    await _expect(reader, commands.Connection.Start)
    user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
    send(commands.Connection.StartOk(response=f"\0{user}\0{password}"), 0)
    tune = await _expect(reader, commands.Connection.Tune)
    assert isinstance(tune, commands.Connection.Tune)
    send(commands.Connection.TuneOk(channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0), 0)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    send(commands.Connection.Open(virtual_host=vhost), 0)
    await _expect(reader, commands.Connection.OpenOk)
    send(commands.Channel.Open(), CHANNEL)
    await _expect(reader, commands.Channel.OpenOk)
    send(commands.Basic.Consume(queue=queue, consumer_tag="bench", no_ack=True), CHANNEL)
    await _expect(reader, commands.Basic.ConsumeOk)
    return reader, writer


async def read_deliveries(reader: asyncio.StreamReader, counter: Counter) -> None:
    """Frames off the socket: a Deliver method starts a message, its header gives the size, bodies fill it."""
    buffer = b""
    body: list[bytes] = []
    remaining = 0
    perf_counter, time_ns = time.perf_counter, time.time_ns
    while True:
        chunk = await reader.read(1 << 20)
        if not chunk:
            return
        now, received_us = perf_counter(), time_ns() // 1000
        buffer = buffer + chunk if buffer else chunk
        offset, end = 0, len(buffer)
        while end - offset >= 8:
            kind, _, size = _FRAME_HEAD.unpack_from(buffer, offset)
            if end - offset < size + 8:
                break
            start = offset + 7
            if kind == _BODY:
                body.append(buffer[start : start + size])
                remaining -= size
                if remaining <= 0:
                    counter.on_body(b"".join(body) if len(body) > 1 else body[0], now, received_us)
                    body = []
            elif kind == _HEADER:
                remaining = int.from_bytes(buffer[start + 4 : start + 12], "big")
            elif kind == _METHOD and buffer[start : start + 4] != _DELIVER:
                raise RuntimeError(
                    f"unexpected method frame: {pamqp.frame.unmarshal(buffer[offset : offset + size + 8])}"
                )
            offset += size + 8
        buffer = buffer[offset:]


async def consume(url: str, queue: str, expect: int, idle: float, max_seconds: float, kind: str) -> dict[str, object]:
    counter = Counter(kind, expect)
    started = time.monotonic()
    reader, writer = await open_consumer(url, queue)
    print("READY", flush=True)
    reading = asyncio.ensure_future(read_deliveries(reader, counter))
    try:
        while not counter.done.is_set() and not reading.done():
            if time.monotonic() - started > max_seconds:
                break
            if counter.first and time.perf_counter() - counter.last > idle:
                break
            await asyncio.sleep(0.05)
    finally:
        reading.cancel()
        writer.close()
    latencies = sorted(counter.latencies)
    hops = {}
    for index, name in enumerate(("to_worker", "in_worker", "to_consumer")):
        # The envelope's times are whole milliseconds: each hop is ±1 ms; their tails still say where time goes.
        values = sorted(hop[index] for hop in counter.hops)
        hops[name] = {"p50": percentile(values, 0.5) / 1000, "p99": percentile(values, 0.99) / 1000}
    elapsed = counter.last - counter.first
    distinct = len(counter.seen)
    return {
        "distinct": distinct,
        "duplicates": counter.duplicates,
        "expected": expect,
        "lost": max(0, expect - distinct),
        "seconds": elapsed,
        "trades_per_s": (distinct - 1) / elapsed if elapsed > 0 else 0.0,
        "latency_us": {
            "count": len(latencies),
            "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99),
            "max": float(latencies[-1]) if latencies else float("nan"),
        },
        "hops_ms": hops,
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
