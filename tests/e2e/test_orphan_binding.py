"""A cancel that lands while no worker runs: the next worker must not keep feeding the cancelled queue.

Found by the 30-minute chaos run (seed 4328): 375 ticker events reached a service after its cancel was
acknowledged plus the 25 s grace. A worker unbinds only what it bound itself (`Convergence.bound`, in memory), so a
binding made by a worker that then stopped, for a subscription cancelled before any worker applied the cancel, is
unbound by nobody; while another service keeps the topic, events keep flowing into the cancelled queue.
The cancelled row is now a tombstone that the topic's owner unbinds and settles (`stream_worker/state/tombstones.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import asyncpg
import httpx

from shared.enums import ChannelType, Endpoint
from shared.routing import service_queue
from stream_worker.metrics import PREFIX
from tests.e2e.conftest import consuming, delete_queues
from tests.e2e.test_late_joiner import subscribe
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"
TOPIC = "tickers.BTCUSDT"
FAST_LEASES = {"lease_ttl": 2.0, "lease_renew_interval": 0.3}


async def settled(database_url: str, subscription_id: str) -> bool:
    """Whether the tombstone of a cancelled subscription needs nothing more (its binding was dealt with)."""
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        query = "SELECT tombstone_settled_at IS NOT NULL FROM subscriptions WHERE id = $1"
        return bool(await connection.fetchval(query, uuid.UUID(subscription_id)))
    finally:
        await connection.close()


async def purge(rabbitmq_url: str, queue: str) -> None:
    """Drop what reached a queue before its binding went: only what arrives after counts."""
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        await (await channel.get_queue(queue, ensure=True)).purge()


async def streamed_into(worker: Any, rabbitmq_url: str, queue: str) -> None:
    """The worker streams the topic and `queue` is bound to it: events arrive there."""
    await wait_until(lambda: TOPIC in worker.connections[Endpoint.LINEAR].protocol.subscribed, what="subscribed")
    async with consuming(rabbitmq_url, queue) as inbox:
        await wait_until(lambda: inbox.envelopes, what=f"{queue} is bound and fed")


async def only_the_staying_service_is_fed(rabbitmq_url: str, staying_queue: str, left_queue: str) -> None:
    """From now on the staying service's queue gets the topic and the cancelled one gets nothing new."""
    await purge(rabbitmq_url, left_queue)
    async with consuming(rabbitmq_url, staying_queue) as staying, consuming(rabbitmq_url, left_queue) as left:
        await wait_until(lambda: len(staying.envelopes) >= 20, timeout=20, what="the staying service is fed")
        assert left.envelopes == []  # nothing new for the cancelled subscription


async def test_a_subscription_cancelled_while_no_worker_runs_receives_nothing_from_the_next_worker(
    api: httpx.AsyncClient, start_worker: Callable[..., Any], rabbitmq_url: str, database_url: str
) -> None:
    stays, leaves = (f"svc-{uuid.uuid4().hex[:8]}" for _ in range(2))
    await subscribe(api, stays, channel_type="ticker", symbol="BTCUSDT")
    gone = await subscribe(api, leaves, channel_type="ticker", symbol="BTCUSDT")
    queues = [service_queue(s, ChannelType.TICKER) for s in (stays, leaves)]
    async with start_worker() as first:
        await streamed_into(first, rabbitmq_url, queues[1])
    assert (await api.delete(f"{URL}/{gone['id']}")).status_code == 200  # no worker runs now
    async with start_worker() as second:
        await wait_until(lambda: TOPIC in second.connections[Endpoint.LINEAR].protocol.subscribed, what="again")
        await wait_until(lambda: settled(database_url, gone["id"]), timeout=15, interval=0.2, what="settled")
        assert second.convergence.tombstones_unbound == 1
        assert second.metrics.get_sample_value(f"{PREFIX}_tombstones_unbound_total") == 1
        await only_the_staying_service_is_fed(rabbitmq_url, *queues)
    await delete_queues(rabbitmq_url, *queues)


async def test_a_service_that_cancels_and_subscribes_again_while_no_worker_runs_stays_bound(
    api: httpx.AsyncClient, start_worker: Callable[..., Any], rabbitmq_url: str, database_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    first = await subscribe(api, svc, channel_type="ticker", symbol="BTCUSDT")
    queue = service_queue(svc, ChannelType.TICKER)
    async with start_worker() as worker:
        await streamed_into(worker, rabbitmq_url, queue)
    assert (await api.delete(f"{URL}/{first['id']}")).status_code == 200
    again = await subscribe(api, svc, channel_type="ticker", symbol="BTCUSDT")
    assert again["id"] != first["id"]
    async with start_worker() as second:
        # The tombstone is superseded by the new subscription: settled, and the binding left alone.
        await wait_until(lambda: settled(database_url, first["id"]), timeout=15, interval=0.2, what="settled")
        assert second.convergence.tombstones_unbound == 0
        async with consuming(rabbitmq_url, queue) as inbox:
            await wait_until(lambda: len(inbox.envelopes) >= 20, timeout=20, what="the service is still fed")
    await delete_queues(rabbitmq_url, queue)


async def test_the_new_owner_unbinds_a_cancel_made_while_its_topic_changed_hands(
    api: httpx.AsyncClient, start_worker: Callable[..., Any], rabbitmq_url: str, database_url: str
) -> None:
    # The topic's server stops; the cancel lands; two workers start together and the topic settles on one of
    # them. Whichever owns it unbinds the tombstone; the other leaves it (an unbind from each is harmless too).
    stays, leaves = (f"svc-{uuid.uuid4().hex[:8]}" for _ in range(2))
    await subscribe(api, stays, channel_type="ticker", symbol="BTCUSDT")
    gone = await subscribe(api, leaves, channel_type="ticker", symbol="BTCUSDT")
    queues = [service_queue(s, ChannelType.TICKER) for s in (stays, leaves)]
    async with start_worker(worker_id="alpha", **FAST_LEASES) as alpha:
        await streamed_into(alpha, rabbitmq_url, queues[1])
    assert (await api.delete(f"{URL}/{gone['id']}")).status_code == 200
    async with (
        start_worker(worker_id="beta", **FAST_LEASES) as beta,
        start_worker(worker_id="gamma", **FAST_LEASES) as gamma,
    ):
        members = (beta, gamma)

        def one_owner_streams_it() -> bool:
            holding = [m for m in members if TOPIC in m.connections[Endpoint.LINEAR].protocol.subscribed]
            return all(m.cluster.assignment.members == {"beta", "gamma"} for m in members) and len(holding) == 1

        await wait_until(one_owner_streams_it, timeout=20, what="the topic on one of the two")
        await wait_until(lambda: settled(database_url, gone["id"]), timeout=15, interval=0.2, what="settled")
        assert sum(m.convergence.tombstones_unbound for m in members) >= 1
        await only_the_staying_service_is_fed(rabbitmq_url, *queues)
    await delete_queues(rabbitmq_url, *queues)


async def test_a_cancel_of_a_topics_last_subscriber_while_no_worker_runs_is_unbound_before_anyone_wants_it_again(
    api: httpx.AsyncClient, start_worker: Callable[..., Any], rabbitmq_url: str, database_url: str
) -> None:
    # Nobody wants the topic any more, so nobody streams it; its rendezvous owner still unbinds the tombstone, or
    # the next service to subscribe the topic would feed the cancelled queue again.
    leaves, later = (f"svc-{uuid.uuid4().hex[:8]}" for _ in range(2))
    gone = await subscribe(api, leaves, channel_type="ticker", symbol="BTCUSDT")
    queues = [service_queue(s, ChannelType.TICKER) for s in (later, leaves)]
    async with start_worker() as first:
        await streamed_into(first, rabbitmq_url, queues[1])
    assert (await api.delete(f"{URL}/{gone['id']}")).status_code == 200
    async with start_worker() as second:
        await wait_until(lambda: settled(database_url, gone["id"]), timeout=15, interval=0.2, what="settled")
        assert second.convergence.tombstones_unbound == 1
        await purge(rabbitmq_url, queues[1])
        await subscribe(api, later, channel_type="ticker", symbol="BTCUSDT")
        async with consuming(rabbitmq_url, queues[0]) as fed, consuming(rabbitmq_url, queues[1]) as left:
            await wait_until(lambda: len(fed.envelopes) >= 20, timeout=20, what="the new subscriber is fed")
            assert left.envelopes == []
    await delete_queues(rabbitmq_url, *queues)
