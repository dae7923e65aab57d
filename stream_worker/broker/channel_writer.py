"""The fast path: batches of pre-encoded publishes written on one aiormq channel as a single frame.

Per message, aiormq's `basic_publish` marshals three frames with pamqp (~11 µs, profiled), takes a lock,
enters two timeouts, hands a frame to the writer task and costs one socket write. Here a whole batch is
encoded by `PublishFrames` and handed to aiormq's connection writer as one `ChannelFrame`, under the channel's
lock, so the socket sees one write per batch. Publisher confirms still go through aiormq: each publish gets
the channel's next delivery tag and a future in `channel.confirmations`, exactly as `basic_publish` registers
them, and aiormq's reader resolves them on the broker's ack or nack (also `multiple` acks) or rejects them when
the channel closes.

This leans on aiormq attributes outside its documented API (`write_queue`, `delivery_tag`, `confirmations`,
`connection.connection_tune`, `ChannelFrame`), as of aiormq 7.2. An upgrade that changed them would misnumber
confirms and turn into silent re-publish loops, so `fast_path_problem` checks their shape before use and
`probe` checks that aiormq still resolves a confirm registered this way; when either fails the publisher
falls back to aiormq's public `basic_publish` (`public_writer.py`). tests/unit/test_channel_writer.py drives
a real aiormq channel without a broker and fails when any of this changes. One writer per channel and nothing
else publishing on it: delivery tags are counted here in the order the bytes are written.
"""

from __future__ import annotations

import asyncio
import dataclasses
from importlib.metadata import version

import aiormq
from aiormq.abc import ChannelFrame
from aiormq.exceptions import InvalidFrameError
from pamqp.commands import Basic

from shared.routing import DIRECT_EXCHANGE
from stream_worker.broker.amqp_frames import PublishFrames
from stream_worker.broker.confirms import Confirmation

TESTED_AIORMQ = "7.2."  # the release line whose internals this module was written and tested against
PROBE_EXCHANGE = ""  # the default exchange: a publish with an empty routing key reaches no queue


class ChannelWriter:
    """Collects encoded publishes (`add`) and writes them as one frame (`flush`, `flush_confirmed`)."""

    path = "fast"

    def __init__(self, channel: aiormq.Channel, exchange: str, content_type: str) -> None:
        self._channel = channel
        frame_max = channel.connection.connection_tune.frame_max or 131_072  # 0 means "no limit" in AMQP
        self.frames = PublishFrames(channel.number, exchange, content_type, frame_max)
        self.direct_frames = PublishFrames(channel.number, DIRECT_EXCHANGE, content_type, frame_max)
        self._pending: list[bytes] = []

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
        """Encode one publish for the next flush; raises FrameError (nothing added) if AMQP cannot carry it."""
        self._pending.append(
            (self.direct_frames if direct else self.frames).encode(
                routing_key,
                body,
                message_id=message_id,
                trace_id=trace_id,
                timestamp=timestamp,
                delivery_mode=delivery_mode,
            )
        )

    def __len__(self) -> int:
        return len(self._pending)

    async def flush(self, *, drain: bool) -> None:
        """Write what was added (no confirms); with `drain`, wait until the socket took it."""
        payload = b"".join(self._pending)
        self._pending.clear()
        channel = self._channel
        drained = channel.create_future() if drain else None
        async with channel.lock:  # raises ChannelInvalidStateError on a closed channel
            await channel.write_queue.put(ChannelFrame(payload=payload, should_close=False, drain_future=drained))
        if drained is not None:
            await drained

    async def flush_confirmed(self) -> list[Confirmation]:
        """Write what was added on a confirm channel; one future per publish, in order, each ending with the
        broker's verdict (rejected by aiormq if the channel closes)."""
        pending, self._pending = self._pending, []
        channel = self._channel
        if not channel.publisher_confirms:
            raise ValueError("the channel was opened without publisher confirms")
        async with channel.lock:
            first = channel.delivery_tag + 1
            confirmations: list[Confirmation] = [channel.create_future() for _ in pending]
            registry = channel.confirmations
            for tag, confirmation in enumerate(confirmations, first):
                registry[tag] = confirmation
            channel.delivery_tag += len(pending)
            try:
                await channel.write_queue.put(ChannelFrame(payload=b"".join(pending), should_close=False))
            except BaseException:
                # The broker never saw these: give their tags back, as basic_publish does.
                channel.delivery_tag -= len(pending)
                for tag in range(first, first + len(pending)):
                    registry.pop(tag, None)
                for confirmation in confirmations:
                    confirmation.cancel()
                raise
        return confirmations

    async def checkpoint(self, timeout: float) -> None:
        """Return once RabbitMQ has handled every publish written on this channel before the call: a no-op
        `basic.qos` (prefetch 0 is the default; nothing consumes here) written behind them, and its reply.

        Unlike aiormq's `rpc`, the channel's lock is held only to write the method, not until the reply, so the
        pump keeps writing meanwhile. The reply is read from aiormq's `rpc_frames` directly: nothing else makes
        calls on this channel. A timeout ends the session (a late reply would otherwise answer the next call)."""
        channel = self._channel
        method = ChannelFrame.marshall(channel_number=channel.number, frames=[Basic.Qos(prefetch_count=0)])
        async with channel.lock:
            await channel.write_queue.put(method)
        async with asyncio.timeout(timeout):
            reply = await channel.rpc_frames.get()
        channel.rpc_frames.task_done()
        if not isinstance(reply, Basic.QosOk):
            raise InvalidFrameError(reply)

    async def probe(self, timeout: float) -> str | None:
        """Publish one unroutable message on this confirm channel the fast way and wait for aiormq to resolve
        its confirm. Returns what went wrong, or None. A lost connection raises as usual (not a verdict)."""
        channel = self._channel
        frames = PublishFrames(channel.number, PROBE_EXCHANGE, "application/octet-stream", 131_072)
        self._pending.append(
            frames.encode("", b"probe", message_id="ws-gateway-probe", trace_id="", timestamp=0, delivery_mode=1)
        )
        (confirmation,) = await self.flush_confirmed()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(confirmation)
        except TimeoutError:
            if channel.is_closed:
                raise
            confirmation.cancel()
            return f"a probe publish got no confirm within {timeout} s"
        if confirmation.cancelled() or confirmation.exception() is not None:
            if channel.is_closed:
                raise aiormq.exceptions.ChannelInvalidStateError("the channel closed during the probe")
            return "the probe publish was not acked"
        if channel.confirmations.get(channel.delivery_tag) is confirmation:
            return "aiormq resolved the probe's confirm but did not forget it"
        return None


def fast_path_problem(channel: object) -> str | None:
    """What about this aiormq channel the fast path cannot rely on, or None. Checks shape only (cheap, no I/O)."""
    installed = version("aiormq")
    if not installed.startswith(TESTED_AIORMQ):
        return f"aiormq {installed} is not the tested {TESTED_AIORMQ}x"
    if not isinstance(channel, aiormq.Channel):
        return f"the channel is a {type(channel).__name__}, not an aiormq.Channel"
    expected: dict[str, type | tuple[type, ...]] = {
        "delivery_tag": int,
        "confirmations": dict,
        "write_queue": asyncio.Queue,
        "rpc_frames": asyncio.Queue,
        "publisher_confirms": bool,
        "number": int,
    }
    for name, kind in expected.items():
        value = getattr(channel, name, None)
        if not isinstance(value, kind):
            return f"aiormq.Channel.{name} is {type(value).__name__}, expected {kind}"
    if channel.write_queue is not getattr(channel.connection, "write_queue", None):
        return "aiormq.Channel.write_queue is not its connection's writer queue"
    tune = getattr(channel.connection, "connection_tune", None)
    if not isinstance(getattr(tune, "frame_max", None), int):
        return "aiormq's connection has no connection_tune.frame_max"
    if not callable(getattr(channel, "create_future", None)) or not hasattr(type(channel).lock, "__get__"):
        return "aiormq.Channel has no create_future or lock"
    is_dataclass = dataclasses.is_dataclass(ChannelFrame)
    fields = {field.name for field in dataclasses.fields(ChannelFrame)} if is_dataclass else set()
    if not {"payload", "should_close", "drain_future"} <= fields:
        return f"aiormq.abc.ChannelFrame has fields {sorted(fields)}"
    return None
