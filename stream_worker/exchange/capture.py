"""Capture of the raw Bybit conversation for incidents: every frame received and every op sent, per socket.

Files are gzip-compressed JSON lines in `WS_GATEWAY_CAPTURE_DIR`, one series per socket
(`{socket}.{UTC start}.jsonl.gz`), each line one `CaptureRecord`: the wall-clock receive (or send) time in epoch
ms, the socket, the direction (`in`, `out`, or the session marks `open` and `close`) and the frame text exactly
as it crossed the wire. A file is rotated past `file_bytes` (compressed), and the oldest files of the directory
are deleted while all of them together exceed `total_bytes`. `python -m stream_worker.replay` reads them.

The hot path only appends a tuple to a list (`SocketCapture.received`). `Capture.run`, a task owned by the
worker's task tree, swaps the list out every `flush_interval` and hands it to one writer thread, which encodes,
compresses (zlib releases the GIL) and writes; the event loop never waits on compression or the disk. Each batch
ends with a sync flush, so a file cut short by a crash still reads up to its last batch. If the writer falls
behind, records beyond `max_pending` are dropped and counted, never buffered without bound. A disk error is
logged once and counted; capture is a diagnostic and never takes the gateway down.

Auth requests are written with their arguments replaced: the API key and signature never reach a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

import msgspec
from loguru import logger

SUFFIX = ".jsonl.gz"
Direction = Literal["in", "out", "open", "close"]
REDACTED_AUTH = '{"op":"auth","args":"***"}'
_AUTH_MARK = '"op":"auth"'  # how our own encoder spells an auth request (bybit/frames.py encode_auth)


class CaptureRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One line of a capture file."""

    ts: int  # epoch ms when the frame was read off (or written to) the socket
    socket: str  # the socket's label, e.g. "linear"
    endpoint: str  # the Bybit endpoint it belongs to, e.g. "linear" or "private"
    dir: Direction
    frame: str = ""  # the frame text as it crossed the wire; for `close`, the reason
    conn_id: str | None = None  # Bybit's id of the socket, on `close` (and on `in` frames that carry it anyway)


_Pending = tuple[float, str, str, Direction, str, str | None]  # (wall s, socket, endpoint, dir, frame, conn_id)


class SocketCapture:
    """The recording handle of one socket: cheap calls from the socket's own task, nothing awaited."""

    __slots__ = ("_capture", "_endpoint", "_label", "_wall")

    def __init__(self, capture: Capture, label: str, endpoint: str, wall: Callable[[], float]) -> None:
        self._capture = capture
        self._label = label
        self._endpoint = endpoint
        self._wall = wall

    def received(self, frame: str | bytes) -> None:
        # Every frame of every socket passes here: inlined `Capture.add`, no encoding, no clock but the wall.
        if not isinstance(frame, str):
            frame = bytes(frame).decode("utf-8", errors="replace")  # Bybit sends text; keep whatever came
        capture = self._capture
        pending = capture.pending
        if len(pending) < capture.max_pending:
            pending.append((self._wall(), self._label, self._endpoint, "in", frame, None))
        else:
            capture.dropped += 1

    def sent(self, frame: str) -> None:
        if _AUTH_MARK in frame:
            frame = REDACTED_AUTH
        self._capture.add((self._wall(), self._label, self._endpoint, "out", frame, None))

    def opened(self) -> None:
        self._capture.add((self._wall(), self._label, self._endpoint, "open", "", None))

    def closed(self, reason: str, conn_id: str | None) -> None:
        self._capture.add((self._wall(), self._label, self._endpoint, "close", reason, conn_id))


class _Series:
    """The open file of one socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw: IO[bytes] = path.open("xb")
        # Level 1: about a third of level 6's CPU for a few percent more bytes; JSON frames compress well anyway.
        self.gzip = gzip.GzipFile(fileobj=self.raw, mode="wb", compresslevel=1)

    def write(self, data: bytes) -> int:
        self.gzip.write(data)
        self.gzip.flush(zlib.Z_SYNC_FLUSH)  # readable up to here even if the process dies before close
        return self.raw.tell()

    def close(self) -> None:
        self.gzip.close()
        self.raw.close()


class Capture:
    """Owns the capture directory, the pending records and the one writer thread."""

    def __init__(
        self,
        directory: Path,
        *,
        file_bytes: int = 64 * 1024 * 1024,
        total_bytes: int = 1024 * 1024 * 1024,
        flush_interval: float = 1.0,
        max_pending: int = 200_000,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if file_bytes < 1 or total_bytes < file_bytes:
            raise ValueError("capture sizes: need 1 <= file_bytes <= total_bytes")
        self.directory = directory
        self.file_bytes = file_bytes
        self.total_bytes = total_bytes
        self._flush_interval = flush_interval
        self.max_pending = max_pending
        self._wall = wall
        self.pending: list[_Pending] = []
        self._series: dict[str, _Series] = {}
        self._encoder = msgspec.json.Encoder()
        self._executor: ThreadPoolExecutor | None = None
        self._failing = False
        self.records = 0  # written
        self.dropped = 0  # over max_pending, or lost to a disk error
        self.files_deleted = 0
        self.errors = 0

    def socket(self, label: str, endpoint: str) -> SocketCapture:
        return SocketCapture(self, label, endpoint, self._wall)

    def add(self, record: _Pending) -> None:
        pending = self.pending
        if len(pending) >= self.max_pending:
            self.dropped += 1
            return
        pending.append(record)

    async def run(self) -> None:
        """Write what is pending every `flush_interval` until cancelled; then write the rest and close."""
        loop = asyncio.get_running_loop()
        executor = self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture")
        try:
            await asyncio.shield(loop.run_in_executor(executor, self._prepare))
            while True:
                await asyncio.sleep(self._flush_interval)
                await self._flush(loop, executor)
        finally:
            # Cancelled (shutdown): whatever was queued before, then the last records, then close. The single
            # thread runs jobs in order, so an interrupted write has finished before these start.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._finish(loop, executor))

    async def _finish(self, loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor) -> None:
        try:
            await self._flush(loop, executor)
            await loop.run_in_executor(executor, self._close_all)
        finally:
            executor.shutdown(wait=False)

    async def _flush(self, loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor) -> None:
        batch, self.pending = self.pending, []
        if batch:
            # Shielded: a cancel must not withdraw a batch still queued for the thread; it is written anyway.
            await asyncio.shield(loop.run_in_executor(executor, self._write, batch))

    # -- the writer thread -----------------------------------------------------------------------------------

    def _prepare(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._enforce_total()
        except OSError as error:
            self._failed(error)

    def _write(self, batch: list[_Pending]) -> None:
        by_socket: dict[str, list[bytes]] = {}
        encode = self._encoder.encode
        for wall, label, endpoint, direction, frame, conn_id in batch:
            lines = by_socket.get(label)
            if lines is None:
                lines = by_socket[label] = []
            if direction == "in":
                # The bulk of a capture, spelled out: encoding only the frame string holds the GIL (which
                # compression does not) about 3x shorter than encoding a CaptureRecord. Same bytes.
                lines.append(
                    b'{"ts":%d,"socket":%b,"endpoint":%b,"dir":"in","frame":%b}'
                    % (int(wall * 1000), encode(label), encode(endpoint), encode(frame))
                )
            else:
                record = CaptureRecord(
                    ts=int(wall * 1000), socket=label, endpoint=endpoint, dir=direction, frame=frame, conn_id=conn_id
                )
                lines.append(encode(record))
        try:
            rotated = False
            for label, lines in by_socket.items():
                series = self._series.get(label)
                if series is None:
                    series = self._series[label] = _Series(self._new_path(label))
                size = series.write(b"\n".join(lines) + b"\n")
                if size >= self.file_bytes:
                    series.close()
                    del self._series[label]
                    rotated = True
            if rotated:
                self._enforce_total()
        except OSError as error:
            self.dropped += len(batch)
            self._failed(error)
            self._close_all()
            return
        self.records += len(batch)
        self._failing = False

    def _new_path(self, label: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", label)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        return self.directory / f"{safe}.{stamp}{SUFFIX}"

    def _enforce_total(self) -> None:
        """Delete the oldest closed files while the directory's capture files exceed `total_bytes`."""
        files = []
        for path in self.directory.glob(f"*{SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                files.append((stat.st_mtime, path.name, path, stat.st_size))
        files.sort()
        total = sum(size for *_, size in files)
        open_paths = {series.path for series in self._series.values()}
        for _, _, path, size in files:
            if total <= self.total_bytes:
                break
            if path in open_paths:
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                self.files_deleted += 1
            total -= size

    def _close_all(self) -> None:
        for series in self._series.values():
            with contextlib.suppress(OSError):
                series.close()
        self._series.clear()

    def _failed(self, error: OSError) -> None:
        self.errors += 1
        if not self._failing:  # once per run of failures; the counters keep the total
            self._failing = True
            logger.bind(directory=str(self.directory), error=f"{type(error).__name__}: {error.strerror}").error(
                "cannot write the Bybit capture; frames are dropped until the disk recovers"
            )
