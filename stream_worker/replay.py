"""`python -m stream_worker.replay FILE`: feed recorded Bybit frames through the worker's path, offline.

Each line of FILE is one frame as it came off the socket (JSON text). Frames go through the same protocol
core, order books, tickers and normalizer the worker uses; nothing is sent anywhere. Prints the final books
and the counters, so a capture from production can be checked for gaps, stale messages and crossed books.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import msgspec

from shared.enums import Endpoint
from stream_worker.bybit.events import Malformed, Push, Unknown
from stream_worker.bybit.protocol import BybitProtocol
from stream_worker.bybit.signing import Credentials
from stream_worker.envelopes.market import BookOutput, MarketResult, MarketState
from stream_worker.envelopes.normalize import Normalizer, PayloadError


class Replay:
    """The decode -> book -> publish path of one socket, collecting what would be published."""

    def __init__(self, endpoint: Endpoint, *, checksum_levels: int = 25) -> None:
        credentials = Credentials("replay", "replay") if endpoint.private else None
        self.protocol = BybitProtocol(endpoint=endpoint, credentials=credentials)
        self.market = (
            MarketState(endpoint, book_output=BookOutput.STREAM, checksum_levels=checksum_levels)
            if not endpoint.private
            else None
        )
        self.normalizer = Normalizer(endpoint)
        self.counters: Counter[str] = Counter()
        self.published: Counter[str] = Counter()
        self.resubscribes: Counter[str] = Counter()

    def feed(self, frames: Iterable[str]) -> None:
        for index, frame in enumerate(frames):
            if not frame.strip():
                continue
            self.counters["frames"] += 1
            for event in self.protocol.receive(frame, float(index)):
                match event:
                    case Push():
                        self._push(event, float(index))
                    case Malformed(kind=kind, topic=topic):
                        self.counters[f"frames:malformed:{kind}"] += 1
                        if topic is not None and self.market is not None and self.market.handles(topic):
                            now = float(index)
                            self._collect(self.market.on_unreadable(topic, now=now, received_ms=0, trace_id="replay"))
                    case Unknown(kind=kind):
                        self.counters[f"frames:unknown:{kind}"] += 1
                    case _:
                        self.counters[f"control:{type(event).__name__}"] += 1

    def _push(self, push: Push, now: float) -> None:
        if self.market is not None and self.market.handles(push.topic):
            self._collect(self.market.on_push(push, now=now, received_ms=0, trace_id="replay"))
            return
        try:
            normalized = self.normalizer.normalize(push, received_ms=0, trace_id="replay")
        except PayloadError as error:
            self.counters[f"payload:{error.kind}"] += 1
            return
        for item in normalized.events:
            self.published[item.envelope.event_type] += 1

    def _collect(self, result: MarketResult) -> None:
        for item in result.events:
            self.published[item.envelope.event_type] += 1
        for topic in result.resubscribe:
            self.resubscribes[topic] += 1

    def report(self) -> dict[str, Any]:
        books = {}
        if self.market is not None:
            for topic, book in self.market.books().items():
                bids, asks = book.top(5)
                books[topic] = {
                    "state": book.state.value,
                    "invalid_cause": book.invalid_cause.value if book.invalid_cause else None,
                    "u": book.last_update_id,
                    "seq": book.last_seq,
                    "best_bid": book.best_bid(),
                    "best_ask": book.best_ask(),
                    "top5_bids": bids,
                    "top5_asks": asks,
                    "checksum": book.checksum() if book.is_valid else None,
                }
        return {
            "books": books,
            "published": dict(self.published),
            "resubscribes": dict(self.resubscribes),
            "counters": dict(self.counters) | (dict(self.market.counters) if self.market else {}),
        }


def print_report(report: dict[str, Any], out: TextIO) -> None:
    for topic, book in report["books"].items():
        out.write(f"{topic}: {book['state']}")
        if book["invalid_cause"]:
            out.write(f" (invalid: {book['invalid_cause']})")
        out.write(f" u={book['u']} seq={book['seq']} checksum={book['checksum']}\n")
        out.write(f"  best bid {book['best_bid']}  best ask {book['best_ask']}\n")
    out.write("published: " + ", ".join(f"{k}={v}" for k, v in sorted(report["published"].items())) + "\n")
    if report["resubscribes"]:
        out.write("resubscribes: " + ", ".join(f"{k}={v}" for k, v in sorted(report["resubscribes"].items())) + "\n")
    out.write("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(report["counters"].items())) + "\n")


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream_worker.replay", description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="JSON lines: one Bybit frame per line")
    parser.add_argument("--endpoint", default="linear", choices=[e.value for e in Endpoint])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    replay = Replay(Endpoint(args.endpoint))
    with args.file.open(encoding="utf-8") as frames:
        replay.feed(frames)
    report = replay.report()
    if args.json:
        out.write(msgspec.json.encode(report).decode() + "\n")
    else:
        print_report(report, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
