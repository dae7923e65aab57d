"""The fast path's contract with aiormq's internals, checked on a real aiormq.Channel without a broker.

`ChannelWriter` writes into attributes aiormq does not document (`write_queue`, `delivery_tag`,
`confirmations`, `ChannelFrame`). If an aiormq upgrade changes any of them, these tests fail here, loudly,
instead of the worker numbering confirms wrongly and re-publishing for ever. Broker frames are fed through
the channel's own frame queue, so aiormq's reader does the confirm dispatch exactly as in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiormq
import pytest
from aiormq.abc import ChannelFrame
from aiormq.exceptions import DeliveryError
from pamqp import commands as spec

from stream_worker.broker.amqp_frames import PublishFrames
from stream_worker.broker.channel_writer import ChannelWriter, fast_path_problem

FRAME_MAX = 131_072
EXCHANGE, CONTENT_TYPE = "ws-gateway.events", "application/json"


@pytest.fixture
async def channel() -> AsyncIterator[aiormq.Channel]:
    """An aiormq channel on a connection that never connected: what `connect()` would have negotiated is set."""
    connection = aiormq.Connection("amqp://guest:guest@127.0.0.1:1/")
    connection.connection_tune = spec.Connection.Tune(frame_max=FRAME_MAX)
    connection.server_properties = {"capabilities": {"publisher_confirms": True}}
    opened = aiormq.Channel(connection, 1, publisher_confirms=True)
    try:
        yield opened
    finally:
        await opened.close()


def add(writer: ChannelWriter, n: int) -> None:
    writer.add(f"order.k{n}", b"{}", message_id=f"m-{n}", trace_id="t", timestamp=1, delivery_mode=2)


def broker_says(channel: aiormq.Channel, frame: spec.Basic.Ack | spec.Basic.Nack) -> None:
    channel.frames.put_nowait((0, frame))  # how aiormq's connection reader hands a channel its frames


async def test_the_installed_aiormq_has_the_internals_the_fast_path_writes(channel: aiormq.Channel) -> None:
    assert fast_path_problem(channel) is None


async def test_a_batch_is_one_frame_on_the_connection_writer_with_the_exact_publish_bytes(
    channel: aiormq.Channel,
) -> None:
    writer = ChannelWriter(channel, EXCHANGE, CONTENT_TYPE)
    for n in range(3):
        add(writer, n)
    confirmations = await writer.flush_confirmed()

    assert channel.write_queue.qsize() == 1
    frame = channel.write_queue.get_nowait()
    assert isinstance(frame, ChannelFrame)
    frames = PublishFrames(1, EXCHANGE, CONTENT_TYPE, FRAME_MAX)
    expected = b"".join(
        frames.encode(f"order.k{n}", b"{}", message_id=f"m-{n}", trace_id="t", timestamp=1, delivery_mode=2)
        for n in range(3)
    )
    assert frame.payload == expected
    assert channel.delivery_tag == 3
    assert [channel.confirmations[tag] for tag in (1, 2, 3)] == confirmations


async def test_aiormq_resolves_confirms_registered_by_the_fast_path_single_multiple_and_nack(
    channel: aiormq.Channel,
) -> None:
    writer = ChannelWriter(channel, EXCHANGE, CONTENT_TYPE)
    for n in range(4):
        add(writer, n)
    first, second, third, fourth = await writer.flush_confirmed()

    broker_says(channel, spec.Basic.Ack(delivery_tag=1))
    broker_says(channel, spec.Basic.Ack(delivery_tag=3, multiple=True))
    broker_says(channel, spec.Basic.Nack(delivery_tag=4))
    async with asyncio.timeout(2):
        await asyncio.wait([first, second, third, fourth])

    assert all(isinstance(done.result(), spec.Basic.Ack) for done in (first, second, third))
    assert isinstance(fourth.exception(), DeliveryError)
    assert channel.confirmations == {}  # aiormq forgot every tag it resolved


async def test_closing_the_channel_rejects_the_unconfirmed(channel: aiormq.Channel) -> None:
    writer = ChannelWriter(channel, EXCHANGE, CONTENT_TYPE)
    add(writer, 0)
    (confirmation,) = await writer.flush_confirmed()
    await channel.close()
    async with asyncio.timeout(2):
        await asyncio.wait([confirmation])
    assert confirmation.cancelled() or confirmation.exception() is not None


async def test_a_write_cancelled_before_it_reached_the_writer_gives_its_delivery_tags_back(
    channel: aiormq.Channel,
) -> None:
    while not channel.write_queue.full():  # the connection writer is backed up: the next put waits
        channel.write_queue.put_nowait(ChannelFrame(payload=b"", should_close=False))
    writer = ChannelWriter(channel, EXCHANGE, CONTENT_TYPE)
    add(writer, 0)
    add(writer, 1)
    flushing = asyncio.ensure_future(writer.flush_confirmed())
    await asyncio.sleep(0)
    assert channel.delivery_tag == 2
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    assert channel.delivery_tag == 0
    assert channel.confirmations == {}


async def test_a_channel_whose_internals_changed_shape_is_refused(channel: aiormq.Channel) -> None:
    confirmations = channel.confirmations
    del channel.confirmations  # as if aiormq renamed it
    try:
        assert fast_path_problem(channel) == "aiormq.Channel.confirmations is NoneType, expected <class 'dict'>"
    finally:
        channel.confirmations = confirmations
    channel.delivery_tag = "1"  # type: ignore[assignment]
    assert "delivery_tag" in (fast_path_problem(channel) or "")
    channel.delivery_tag = 0
    assert "not an aiormq.Channel" in (fast_path_problem(object()) or "")


async def test_a_checkpoint_leaves_the_channel_free_for_writes_until_the_broker_answers(
    channel: aiormq.Channel,
) -> None:
    writer = ChannelWriter(channel, EXCHANGE, CONTENT_TYPE)
    checkpoint = asyncio.ensure_future(writer.checkpoint(timeout=5))
    method = await asyncio.wait_for(channel.write_queue.get(), 5)  # written at once, behind earlier writes
    expected = ChannelFrame.marshall(channel_number=1, frames=[spec.Basic.Qos(prefetch_count=0)])
    assert method.payload == expected.payload
    add(writer, 0)
    await writer.flush(drain=False)  # the lock is not held while the reply is awaited: the pump keeps writing
    assert channel.write_queue.qsize() == 1
    assert not checkpoint.done()
    channel.frames.put_nowait((0, spec.Basic.QosOk()))
    await asyncio.wait_for(checkpoint, 5)
