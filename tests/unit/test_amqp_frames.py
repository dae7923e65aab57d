"""Our basic.publish encoder writes exactly the bytes pamqp (and so aiormq) would for the same publish."""

from __future__ import annotations

from datetime import UTC, datetime

import pamqp.frame
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from stream_worker.broker.amqp_frames import FrameError, PublishFrames

EXCHANGE = "ws-gateway.events"
CONTENT_TYPE = "application/json"
FRAME_MAX = 131_072
BODY_PER_FRAME = FRAME_MAX - 8


def pamqp_publish(
    channel: int,
    routing_key: str,
    body: bytes,
    *,
    message_id: str,
    trace_id: str,
    timestamp: int,
    delivery_mode: int,
    frame_max: int = FRAME_MAX,
) -> bytes:
    """What aiormq's `basic_publish` puts on the wire for these arguments."""
    properties = Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=delivery_mode,
        message_id=message_id,
        headers={"trace_id": trace_id},
        timestamp=datetime.fromtimestamp(timestamp, tz=UTC),
    )
    frames: list[object] = [
        Basic.Publish(exchange=EXCHANGE, routing_key=routing_key),
        ContentHeader(properties=properties, body_size=len(body)),
    ]
    limit = frame_max - 8
    frames += [ContentBody(body[start : start + limit]) for start in range(0, len(body), limit)]
    return b"".join(pamqp.frame.marshal(frame, channel) for frame in frames)  # type: ignore[arg-type]


short_text = st.text(min_size=0, max_size=60)


@given(
    channel=st.integers(1, 2047),
    routing_key=st.text(min_size=1, max_size=80),
    body=st.binary(min_size=1, max_size=600),
    message_id=st.text(min_size=1, max_size=80),
    trace_id=short_text,
    timestamp=st.integers(0, 253_402_300_799),  # up to the last second datetime can hold
    delivery_mode=st.sampled_from([1, 2]),
)
def test_publish_bytes_equal_pamqp(
    channel: int, routing_key: str, body: bytes, message_id: str, trace_id: str, timestamp: int, delivery_mode: int
) -> None:
    ours = PublishFrames(channel, EXCHANGE, CONTENT_TYPE, FRAME_MAX).encode(
        routing_key, body, message_id=message_id, trace_id=trace_id, timestamp=timestamp, delivery_mode=delivery_mode
    )
    expected = pamqp_publish(
        channel,
        routing_key,
        body,
        message_id=message_id,
        trace_id=trace_id,
        timestamp=timestamp,
        delivery_mode=delivery_mode,
    )
    assert ours == expected


@pytest.mark.parametrize("size", [0, 1, 4087, 4088, 4089, 8176, 10_000])
def test_large_body_splits_into_frames_like_aiormq(size: int) -> None:
    frame_max = 4096  # 4,088 body bytes per frame
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    arguments = {"message_id": "m-1", "trace_id": "t-1", "timestamp": 1_700_000_000, "delivery_mode": 2}
    ours = PublishFrames(3, EXCHANGE, CONTENT_TYPE, frame_max).encode("order.linear", body, **arguments)  # type: ignore[arg-type]
    assert ours == pamqp_publish(3, "order.linear", body, frame_max=frame_max, **arguments)  # type: ignore[arg-type]


def test_cached_method_frames_and_trace_tables_never_leak_into_the_next_publish() -> None:
    frames = PublishFrames(1, EXCHANGE, CONTENT_TYPE, FRAME_MAX)
    sequence = [
        ("trades.linear.BTCUSDT", "trace-a"),
        ("trades.linear.BTCUSDT", "trace-a"),
        ("trades.linear.ETHUSDT", "trace-a"),
        ("trades.linear.ETHUSDT", "trace-é-longer"),
        ("trades.linear.BTCUSDT", "trace-a"),
    ]
    for n, (key, trace_id) in enumerate(sequence):
        arguments = {"message_id": f"id-{n}", "trace_id": trace_id, "timestamp": n, "delivery_mode": 1 + n % 2}
        ours = frames.encode(key, b'{"n":%d}' % n, **arguments)  # type: ignore[arg-type]
        assert ours == pamqp_publish(1, key, b'{"n":%d}' % n, **arguments)  # type: ignore[arg-type]


def test_message_id_longer_than_a_short_string_is_refused() -> None:
    frames = PublishFrames(1, EXCHANGE, CONTENT_TYPE, FRAME_MAX)
    with pytest.raises(FrameError, match="message_id"):
        frames.encode("k", b"{}", message_id="x" * 256, trace_id="t", timestamp=1, delivery_mode=1)
