"""The market pump's bursts: short while the buffer keeps up, long once it is half full (overload)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared.enums import ChannelType
from shared.events import EventEnvelope
from stream_worker.broker import pumps
from stream_worker.broker.buffers import MarketBuffer
from stream_worker.broker.pumps import MarketPump
from stream_worker.broker.stamping import Stamper
from stream_worker.envelopes.outgoing import Outgoing


class RecordingWriter:
    """Keeps each flush's event ids; a flush empties the batch, as a write does."""

    path = "fast"

    def __init__(self) -> None:
        self.batch: list[str] = []
        self.flushes: list[list[str]] = []

    def add(self, routing_key: str, body: bytes, *, message_id: str, **_: Any) -> None:
        self.batch.append(message_id)

    def __len__(self) -> int:
        return len(self.batch)

    async def flush(self, *, drain: bool) -> None:
        self.flushes.append(self.batch)
        self.batch = []

    async def flush_confirmed(self) -> list[Any]:
        raise AssertionError("market data is not confirmed")

    async def checkpoint(self, timeout: float) -> None:
        return None


def event(n: int) -> Outgoing:
    envelope = EventEnvelope(
        event_id=f"e{n}",
        event_type="trades",
        category="linear",
        symbol="BTCUSDT",
        topic="publicTrade.BTCUSDT",
        exchange_ts=1,
        received_ts=1,
        published_ts=0,
        trace_id="t",
        payload={"i": str(n)},
    )
    return Outgoing(envelope, ChannelType.TRADES, "trades.linear.BTCUSDT", False)


async def test_a_backlog_of_half_the_buffer_goes_out_in_long_bursts_then_short_ones_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pumps, "MARKET_BATCH", 8)
    monkeypatch.setattr(pumps, "OVERLOAD_BATCH", 40)
    buffer = MarketBuffer(100)
    for n in range(60):  # at least half of the capacity: overload
        buffer.offer(event(n))
    writer = RecordingWriter()
    idle = asyncio.Event()  # the pump found the buffer empty: everything offered went out
    pump = MarketPump(buffer, Stamper(lambda: 1.0), timeout=5.0, on_idle=idle.set)
    running = asyncio.create_task(pump.run(writer))
    try:
        async with asyncio.timeout(5):
            await idle.wait()
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert pump.published == 60
    assert [len(flush) for flush in writer.flushes] == [40, 8, 8, 4]
    assert [i for flush in writer.flushes for i in flush] == [f"e{n}" for n in range(60)]
