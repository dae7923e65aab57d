"""The worker rides out dropped and stalled sockets, bad keys and bad frames, and says so in /health."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from shared.config import Secret
from shared.enums import ChannelType, Endpoint
from shared.routing import service_queue
from shared.schema import SubscriptionRow
from stream_worker.worker import Worker
from tests.e2e.conftest import consuming, delete_queues
from tests.fake_bybit import FakeBybit
from tests.support.fault_proxy import FaultProxy, Mode
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"


async def subscribe(api: httpx.AsyncClient, svc: str, **fields: Any) -> None:
    response = await api.post(URL, json={"requesting_service": svc, **fields})
    assert response.status_code == 201, response.text


def subscribed(worker: Worker, endpoint: Endpoint, *topics: str) -> bool:
    return all(topic in worker.connections[endpoint].protocol.subscribed for topic in topics)


@pytest.mark.parametrize("close_frame", [False, True], ids=["dropped", "closed-by-server"])
async def test_dropped_sockets_reauthenticate_and_resubscribe_without_duplicates(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str, close_frame: bool
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    async with start_worker() as worker:
        await subscribe(api, svc, channel_type="trades", symbol="BTCUSDT")
        await subscribe(api, svc, channel_type="order")
        await wait_until(
            lambda: (
                subscribed(worker, Endpoint.LINEAR, "publicTrade.BTCUSDT")
                and subscribed(worker, Endpoint.PRIVATE, "order")
            ),
            what="both sockets subscribed",
        )
        async with consuming(rabbitmq_url, service_queue(svc, ChannelType.TRADES)) as trades:
            await fake.drop_connections(close_frame=False)
            await wait_until(
                lambda: (
                    worker.connections[Endpoint.LINEAR].reconnects == 1
                    and worker.connections[Endpoint.PRIVATE].reconnects == 1
                    and subscribed(worker, Endpoint.LINEAR, "publicTrade.BTCUSDT")
                    and subscribed(worker, Endpoint.PRIVATE, "order")
                ),
                what="both sockets back",
            )
            seen = len(trades.envelopes)
            await wait_until(lambda: len(trades.envelopes) > seen + 5, what="trades flow again")
    assert fake.subscribe_requests("publicTrade.BTCUSDT") == 2
    assert fake.subscribe_requests("order") == 2
    assert sum(1 for attempt in fake.auth_attempts if attempt.success) == 2
    await delete_queues(rabbitmq_url, service_queue(svc, ChannelType.TRADES), service_queue(svc, ChannelType.ORDER))


async def test_stalled_socket_is_replaced_and_resubscribed(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any]
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    async with start_worker(ping_interval=0.2, dead_after=0.8, ack_timeout=1.0) as worker:
        await subscribe(api, svc, channel_type="ticker", symbol="BTCUSDT", category="spot")
        await wait_until(lambda: subscribed(worker, Endpoint.SPOT, "tickers.BTCUSDT"), what="subscribed")
        fake.stall("spot")
        await wait_until(lambda: worker.connections[Endpoint.SPOT].reconnects >= 1, what="declared dead")
        assert (worker.connections[Endpoint.SPOT].last_end_reason or "").startswith("dead")
        fake.unstall("spot")
        await wait_until(lambda: subscribed(worker, Endpoint.SPOT, "tickers.BTCUSDT"), timeout=20, what="back")


async def test_rejected_keys_back_off_and_show_in_health(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any]
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    async with start_worker(bybit_api_secret=Secret("wrong-secret")) as worker:
        await subscribe(api, svc, channel_type="position")
        await wait_until(lambda: worker.connections[Endpoint.PRIVATE].auth_failures >= 2, what="two rejections")

        async def health_says_private_is_down() -> bool:
            response = await api.get("/health")
            body = response.json()
            private = (body["worker"].get("sockets") or {}).get("private", {})
            return response.status_code == 503 and private.get("authenticated") is False

        await wait_until(health_says_private_is_down, timeout=15, what="health shows the private socket down")
    attempts = sorted(attempt.at for attempt in fake.auth_attempts)
    assert all(not attempt.success for attempt in fake.auth_attempts)
    # Backed off: the first retry waits up to auth_backoff_first, and each later one at least doubles its cap,
    # so attempts stay far apart compared with a hot loop (which would make hundreds per second).
    assert len(attempts) < 15
    assert fake.subscribe_requests("position") == 0


async def test_malformed_frames_are_counted_and_the_stream_goes_on(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    async with start_worker() as worker:
        await subscribe(api, svc, channel_type="trades", symbol="SOLUSDT")
        await wait_until(lambda: subscribed(worker, Endpoint.LINEAR, "publicTrade.SOLUSDT"), what="subscribed")
        async with consuming(rabbitmq_url, service_queue(svc, ChannelType.TRADES)) as trades:
            for frame in (
                "not json",
                "[1, 2, 3]",
                '{"topic": 42, "data": []}',
                '{"topic": "publicTrade.SOLUSDT", "type": "snapshot", "ts": 1, "data": {"not": "a list"}}',
                '{"topic": "publicTrade.SOLUSDT", "type": "snapshot", "ts": 1, "data": [{"p": 1}]}',
                '{"hello": "world"}',
                '{"topic": "unknownTopic.SOLUSDT", "type": "snapshot", "ts": 1, "data": []}',
            ):
                await fake.push(frame, category="linear")
            seen = len(trades.envelopes)
            await wait_until(lambda: len(trades.envelopes) > seen + 5, what="trades keep flowing")
        malformed = {k: v for k, v in worker.dispatcher.counters.items() if k.startswith(("frames:", "payload:"))}
        assert sum(malformed.values()) == 7, malformed
        assert malformed["payload:unknown_topic"] == 1
        assert worker.connections[Endpoint.LINEAR].reconnects == 0
    await delete_queues(rabbitmq_url, service_queue(svc, ChannelType.TRADES))


async def test_health_reports_the_workers_heartbeat_and_goes_stale_when_it_stops(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any]
) -> None:
    async with start_worker():

        async def worker_up() -> bool:
            response = await api.get("/health")
            return response.status_code == 200 and response.json()["worker"]["status"] == "up"

        await wait_until(worker_up, what="worker up in /health")

    async def worker_stale() -> bool:
        response = await api.get("/health")
        return response.status_code == 503 and response.json()["worker"]["status"] == "stale"

    await wait_until(worker_stale, timeout=15, what="worker stale in /health")


async def test_bybit_reconnect_rereads_the_desired_set_from_postgres(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], database_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    async with start_worker(reconcile_interval=60.0) as worker:
        await subscribe(api, svc, channel_type="trades", symbol="BTCUSDT")
        await wait_until(lambda: subscribed(worker, Endpoint.LINEAR, "publicTrade.BTCUSDT"), what="subscribed")
        # A row no notice announced (written while the API could not reach RabbitMQ, say).
        engine = create_async_engine(database_url)
        async with engine.begin() as connection:
            await connection.execute(
                insert(SubscriptionRow).values(
                    id=uuid.uuid4(),
                    channel_type="ticker",
                    category="linear",
                    symbol="BTCUSDT",
                    topic="tickers.BTCUSDT",
                    endpoint="linear",
                    requesting_service=svc,
                )
            )
        await engine.dispose()
        await fake.drop_connections()
        await wait_until(
            lambda: subscribed(worker, Endpoint.LINEAR, "tickers.BTCUSDT"), what="the unannounced topic subscribed"
        )


async def test_a_10_mb_frame_recycles_that_socket_and_the_stream_resumes(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    async with start_worker() as worker:  # the e2e sockets keep the default 4 MiB frame limit
        await subscribe(api, svc, channel_type="trades", symbol="XRPUSDT")
        await wait_until(lambda: subscribed(worker, Endpoint.LINEAR, "publicTrade.XRPUSDT"), what="subscribed")
        async with consuming(rabbitmq_url, service_queue(svc, ChannelType.TRADES)) as trades:
            huge = '{"topic":"publicTrade.XRPUSDT","type":"snapshot","ts":1,"data":"' + "x" * 10_000_000 + '"}'
            await fake.push(huge, category="linear")
            await wait_until(lambda: worker.connections[Endpoint.LINEAR].reconnects == 1, what="the socket recycled")
            assert "1009" in (worker.connections[Endpoint.LINEAR].last_end_reason or "")
            seen = len(trades.envelopes)
            await wait_until(lambda: len(trades.envelopes) > seen + 5, what="trades flow again")
    assert fake.subscribe_requests("publicTrade.XRPUSDT") == 2
    await delete_queues(rabbitmq_url, service_queue(svc, ChannelType.TRADES))


REFUSAL_SECONDS = 30.0


async def test_bybit_refusing_connections_for_30_s_is_ridden_out_with_backoff(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any]
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    async with start_worker() as worker:
        await subscribe(api, svc, channel_type="ticker", symbol="BTCUSDT")
        connection = worker.connections[Endpoint.LINEAR]
        await wait_until(lambda: subscribed(worker, Endpoint.LINEAR, "tickers.BTCUSDT"), what="subscribed")
        fake.refuse_connections(REFUSAL_SECONDS)
        await fake.drop_connections()
        await wait_until(lambda: fake.refused_handshakes >= 3, what="refused attempts")

        async def health_shows_the_socket_down() -> bool:
            response = await api.get("/health")
            linear = (response.json()["worker"].get("sockets") or {}).get("linear", {})
            return response.status_code == 503 and linear.get("connected") is False

        await wait_until(health_shows_the_socket_down, what="health reports the socket down")
        await wait_until(
            lambda: subscribed(worker, Endpoint.LINEAR, "tickers.BTCUSDT"),
            timeout=REFUSAL_SECONDS + 15,
            what="back after the refusal",
        )
    # The test's backoff cap is 0.3 s; full jitter keeps attempts well under one per 50 ms on average.
    assert fake.refused_handshakes < REFUSAL_SECONDS / 0.05
    assert connection.reconnects >= 1


async def test_silent_link_to_bybit_is_detected_and_replaced(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any]
) -> None:
    """The TCP proxy between the worker and Bybit freezes the link: no close, no data, no pong."""
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    host, port = fake.url.removeprefix("ws://").split(":")
    async with FaultProxy(host, int(port)) as proxy:
        through = f"ws://127.0.0.1:{proxy.port}"
        async with start_worker(public_ws_url=through, ping_interval=0.2, dead_after=0.8) as worker:
            await subscribe(api, svc, channel_type="trades", symbol="BTCUSDT", category="inverse")
            await wait_until(lambda: subscribed(worker, Endpoint.INVERSE, "publicTrade.BTCUSDT"), what="subscribed")
            await proxy.set_mode(Mode.STALL)
            await wait_until(
                lambda: (worker.connections[Endpoint.INVERSE].last_end_reason or "").startswith("dead"),
                what="the silent socket declared dead",
            )
            await proxy.set_mode(Mode.FORWARD)
            await wait_until(
                lambda: subscribed(worker, Endpoint.INVERSE, "publicTrade.BTCUSDT"), timeout=20, what="back"
            )
