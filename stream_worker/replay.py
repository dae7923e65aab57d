"""`python -m stream_worker.replay PATH...`: feed recorded Bybit frames through the worker's path, offline.

PATH is a capture file written by `WS_GATEWAY_CAPTURE_DIR` (`*.jsonl.gz`, read directly, also when cut short by
a crash), a directory of them, or a plain file with one frame per line as it came off the socket (JSON text).
Frames go through the same protocol core, order books, tickers and normalizer the worker uses; nothing is sent
anywhere. A capture also holds the socket's sessions and the ops we sent: a new session resets the books as a
reconnect does, and our subscribes are replayed into the core so Bybit's acks match them. One socket is replayed
per run (`--socket`, default the first one met). Prints the final books and the counters, so a capture from
production can be checked for gaps, stale messages and crossed books.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import msgspec

from shared.enums import Endpoint
from stream_worker.bybit.events import Malformed, Push, Unknown
from stream_worker.bybit.protocol import BybitProtocol
from stream_worker.bybit.signing import Credentials
from stream_worker.envelopes.market import BookOutput, MarketResult, MarketState
from stream_worker.envelopes.normalize import Normalizer, PayloadError
from stream_worker.exchange.capture import SUFFIX, CaptureRecord

_RECORD = msgspec.json.Decoder(CaptureRecord)
_OP = msgspec.json.Decoder(dict[str, object])


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
        """Plain frames, one per item; the item's index stands in for the clock."""
        for index, frame in enumerate(frames):
            self.frame(frame, float(index))

    def frame(self, frame: str, now: float) -> None:
        if not frame.strip():
            return
        self.counters["frames"] += 1
        for event in self.protocol.receive(frame, now):
            match event:
                case Push():
                    self._push(event, now)
                case Malformed(kind=kind, topic=topic):
                    self.counters[f"frames:malformed:{kind}"] += 1
                    if topic is not None and self.market is not None and self.market.handles(topic):
                        self._collect(self.market.on_unreadable(topic, now=now, received_ms=0, trace_id="replay"))
                case Unknown(kind=kind):
                    self.counters[f"frames:unknown:{kind}"] += 1
                case _:
                    self.counters[f"control:{type(event).__name__}"] += 1

    def record(self, record: CaptureRecord) -> None:
        """One line of a capture: a frame received, an op we sent, or a session opened or closed."""
        now = record.ts / 1000
        match record.dir:
            case "in":
                self.frame(record.frame, now)
            case "out":
                self.counters["ops_sent"] += 1
                self._op_sent(record.frame)
            case "open":
                self.counters["sessions"] += 1
                self.protocol.connection_made(now, record.ts)
                if self.market is not None:  # what the worker does on every (re)connect
                    self._collect(self.market.reset(now=now, received_ms=record.ts, trace_id="replay"))
            case "close":
                self.protocol.connection_lost()
        self.protocol.frames_to_send()  # the core's own pings and ops go nowhere

    def _op_sent(self, text: str) -> None:
        """Tell the core what the worker wanted, so Bybit's acks in the capture settle our ops as they did."""
        try:
            op = _OP.decode(text)
        except msgspec.DecodeError:
            return
        args = op.get("args")
        if not isinstance(args, list):
            return
        for topic in args:
            if isinstance(topic, str) and topic:
                if op.get("op") == "subscribe":
                    self.protocol.want(topic)
                elif op.get("op") == "unsubscribe":
                    self.protocol.unwant(topic)

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


def lines_of(path: Path) -> Iterator[str]:
    """The lines of a plain or gzip file. A gzip file cut short (the worker was killed) reads up to the cut."""
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as compressed:
            try:
                for line in compressed:  # binary: every whole line before the cut is handed out first
                    yield line.decode("utf-8", errors="replace")
            except EOFError:
                return
    else:
        with path.open(encoding="utf-8", errors="replace") as plain:
            yield from plain


def files_of(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as given; a directory gives its capture files in name order (per socket, oldest first)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.name.endswith((SUFFIX, ".jsonl")))
        else:
            yield path


def read(paths: Iterable[Path]) -> Iterator[CaptureRecord | str]:
    """Each line as a capture record, or as a plain frame when it is not one."""
    for path in files_of(paths):
        for line in lines_of(path):
            try:
                yield _RECORD.decode(line)
            except msgspec.DecodeError:
                yield line


def replay_paths(paths: Iterable[Path], endpoint: str | None = None, socket: str | None = None) -> Replay:
    replay: Replay | None = None
    skipped = 0
    index = 0
    for item in read(paths):
        if isinstance(item, CaptureRecord):
            socket = socket or item.socket
            if item.socket != socket:
                skipped += 1
                continue
            replay = replay or Replay(Endpoint(endpoint or item.endpoint))
            replay.record(item)
        else:
            replay = replay or Replay(Endpoint(endpoint or Endpoint.LINEAR.value))
            replay.frame(item, float(index))
            index += 1
    replay = replay or Replay(Endpoint(endpoint or Endpoint.LINEAR.value))
    if skipped:
        replay.counters["records:other_sockets"] = skipped
    return replay


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream_worker.replay", description=__doc__.splitlines()[0])
    parser.add_argument("paths", type=Path, nargs="+", help="capture files or directories, or plain JSON lines")
    parser.add_argument(
        "--endpoint", choices=[e.value for e in Endpoint], help="for plain frames (default linear); captures say"
    )
    parser.add_argument("--socket", help="which socket of a capture to replay (default: the first one met)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = replay_paths(args.paths, args.endpoint, args.socket).report()
    if args.json:
        out.write(msgspec.json.encode(report).decode() + "\n")
    else:
        print_report(report, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
