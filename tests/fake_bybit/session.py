"""One accepted connection of the fake: a reader, a writer fed by an ordered outbox, an op worker and an
idle watchdog, all owned by one TaskGroup that ends with the connection.

Everything a connection sends goes through `send`, which only queues: fan-out from the push loop and
from test hooks is therefore synchronous and keeps each topic's messages in generation order. What to
answer is decided by the `SessionHost` (the server); this module only moves frames and keeps time.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from tests.fake_bybit.connections import ConnectionRecord, OpRequest

JsonObject = dict[str, Any]


class SessionHost(Protocol):
    ack_delay: float

    def is_stalled(self, session: Session) -> bool: ...

    def on_ping(self, session: Session, request: JsonObject) -> None: ...

    def on_unreadable(self, session: Session, raw: str | bytes) -> None: ...

    async def on_op(self, session: Session, request: JsonObject) -> None: ...


class Session:
    def __init__(self, ws: ServerConnection, record: ConnectionRecord, host: SessionHost) -> None:
        self.ws = ws
        self.record = record
        self._host = host
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._ops: asyncio.Queue[JsonObject] = asyncio.Queue()
        # §4.3: the idle clock is reset by JSON pings and by pushed data, nothing else.
        self.last_activity = time.monotonic()

    # ---- sending -------------------------------------------------------------------------------
    def send(self, message: JsonObject | str, *, data: bool = False) -> bool:
        """Queue a frame (dict as compact JSON, str as is). False when dropped because of a stall."""
        if self._host.is_stalled(self):
            return False
        text = message if isinstance(message, str) else json.dumps(message, separators=(",", ":"))
        self._outbox.put_nowait(text)
        if data:
            self.last_activity = time.monotonic()
        return True

    async def flush(self) -> None:
        """Wait until every queued frame has been written (or dropped)."""
        await self._outbox.join()

    # ---- closing -------------------------------------------------------------------------------
    def abort(self, closed_by: str) -> None:
        """Cut the TCP connection without a close frame: the client sees 1006 (§12)."""
        self.record.closed_by = self.record.closed_by or closed_by
        self.ws.transport.abort()

    async def close(self, code: int, reason: str, closed_by: str) -> None:
        self.record.closed_by = self.record.closed_by or closed_by
        await self.ws.close(code, reason)

    # ---- the connection's tasks ----------------------------------------------------------------
    async def run(self) -> None:
        """Serve until the connection closes."""
        async with asyncio.TaskGroup() as tasks:
            helpers = [
                tasks.create_task(self._write(), name=f"write {self.record.conn_id}"),
                tasks.create_task(self._work(), name=f"ops {self.record.conn_id}"),
            ]
            if self.record.idle_timeout is not None:
                helpers.append(tasks.create_task(self._watch_idle(self.record.idle_timeout)))
            await self._read()
            for helper in helpers:
                helper.cancel()

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self._receive(raw)
        except ConnectionClosed:
            pass

    def _receive(self, raw: str | bytes) -> None:
        record = self.record
        record.frames_received += 1
        request: Any = None
        if isinstance(raw, str):
            try:
                request = json.loads(raw)
            except ValueError:
                request = None
        op = request.get("op") if isinstance(request, dict) else None
        record.ops[op if isinstance(op, str) else "<invalid>"] += 1
        if op in ("subscribe", "unsubscribe") and isinstance(request, dict):
            record.requests.append(
                OpRequest(op=op, args=request.get("args"), req_id=request.get("req_id"), at=time.monotonic())
            )
        if self._host.is_stalled(self):
            return  # a stalled server reads nothing and answers nothing
        if not isinstance(request, dict):
            self._host.on_unreadable(self, raw)
        elif op == "ping":
            # Pongs bypass the op queue, so a test's ack delay never delays them.
            self.last_activity = time.monotonic()
            self._host.on_ping(self, request)
        else:
            self._ops.put_nowait(request)

    async def _write(self) -> None:
        while True:
            text = await self._outbox.get()
            try:
                if not self._host.is_stalled(self):
                    await self.ws.send(text)
                    self.record.frames_sent += 1
            except ConnectionClosed:
                return
            finally:
                self._outbox.task_done()

    async def _work(self) -> None:
        while True:
            request = await self._ops.get()
            if self._host.ack_delay > 0:
                await asyncio.sleep(self._host.ack_delay)
            if not self._host.is_stalled(self):
                await self._host.on_op(self, request)

    async def _watch_idle(self, limit: float) -> None:
        # Exact deadline rather than Bybit's ~30 s sweep (§1.3), so tests can use sub-second timeouts.
        while True:
            remaining = self.last_activity + limit - time.monotonic()
            if remaining <= 0:
                self.abort("idle")
                return
            await asyncio.sleep(remaining)
