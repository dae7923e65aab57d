"""Two deployments (two databases) on one RabbitMQ vhost, with workers of one worker id: each deployment's change
notices reach only its own worker, on the fast path (the reconcile timer is far away)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec
import pytest

from control_api.settings import ApiSettings
from shared.enums import Endpoint
from stream_worker.worker import Worker
from tests.conftest import API_KEY
from tests.support import services
from tests.support.apiserver import api_client
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"
SLOW_RECONCILE = {"reconcile_interval": 600.0, "worker_id": "same-host"}


@pytest.fixture
def other_database_url(template_database: str) -> AsyncIterator[str]:
    name = services.unique_name("wsg_test")
    yield services.create_database(name, template=template_database)
    services.drop_database(name)


def wants(worker: Worker, topic: str) -> bool:
    return topic in worker.desired.topics().get(Endpoint.LINEAR, set())


async def subscribe(api: httpx.AsyncClient, symbol: str) -> None:
    response = await api.post(
        URL, json={"requesting_service": f"svc-{uuid.uuid4().hex[:8]}", "channel_type": "trades", "symbol": symbol}
    )
    assert response.status_code == 201, response.text


async def test_each_deployments_notices_reach_only_its_own_worker_on_a_shared_vhost(
    api: httpx.AsyncClient,
    api_settings: ApiSettings,
    other_database_url: str,
    start_worker: Callable[..., Any],
) -> None:
    other_settings = msgspec.structs.replace(api_settings, database_url=other_database_url)
    async with (
        api_client(other_settings, API_KEY) as other_api,
        start_worker(**SLOW_RECONCILE) as ours,
        start_worker(database_url=other_database_url, **SLOW_RECONCILE) as theirs,
    ):
        await wait_until(
            lambda: (
                ours.commands.connected
                and theirs.commands.connected
                and ours.convergence.reloads
                and theirs.convergence.reloads
            ),
            timeout=20,
            what="both workers listening, their desired sets read",
        )
        assert ours.commands.queue_name != theirs.commands.queue_name
        assert ours.commands.deployment_id != theirs.commands.deployment_id

        await subscribe(api, "BTCUSDT")
        await wait_until(lambda: wants(ours, "publicTrade.BTCUSDT"), timeout=10, what="our worker applies our notice")
        await subscribe(other_api, "ETHUSDT")
        await wait_until(
            lambda: wants(theirs, "publicTrade.ETHUSDT"), timeout=10, what="their worker applies their notice"
        )
        assert (ours.commands.received, theirs.commands.received) == (1, 1)
        assert not wants(ours, "publicTrade.ETHUSDT")
        assert not wants(theirs, "publicTrade.BTCUSDT")
