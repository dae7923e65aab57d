"""The public path: the same writer interface as `ChannelWriter`, through aiormq's documented `basic_publish`.

Used when aiormq's internals do not look or behave as the fast path expects (or when forced by
`WS_GATEWAY_PUBLISH_PATH=public`). It is slower per message (pamqp marshalling, a lock and a frame per publish)
but relies on nothing undocumented. Confirms are pipelined: on the confirm channel every publish runs in its
own task, created in order; aiormq's channel lock is FIFO, so tags and bytes keep that order, and each task ends
with the broker's ack (or raises DeliveryError on a nack). The confirm window owns those tasks (it cancels and
awaits them when the connection goes).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aiormq
from pamqp.commands import Basic

from shared.routing import DIRECT_EXCHANGE
from stream_worker.broker.amqp_frames import FrameError
from stream_worker.broker.confirms import Confirmation

# What the fast path refuses synchronously, refused here too: inside a task the same error would look like a
# broken link and be retried for ever.
_SHORT_STRING = 255


class PublicWriter:
    path = "public"

    def __init__(self, channel: aiormq.Channel, exchange: str, content_type: str) -> None:
        self._channel = channel
        self._exchange = exchange
        self._content_type = content_type
        self._pending: list[tuple[str, str, bytes, Basic.Properties]] = []

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
    ) -> None:
        for value, what in ((message_id, "message_id"), (routing_key, "the routing key")):
            if len(value.encode()) > _SHORT_STRING:
                raise FrameError(f"{what} is over {_SHORT_STRING} bytes, too long for an AMQP short string")
        properties = Basic.Properties(
            content_type=self._content_type,
            headers={"trace_id": trace_id},
            delivery_mode=delivery_mode,
            message_id=message_id,
            timestamp=datetime.fromtimestamp(timestamp, tz=UTC),
        )
        self._pending.append((DIRECT_EXCHANGE if direct else self._exchange, routing_key, body, properties))

    def __len__(self) -> int:
        return len(self._pending)

    async def flush(self, *, drain: bool) -> None:
        pending, self._pending = self._pending, []
        channel, last = self._channel, len(pending) - 1
        for n, (exchange, routing_key, body, properties) in enumerate(pending):
            await channel.basic_publish(
                body, exchange=exchange, routing_key=routing_key, properties=properties, wait=drain and n == last
            )

    async def flush_confirmed(self) -> list[Confirmation]:
        pending, self._pending = self._pending, []
        publish = self._channel.basic_publish
        return [
            asyncio.ensure_future(publish(body, exchange=exchange, routing_key=key, properties=properties, wait=False))
            for exchange, key, body, properties in pending
        ]

    async def checkpoint(self, timeout: float) -> None:
        # basic.qos is a synchronous no-op here (prefetch 0 is the default, nothing consumes on this channel);
        # aiormq holds the channel's lock until the reply, so publishes wait for one round trip.
        await self._channel.basic_qos(prefetch_count=0, timeout=timeout)
