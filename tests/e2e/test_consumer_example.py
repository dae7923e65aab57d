"""docs/consumer_example.py against the real gateway: it keeps a book whose checksum matches the gateway's,
drops duplicates, resets its book on book_invalid and notices a checksum that does not match its book."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import httpx
import msgspec

from docs.consumer_example import EventProcessor, Outcome, SnapshotClient, consume
from shared.enums import ChannelType
from shared.events import ENVELOPE_DECODER
from shared.routing import service_queue
from tests.e2e.conftest import Inbox, consuming, delete_queues
from tests.fake_bybit import FakeBybit
from tests.support.waiting import wait_until

TOPIC = "orderbook.50.BTCUSDT"
BOOK = ("orderbook", "linear", TOPIC)


async def subscribe_book(api: httpx.AsyncClient, svc: str) -> None:
    body = {"requesting_service": svc, "channel_type": "orderbook", "symbol": "BTCUSDT", "depth": 50}
    response = await api.post("/api/v1/subscriptions", json=body)
    assert response.status_code == 201, response.text


async def queue_exists(url: str, name: str) -> bool:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return False
        return True


def bodies_of(inbox: Inbox) -> list[bytes]:
    return [message.body for message in inbox.messages]


def event_type(body: bytes) -> str:
    return ENVELOPE_DECODER.decode(body).event_type


async def test_consumer_example_keeps_the_gateways_book_and_resets_it_on_book_invalid(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc_example, svc_raw = f"svc-{uuid.uuid4().hex[:8]}", f"svc-{uuid.uuid4().hex[:8]}"
    queue_example, queue_raw = (service_queue(s, ChannelType.ORDERBOOK) for s in (svc_example, svc_raw))
    await subscribe_book(api, svc_example)
    await subscribe_book(api, svc_raw)
    processor, stop = EventProcessor(), asyncio.Event()
    async with start_worker(), consuming(rabbitmq_url, queue_raw) as raw:
        await wait_until(lambda: queue_exists(rabbitmq_url, queue_example), what="the example's queue")
        async with asyncio.TaskGroup() as tasks:
            consumer = tasks.create_task(consume(rabbitmq_url, queue_example, processor, stop))
            await wait_until(lambda: processor.counts[Outcome.APPLIED] >= 10, what="the example's book events")
            await fake.inject_book_fault(TOPIC, "gap", category="linear")
            await wait_until(lambda: processor.counts[Outcome.BOOK_RESET] == 1, what="book_invalid in the example")
            applied = processor.counts[Outcome.APPLIED]
            await wait_until(
                lambda: BOOK in processor.books and processor.counts[Outcome.APPLIED] >= applied + 5,
                what="the example's book back after the resubscribe",
            )
            await wait_until(lambda: "book_invalid" in map(event_type, bodies_of(raw)), what="raw book_invalid")
            stop.set()
        consumer.result()

    assert processor.counts[Outcome.CHECKSUM_MISMATCH] == 0
    assert processor.counts[Outcome.GAP] == 0
    assert processor.counts[Outcome.DUPLICATE] == 0

    bodies = bodies_of(raw)
    replay = EventProcessor()
    outcomes = [replay.process(body) for body in bodies]
    assert Outcome.CHECKSUM_MISMATCH not in outcomes
    assert Outcome.GAP not in outcomes
    reset = outcomes.index(Outcome.BOOK_RESET)
    assert outcomes[reset + 1 :].count(Outcome.APPLIED) >= 1
    book = replay.books[BOOK]
    before = (book.update_id, dict(book.bids), dict(book.asks))

    # Delivered twice (at least once): every copy after the first is dropped and the book stays as it was.
    assert [replay.process(body) for body in bodies] == [Outcome.DUPLICATE] * len(bodies)
    assert (book.update_id, book.bids, book.asks) == before
    await delete_queues(rabbitmq_url, queue_example, queue_raw)


async def test_consumer_example_detects_a_checksum_mismatch_and_drops_its_book(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    queue = service_queue(svc, ChannelType.ORDERBOOK)
    await subscribe_book(api, svc)
    async with start_worker(), consuming(rabbitmq_url, queue) as inbox:
        await wait_until(
            lambda: sum(e.payload["type"] == "delta" for e in inbox.envelopes[first_snapshot(inbox.envelopes) :]) >= 3,
            what="a snapshot and three deltas",
        )
    bodies = bodies_of(inbox)
    start = first_snapshot(inbox.envelopes)
    processor = EventProcessor()
    assert [processor.process(body) for body in bodies[start : start + 2]] == [Outcome.APPLIED] * 2

    # The next real delta, with a checksum our book cannot produce (as if we had missed or misapplied a level).
    event = msgspec.json.decode(bodies[start + 2])
    event["payload"]["checksum"] = (event["payload"]["checksum"] + 1) % 2**32
    assert processor.process(msgspec.json.encode(event)) is Outcome.CHECKSUM_MISMATCH
    assert BOOK not in processor.books
    assert processor.process(bodies[start + 3]) is Outcome.WAITING_FOR_SNAPSHOT
    await delete_queues(rabbitmq_url, queue)


def first_snapshot(envelopes: list[Any]) -> int:
    """Index of the first snapshot, or len(envelopes) when none has arrived yet."""
    return next((i for i, e in enumerate(envelopes) if e.payload.get("type") == "snapshot"), len(envelopes))


async def purge(url: str, name: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await (await channel.declare_queue(name, passive=True)).purge()


async def test_consumer_whose_queue_dropped_messages_recovers_through_the_snapshot_route(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc, other = f"svc-{uuid.uuid4().hex[:8]}", f"svc-{uuid.uuid4().hex[:8]}"
    queue, other_queue = (service_queue(s, ChannelType.ORDERBOOK) for s in (svc, other))
    await subscribe_book(api, svc)
    await subscribe_book(api, other)
    processor = EventProcessor()
    snapshots = SnapshotClient(api, svc, ChannelType.ORDERBOOK)
    async with start_worker(), consuming(rabbitmq_url, other_queue) as untouched:
        await wait_until(lambda: queue_exists(rabbitmq_url, queue), what="the queue")
        await wait_until(lambda: len(untouched.envelopes) >= 10, what="the book streaming")
        # Lost while nobody read: the snapshot and the first deltas (as x-overflow drop-head does when full).
        await purge(rabbitmq_url, queue)
        for round_ in range(2):
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as tasks:
                consumer = tasks.create_task(consume(rabbitmq_url, queue, processor, stop, snapshots))
                await wait_until(lambda n=round_ + 1: len(snapshots.requested) == n, what="a snapshot request")
                applied = processor.counts[Outcome.APPLIED]
                await wait_until(
                    lambda n=applied + 10: BOOK in processor.books and processor.counts[Outcome.APPLIED] >= n,
                    what="the book rebuilt from the snapshot, deltas applied on top",
                )
                stop.set()
            consumer.result()
            # Round two: a hole in the middle (messages dropped while this consumer was away).
            await wait_until(lambda n=10 * (round_ + 3): len(untouched.envelopes) >= n, what="more of the book")
            await purge(rabbitmq_url, queue)
    assert processor.counts[Outcome.GAP] == 1  # round two's hole, seen as a u gap
    assert processor.counts[Outcome.WAITING_FOR_SNAPSHOT] >= 1  # round one: deltas with no book
    assert processor.counts[Outcome.CHECKSUM_MISMATCH] == 0
    assert snapshots.requested == [TOPIC, TOPIC]
    assert not any(e.snapshot for e in untouched.envelopes), "the other service saw the requested snapshots"
    await delete_queues(rabbitmq_url, queue, other_queue)


async def test_snapshot_route_answers_404_for_an_unknown_and_409_for_a_cancelled_subscription(
    api: httpx.AsyncClient,
) -> None:
    assert (await api.post(f"/api/v1/subscriptions/{uuid.uuid4()}/snapshot")).status_code == 404
    body = {"requesting_service": f"svc-{uuid.uuid4().hex[:8]}", "channel_type": "trades", "symbol": "BTCUSDT"}
    row = (await api.post("/api/v1/subscriptions", json=body)).json()
    response = await api.post(f"/api/v1/subscriptions/{row['id']}/snapshot")
    assert response.status_code == 409  # pending: no worker has it live yet
    assert response.json()["error"]["code"] == "conflict"
    await api.delete(f"/api/v1/subscriptions/{row['id']}")
    assert (await api.post(f"/api/v1/subscriptions/{row['id']}/snapshot")).status_code == 409
