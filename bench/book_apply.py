"""Cost of applying order-book deltas: `uv run python -m bench.book_apply [--json PATH]`.

For books of 50, 200 and 1000 levels per side, applies a fixed stream of realistic deltas (1 to 4 levels per
side: size updates near the top, inserts into empty ticks, deletes with size "0", balanced so the book keeps
its size) and reports the median over several repeats of the mean cost per delta. Also reported, because the
worker pays them per message too: decoding the delta's `data` JSON, `top(25)`, `checksum(25)`, and applying
the snapshot; and apply + `checksum(25)` per delta, which is what a published delta costs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path

import msgspec

from stream_worker.bybit.books import BOOK_DATA, BookData, OrderBook

MID = 3_000_000  # in ticks of 0.01: 30000.00
SIZES = ("0.001", "0.012", "0.5", "1.250", "3.7", "12.004")


def price(tick: int) -> str:
    return f"{tick // 100}.{tick % 100:02d}"


class _Model:
    """The benchmark's own view of one side, to draw valid updates, inserts and deletes."""

    def __init__(self, ticks: list[int], sign: int) -> None:
        self.sign = sign  # -1 for bids (best is highest), +1 for asks
        self.order = sorted(sign * t for t in ticks)  # best first

    def __len__(self) -> int:
        return len(self.order)

    def near_top(self, rng: random.Random, window: int) -> int:
        return self.sign * self.order[rng.randrange(min(window, len(self.order)))]

    def insert_near_top(self, rng: random.Random, window: int) -> int:
        best = self.order[0]
        for attempt in range(1_000_000):
            reach = window << (attempt // 20)  # a full window makes us look further out
            key = best + rng.randrange(-3, reach)  # mostly behind the best price, sometimes improving it
            i = bisect_left(self.order, key)
            # Stay on our side of the mid so the book never crosses.
            tick = self.sign * key
            if (i == len(self.order) or self.order[i] != key) and (tick > MID if self.sign > 0 else tick < MID):
                self.order.insert(i, key)
                return tick
        raise RuntimeError("no free tick")

    def delete_near_top(self, rng: random.Random, window: int) -> int:
        return self.sign * self.order.pop(rng.randrange(min(window, len(self.order))))


def build(levels: int, deltas: int, seed: int) -> tuple[bytes, list[bytes]]:
    """The snapshot `data` and `deltas` consecutive delta `data` objects, as JSON."""
    rng = random.Random(seed)
    # Levels on every other tick, so inserts have room between them.
    bid_ticks = [MID - 1 - 2 * i for i in range(levels)]
    ask_ticks = [MID + 1 + 2 * i for i in range(levels)]
    u = 1_000_000
    snapshot = {
        "s": "BTCUSDT",
        "b": [[price(t), rng.choice(SIZES)] for t in bid_ticks],
        "a": [[price(t), rng.choice(SIZES)] for t in ask_ticks],
        "u": u,
        "seq": 7_000_000,
    }
    sides = (_Model(bid_ticks, -1), _Model(ask_ticks, +1))
    out: list[bytes] = []
    for i in range(deltas):
        data: dict[str, object] = {"s": "BTCUSDT", "u": u + 1 + i, "seq": 7_000_001 + 3 * i}
        for key, side in zip(("b", "a"), sides, strict=True):
            changes: dict[int, str] = {}
            for _ in range(rng.randint(0, 4) if key == "a" else rng.randint(1, 4)):
                roll = rng.random()
                if roll < 0.6:
                    tick, size = side.near_top(rng, 10), rng.choice(SIZES)
                elif len(side) < levels or (len(side) == levels and roll < 0.8):  # the book keeps its size
                    tick, size = side.insert_near_top(rng, 50), rng.choice(SIZES)
                else:
                    tick, size = side.delete_near_top(rng, 50), "0"
                changes[tick] = size
            data[key] = [[price(t), s] for t, s in changes.items()]
        out.append(msgspec.json.encode(data))
    return msgspec.json.encode(snapshot), out


def per_call_ns(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - start) / calls


def measure(levels: int, deltas: int, repeats: int, seed: int) -> dict[str, float | int]:
    snapshot_json, delta_json = build(levels, deltas, seed)
    snapshot = BOOK_DATA.decode(snapshot_json)
    decoded: list[BookData] = [BOOK_DATA.decode(d) for d in delta_json]
    apply_ns: list[float] = []
    published_ns: list[float] = []
    snapshot_ns: list[float] = []
    for _ in range(repeats):
        book = OrderBook(f"orderbook.{levels}.BTCUSDT", levels)
        start = time.perf_counter_ns()
        book.apply("snapshot", snapshot)
        snapshot_ns.append(time.perf_counter_ns() - start)
        apply = book.apply
        start = time.perf_counter_ns()
        for data in decoded:
            apply("delta", data)
        apply_ns.append((time.perf_counter_ns() - start) / deltas)
        if not (book.is_valid and book.counters.deltas == deltas):
            raise SystemExit(f"benchmark stream is not valid at {levels} levels: {book.counters}")
        # What the worker pays per published delta: the apply and the checksum the event carries.
        book = OrderBook(f"orderbook.{levels}.BTCUSDT", levels)
        book.apply("snapshot", snapshot)
        apply, checksum = book.apply, book.checksum
        start = time.perf_counter_ns()
        for data in decoded:
            apply("delta", data)
            checksum(25)
        published_ns.append((time.perf_counter_ns() - start) / deltas)
    last = delta_json[-1]
    return {
        "levels_per_side": levels,
        "deltas": deltas,
        "repeats": repeats,
        "apply_us_per_delta": statistics.median(apply_ns) / 1000,
        "apply_checksum_us_per_delta": statistics.median(published_ns) / 1000,
        "decode_us_per_delta": statistics.median(
            per_call_ns(lambda: BOOK_DATA.decode(last), 2000) for _ in range(repeats)
        )
        / 1000,
        "top25_us": statistics.median(per_call_ns(lambda: book.top(25), 2000) for _ in range(repeats)) / 1000,
        "checksum25_us": statistics.median(per_call_ns(book.checksum, 2000) for _ in range(repeats)) / 1000,
        "snapshot_apply_ms": statistics.median(snapshot_ns) / 1e6,
        "levels_after": len(book.top(1_000_000)[0]) + len(book.top(1_000_000)[1]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.book_apply", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--deltas", type=int, default=20_000, help="deltas per repeat (default 20000)")
    parser.add_argument("--repeats", type=int, default=7, help="repeats; the median is reported (default 7)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--levels", type=int, nargs="+", default=[50, 200, 1000])
    args = parser.parse_args(argv)
    results = [measure(n, args.deltas, args.repeats, args.seed) for n in args.levels]
    header = (
        "levels/side",
        "apply µs/delta",
        "apply+checksum(25) µs",
        "decode µs/delta",
        "top(25) µs",
        "checksum(25) µs",
        "snapshot ms",
    )
    print(" | ".join(header))
    print(" | ".join("-" * len(h) for h in header))
    for r in results:
        row = (
            f"{r['levels_per_side']}",
            f"{r['apply_us_per_delta']:.2f}",
            f"{r['apply_checksum_us_per_delta']:.2f}",
            f"{r['decode_us_per_delta']:.2f}",
            f"{r['top25_us']:.2f}",
            f"{r['checksum25_us']:.2f}",
            f"{r['snapshot_apply_ms']:.3f}",
        )
        print(" | ".join(cell.rjust(len(h)) for cell, h in zip(row, header, strict=True)))
    print(f"(median of {args.repeats} repeats of {args.deltas} deltas; Python {sys.version.split()[0]})")
    if args.json:
        payload = {"python": sys.version.split()[0], "results": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
