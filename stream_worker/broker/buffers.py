"""The publisher's two hand-off buffers: what waits between the Bybit readers and RabbitMQ.

Market data is replaceable by the next push, so its buffer never blocks the reader: a bounded deque whose
full state drops the oldest event and counts it (`dropped`). Account data must never be lost, so its buffer
is a bounded queue whose `put` waits while it is full: the private socket's reader stops reading, and Bybit's
own buffering (and, past it, the account re-sync) takes over.
"""

from __future__ import annotations

import asyncio
from collections import deque

from stream_worker.envelopes.outgoing import Outgoing


class MarketBuffer:
    """Drop-oldest buffer of market events; `offer` never blocks. `in_hand` counts events taken for a write
    that is not yet known to have reached the socket (lost, and counted, if the connection fails first)."""

    def __init__(self, capacity: int) -> None:
        self.events: deque[Outgoing] = deque(maxlen=capacity)
        self.wake = asyncio.Event()
        self.dropped = 0  # pushed out of a full buffer by a newer event
        self.in_hand = 0

    def offer(self, item: Outgoing) -> None:
        events = self.events
        if len(events) == events.maxlen:
            self.dropped += 1  # the append below pushes the oldest out
        events.append(item)
        self.wake.set()

    def __len__(self) -> int:
        return len(self.events)

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing in hand."""
        return not (self.events or self.in_hand)


class AccountBuffer:
    """Bounded FIFO of account events; `put` waits for room (back-pressure on the private socket's reader)."""

    def __init__(self, capacity: int) -> None:
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue(maxsize=capacity)

    async def put(self, item: Outgoing) -> None:
        await self._queue.put(item)

    def get_nowait(self) -> Outgoing | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def __len__(self) -> int:
        return self._queue.qsize()
