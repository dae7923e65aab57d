"""The last step before the wire: stamp an event with its publish time and add it to a writer's batch.

An envelope msgspec cannot encode, or whose ids AMQP cannot carry, is dropped and counted (`unencodable`),
because no retry would ever make it publishable; the first one is logged, the counter keeps the total.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgspec
from loguru import logger

from shared.events import EventEnvelope
from stream_worker.broker.confirms import Confirmation
from stream_worker.envelopes.outgoing import Outgoing

TRANSIENT, PERSISTENT = 1, 2


class Writer(Protocol):
    """What the pumps publish through: `ChannelWriter` (fast path) or `PublicWriter` (aiormq's public API).

    `direct`: `routing_key` is a queue's name, published through the default exchange (one queue's snapshot)."""

    path: str

    def add(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        trace_id: str,
        timestamp: int,
        delivery_mode: int,
        direct: bool = False,
    ) -> None: ...

    def __len__(self) -> int: ...

    async def flush(self, *, drain: bool) -> None: ...

    async def flush_confirmed(self) -> list[Confirmation]: ...

    async def checkpoint(self, timeout: float) -> None:
        """Return once RabbitMQ has handled every publish written on this channel before the call."""
        ...


class Stamper:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._encoder = msgspec.json.Encoder()
        self.unencodable = 0
        # Called with each stamped envelope as it is handed to RabbitMQ (the worker's metrics tally); keep cheap.
        self.on_handed_over: Callable[[EventEnvelope], None] | None = None

    def add(self, item: Outgoing, delivery_mode: int, writer: Writer) -> bool:
        """Stamp `item` and add it to `writer`'s batch; False if it was dropped as unencodable."""
        now = self._clock()
        envelope = msgspec.structs.replace(item.envelope, published_ts=int(now * 1000))
        try:
            writer.add(
                item.routing_key,
                self._encoder.encode(envelope),
                message_id=envelope.event_id,
                trace_id=envelope.trace_id,
                timestamp=int(now),  # AMQP timestamps are whole seconds
                delivery_mode=delivery_mode,
                direct=item.direct,
            )
        except (msgspec.EncodeError, TypeError, ValueError) as error:  # FrameError is a ValueError
            self.unencodable += 1
            if self.unencodable == 1:
                logger.bind(event_id=envelope.event_id, error=str(error)).error("cannot encode an event: dropped")
            return False
        if self.on_handed_over is not None:
            self.on_handed_over(envelope)
        return True
