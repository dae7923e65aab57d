"""The incident capture: gzip JSON lines per socket, rotated and bounded, readable by replay even when cut short."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import random
import time
from pathlib import Path

import msgspec

from stream_worker.exchange.capture import SUFFIX, Capture, CaptureRecord
from stream_worker.replay import lines_of, main, read
from tests.support.samples import sample_text


async def capture_all(capture: Capture, feed: list[tuple[str, str]]) -> None:
    """Run the capture's task, feed records in flushes, then stop it the way the worker does (cancel)."""
    task = asyncio.create_task(capture.run())
    linear, spot = capture.socket("linear", "linear"), capture.socket("spot", "spot")
    linear.opened()
    for index, (socket, frame) in enumerate(feed):
        (linear if socket == "linear" else spot).received(frame)
        if index % 10 == 0:
            await asyncio.sleep(0.002)  # let the writer take a batch now and then
    linear.closed("closed by server", "conn-1")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


def records(directory: Path) -> list[CaptureRecord]:
    return [item for item in read([directory]) if isinstance(item, CaptureRecord)]


async def test_every_frame_is_recorded_per_socket_in_order_with_its_time(tmp_path: Path) -> None:
    capture = Capture(tmp_path, flush_interval=0.001)
    frames = [("linear", sample_text("public_publicTrade_linear.json")), ("spot", "not json at all")] * 10
    before = int(time.time() * 1000)
    await capture_all(capture, frames)
    got = records(tmp_path)
    linear = [r for r in got if r.socket == "linear"]
    assert [r.dir for r in linear] == ["open"] + ["in"] * 10 + ["close"]
    assert [r.frame for r in linear if r.dir == "in"] == [f for s, f in frames if s == "linear"]
    assert linear[-1].conn_id == "conn-1"
    assert [r.frame for r in got if r.socket == "spot"] == ["not json at all"] * 10
    assert all(before <= r.ts <= int(time.time() * 1000) for r in got)
    assert sorted(p.name.split(".")[0] for p in files(tmp_path)) == ["linear", "spot"]
    assert capture.records == len(frames) + 2


async def test_auth_requests_are_recorded_without_key_or_signature(tmp_path: Path) -> None:
    capture = Capture(tmp_path, flush_interval=0.001)
    task = asyncio.create_task(capture.run())
    await asyncio.sleep(0)  # started, as the worker's capture task always is long before it stops
    capture.socket("private", "private").sent('{"req_id":"auth","op":"auth","args":["my-key",1,"my-signature"]}')
    capture.socket("private", "private").sent('{"req_id":"order","op":"subscribe","args":["order"]}')
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    text = "".join(lines_of(files(tmp_path)[0]))
    assert "my-key" not in text
    assert "my-signature" not in text
    assert [r.frame for r in records(tmp_path)][1] == '{"req_id":"order","op":"subscribe","args":["order"]}'


async def test_files_rotate_and_the_oldest_are_deleted_to_stay_within_the_total(tmp_path: Path) -> None:
    rng = random.Random(7)
    noise = [("linear", json.dumps({"topic": "t", "data": rng.randbytes(600).hex()})) for _ in range(2_000)]
    capture = Capture(tmp_path, file_bytes=64 * 1024, total_bytes=256 * 1024, flush_interval=0.001)
    await capture_all(capture, noise)
    sizes = [f.stat().st_size for f in files(tmp_path) if f.name.endswith(SUFFIX)]
    assert capture.files_deleted > 0
    # Bounded: the total, plus at most one file's last batch past the rotation size.
    assert sum(sizes) <= capture.total_bytes + capture.file_bytes
    # What is left is the newest part of the stream, contiguous up to the last frame, and every file reads.
    kept = [r.frame for r in records(tmp_path) if r.dir == "in"]
    assert kept == [frame for _, frame in noise][-len(kept) :]


async def test_a_full_writer_drops_and_counts_instead_of_growing(tmp_path: Path) -> None:
    capture = Capture(tmp_path, max_pending=10, flush_interval=3600)
    socket = capture.socket("linear", "linear")
    for _ in range(25):
        socket.received("{}")
    assert capture.dropped == 15


async def test_an_unwritable_directory_is_counted_and_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    capture = Capture(blocker / "capture", flush_interval=0.001)  # a directory under a file cannot exist
    await capture_all(capture, [("linear", "{}")] * 5)
    assert capture.errors >= 1
    assert capture.records == 0


def test_a_capture_cut_short_by_a_crash_replays_up_to_the_cut(tmp_path: Path) -> None:
    lines = [
        msgspec.json.encode(CaptureRecord(ts=1, socket="spot", endpoint="spot", dir="in", frame=text)).decode()
        for text in (sample_text("public_orderbook_snapshot_spot.json"),)
    ]
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb") as compressed:
        compressed.write(("\n".join(lines) + "\n").encode())
        compressed.flush()  # what the capture does after every batch
        cut = raw.getvalue()  # the process died here: no end-of-stream marker, no trailer
    path = tmp_path / f"spot.x{SUFFIX}"
    path.write_bytes(cut)
    out = io.StringIO()
    assert main([str(tmp_path), "--json"], out=out) == 0
    report = json.loads(out.getvalue())
    (book,) = report["books"].values()
    assert book["state"] == "live"
