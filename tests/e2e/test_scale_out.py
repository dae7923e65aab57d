"""Two stream workers share the topics: each one is subscribed once across both, one holds the private stream,
and a worker that stops hands its topics over to the other."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from shared.enums import ChannelType
from shared.routing import service_queue
from stream_worker.worker import Worker
from tests.e2e.conftest import consuming, delete_queues
from tests.fake_bybit import FakeBybit
from tests.support.cluster import exactly_once, live_subscriptions
from tests.support.fault_proxy import FaultProxy, Mode
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"
FAST_LEASES = {"lease_ttl": 2.0, "lease_renew_interval": 0.3}
MARKET = [
    {"channel_type": "trades", "category": category, "symbol": symbol}
    for category, symbols in {
        "linear": ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"),
        "spot": ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
        "inverse": ("BTCUSD", "ETHUSD"),
        "option": ("BTC",),
    }.items()
    for symbol in symbols
] + [{"channel_type": "ticker", "category": "linear", "symbol": s} for s in ("BTCUSDT", "ETHUSDT", "DOGEUSDT")]
WANTED = {
    (f["category"], f"{'publicTrade' if f['channel_type'] == 'trades' else 'tickers'}.{f['symbol']}") for f in MARKET
}
WANTED_WITH_PRIVATE = WANTED | {("private", "execution")}


async def subscribe_all(api: httpx.AsyncClient, svc: str) -> None:
    for fields in [*MARKET, {"channel_type": "execution"}]:
        response = await api.post(URL, json={"requesting_service": svc, **fields})
        assert response.status_code == 201, response.text


def settled(fake: FakeBybit, *members: Worker) -> bool:
    """Every worker has seen all of them, and the fake sees each wanted topic subscribed exactly once."""
    ids = {member.worker_id for member in members}
    return all(m.cluster.assignment.members == ids for m in members) and exactly_once(fake, WANTED_WITH_PRIVATE)


async def workers(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.get("/api/v1/workers")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_two_workers_subscribe_each_topic_once_and_one_holds_the_private_stream(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any]
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    await subscribe_all(api, svc)
    async with (
        start_worker(worker_id="alpha", **FAST_LEASES) as alpha,
        start_worker(worker_id="beta", **FAST_LEASES) as beta,
    ):
        await wait_until(lambda: settled(fake, alpha, beta), timeout=20, what="each topic once across both")

        async def reported() -> dict[str, Any] | None:
            body = await workers(api)
            counts = [m["topic_count"] for m in body["items"]]
            return body if body["unowned_count"] == 0 and sum(counts) == len(WANTED_WITH_PRIVATE) else None

        body = await wait_until(reported, timeout=10, what="both workers report their topics")
        assert alpha.cluster.holds_private != beta.cluster.holds_private
        health = (await api.get("/health")).json()["worker"]
    members = {m["worker_id"]: m for m in body["items"]}
    assert set(members) == {"alpha", "beta"}
    assert all(m["alive"] and 0 <= m["lease_age_s"] < 2 for m in members.values())
    assert body["private_holder"] in members
    assert members[body["private_holder"]]["topics"]["private"] == ["execution"]
    owned = [(s, t) for m in members.values() for s, topics in m["topics"].items() for t in topics]
    assert sorted(owned) == sorted(WANTED_WITH_PRIVATE)  # a partition: no topic twice, none missing
    assert all(m["topic_count"] > 0 for m in members.values())  # 16 topics hash onto both workers
    assert {m["worker_id"]: m["topic_count"] for m in health["members"]} == {
        worker_id: m["topic_count"] for worker_id, m in members.items()
    }
    assert health["private_holder"] == body["private_holder"]
    assert health["unowned_topics"] == 0


async def test_a_worker_that_stops_hands_its_topics_and_the_private_stream_over(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    queue = service_queue(svc, ChannelType.EXECUTION)
    await subscribe_all(api, svc)
    async with start_worker(worker_id="stays", **FAST_LEASES) as stays:
        async with start_worker(worker_id="leaves", **FAST_LEASES) as leaves:
            await wait_until(lambda: settled(fake, stays, leaves), timeout=20, what="each topic once across both")
            moving = leaves.cluster.owned(leaves.desired.topics())
        # `leaves` stopped: it left the cluster, so `stays` takes everything without waiting for a lease.
        async with consuming(rabbitmq_url, queue) as executions:
            await wait_until(lambda: exactly_once(fake, WANTED_WITH_PRIVATE), timeout=10, what="all on one worker")
            assert stays.cluster.holds_private
            fill = await fake.push_account("execution", category="linear", symbol="BTCUSDT")
            exec_id = f"execution:{fill['data'][0]['execId']}"
            await wait_until(lambda: exec_id in executions.ids(), timeout=10, what="the fill after the handover")
        assert sum(live_subscriptions(fake).values()) == len(WANTED_WITH_PRIVATE)
        assert moving, "the leaving worker owned something to hand over"
    await delete_queues(rabbitmq_url, queue, *(service_queue(svc, c) for c in (ChannelType.TRADES, ChannelType.TICKER)))


async def test_a_worker_cut_from_postgres_keeps_serving_while_the_other_takes_over_then_they_converge(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], database_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    await subscribe_all(api, svc)
    parts = urlsplit(database_url)
    async with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        cut_db = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
        async with (
            start_worker(worker_id="cut", database_url=cut_db, **FAST_LEASES) as cut,
            start_worker(worker_id="sees", **FAST_LEASES) as sees,
        ):
            await wait_until(lambda: settled(fake, cut, sees), timeout=20, what="each topic once across both")
            kept = cut.cluster.owned(cut.desired.topics())
            await proxy.set_mode(Mode.REFUSE)
            # `sees` finds the lease of `cut` expired and serves everything; `cut` cannot renew and, failing
            # static, keeps what it has: duplicates for a while, never a topic served by nobody.
            await wait_until(lambda: sees.cluster.assignment.members == {"sees"}, timeout=10, what="cut's expiry")
            await wait_until(
                lambda: (
                    live_subscriptions(fake).keys() == WANTED_WITH_PRIVATE
                    and all(
                        topic in sees.connections[e].protocol.subscribed
                        for e, topics in sees.desired.topics().items()
                        for topic in topics
                    )
                ),
                timeout=10,
                what="the other worker serving every topic",
            )
            assert cut.cluster.failed_renewals > 0
            assert cut.cluster.owned(cut.desired.topics()) == kept
            await proxy.set_mode(Mode.FORWARD)
            await wait_until(lambda: settled(fake, cut, sees), timeout=20, what="one owner per topic again")
