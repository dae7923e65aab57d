"""Batches of pre-encoded publishes written on one aiormq channel as a single frame, bypassing `basic_publish`.

Per message, aiormq's `basic_publish` marshals three frames with pamqp (~11 µs, profiled), takes a lock,
enters two timeouts, hands a frame to the writer task and costs one socket write: a loop of nothing but
`basic_publish` tops out at ~15-25k msgs/s on our 2-core boxes, and that, not RabbitMQ, capped us. Here a
whole batch is encoded by `PublishFrames` and handed to aiormq's connection writer as one `ChannelFrame`, so
the socket sees one write per batch. Publisher confirms still go through aiormq: each message reserves the
channel's next delivery tag and registers a future in `channel.confirmations`, exactly as `basic_publish`
does, and aiormq's reader resolves it on the broker's ack or nack (also `multiple` acks) or rejects it when the
channel closes.

This leans on aiormq attributes that are not in its documented API (`write_queue`, `delivery_tag`,
`confirmations`, `connection.connection_tune`), as of aiormq 7.2 (pinned by uv.lock); the publisher's
integration tests run it against a real RabbitMQ. One writer per channel and nothing else publishing on that
channel: delivery tags are counted here in the order the bytes are written.
"""

from __future__ import annotations

import asyncio

import aiormq
from aiormq.abc import ChannelFrame, ConfirmationFrameType
from aiormq.exceptions import ChannelInvalidStateError

from shared.routing import DIRECT_EXCHANGE
from stream_worker.broker.amqp_frames import PublishFrames

Confirmation = asyncio.Future[ConfirmationFrameType]


class ChannelWriter:
    def __init__(self, channel: aiormq.Channel, exchange: str, content_type: str) -> None:
        self._channel = channel
        frame_max = channel.connection.connection_tune.frame_max or 131_072  # 0 means "no limit" in AMQP
        self.frames = PublishFrames(channel.number, exchange, content_type, frame_max)
        self.direct_frames = PublishFrames(channel.number, DIRECT_EXCHANGE, content_type, frame_max)

    def expect_confirm(self) -> Confirmation:
        """Reserve the delivery tag of the next publish written; the future ends with the broker's verdict.

        Call it once per publish, in the order the publishes are then written, and only for bytes that will
        be written: a reserved tag that never reaches the broker shifts every later confirm by one.
        """
        channel = self._channel
        if not channel.publisher_confirms:
            raise ValueError("the channel was opened without publisher confirms")
        channel.delivery_tag += 1
        confirmation: Confirmation = channel.create_future()  # rejected by aiormq if the channel closes
        channel.confirmations[channel.delivery_tag] = confirmation
        return confirmation

    async def write(self, payload: bytes, *, drain: bool) -> None:
        """Queue encoded publishes on aiormq's connection writer; with `drain`, wait until the socket took them."""
        channel = self._channel
        if channel.is_closed:
            raise ChannelInvalidStateError(f"channel {channel.number} is closed")
        drained = channel.create_future() if drain else None
        await channel.write_queue.put(ChannelFrame(payload=payload, should_close=False, drain_future=drained))
        if drained is not None:
            await drained
