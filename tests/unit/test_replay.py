"""Replaying recorded frames offline runs the worker's decode -> book -> publish path and reports it."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from stream_worker.replay import main
from tests.support.samples import compact, sample, sample_text


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def replay(path: Path, *extra: str) -> dict[str, Any]:
    out = io.StringIO()
    assert main([str(path), "--json", *extra], out=out) == 0
    report: dict[str, Any] = json.loads(out.getvalue())
    return report


def test_replaying_real_samples_leaves_a_valid_book_and_counts_every_event(tmp_path: Path) -> None:
    names = [
        "public_orderbook_snapshot_linear.json",
        "public_orderbook_delta_linear.json",
        "public_publicTrade_linear.json",
        "public_kline.json",
        "public_allLiquidation.json",
    ]
    report = replay(write(tmp_path / "linear.jsonl", [compact(sample(n)) for n in names]))
    (book,) = report["books"].values()
    assert book["state"] == "live"
    assert book["u"] == sample("public_orderbook_delta_linear.json")["data"]["u"]
    assert report["published"]["orderbook"] == 2
    assert report["published"]["trades"] == len(sample("public_publicTrade_linear.json")["data"])
    assert report["published"]["kline"] == 1


def test_replaying_ticker_samples_merges_the_delta(tmp_path: Path) -> None:
    lines = [sample_text("public_tickers_inverse_snapshot.json"), sample_text("public_tickers_inverse_delta.json")]
    report = replay(write(tmp_path / "inverse.jsonl", [compact(json.loads(t)) for t in lines]), "--endpoint", "inverse")
    assert report["published"]["ticker"] == 2
    assert report["counters"]["ticker:delta"] == 1


def test_a_gap_in_the_capture_is_reported_with_a_resubscribe(tmp_path: Path) -> None:
    snapshot = sample("public_orderbook_snapshot_linear.json")
    delta = sample("public_orderbook_delta_linear.json")
    skipped = json.loads(json.dumps(delta))
    skipped["data"]["u"] += 5
    report = replay(write(tmp_path / "gap.jsonl", [compact(snapshot), compact(skipped), "garbage"]))
    (book,) = report["books"].values()
    assert (book["state"], book["invalid_cause"]) == ("waiting_snapshot", "gap")
    assert report["published"] == {"orderbook": 1, "book_invalid": 1}
    assert report["resubscribes"] == {snapshot["topic"]: 1}
    assert report["counters"]["frames:malformed:invalid_json"] == 1


def test_human_report_names_each_book(tmp_path: Path) -> None:
    path = write(tmp_path / "b.jsonl", [compact(sample("public_orderbook_snapshot_spot.json"))])
    out = io.StringIO()
    assert main([str(path), "--endpoint", "spot"], out=out) == 0
    assert sample("public_orderbook_snapshot_spot.json")["topic"] in out.getvalue()
