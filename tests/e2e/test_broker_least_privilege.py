"""The whole gateway on least-privilege RabbitMQ users: the API, the worker and a consumer each get only the
permissions `ws-gateway-admin rabbitmq-user` gives their part, and events still flow end to end."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import msgspec
import pytest
from aiormq.exceptions import ChannelAccessRefused

from control_api.settings import ApiSettings
from shared.enums import ChannelType
from shared.routing import COMMANDS_EXCHANGE, service_queue
from tests.conftest import API_KEY
from tests.e2e.conftest import consuming, delete_queues
from tests.fake_bybit import FakeBybit
from tests.support.apiserver import api_client
from tests.support.broker_users import BrokerUsers, as_user, broker_users, vhost_of
from tests.support.waiting import wait_until


@pytest.fixture
def users(tmp_path: Path) -> Iterator[BrokerUsers]:
    with broker_users(tmp_path) as made:
        yield made


async def test_api_worker_and_consumer_work_with_only_their_own_broker_permissions(
    api_settings: ApiSettings,
    fake: FakeBybit,
    start_worker: Callable[..., Any],
    rabbitmq_url: str,
    users: BrokerUsers,
) -> None:
    vhost = vhost_of(rabbitmq_url)
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    api_url = as_user(rabbitmq_url, *users.make(vhost, "api-user", "--role", "api"))
    worker_url = as_user(rabbitmq_url, *users.make(vhost, "worker-user", "--role", "worker"))
    consumer_url = as_user(rabbitmq_url, *users.make(vhost, svc))
    queue = service_queue(svc, ChannelType.TRADES)

    settings = msgspec.structs.replace(api_settings, rabbitmq_url=api_url, worker_stale_after=3.0)
    async with api_client(settings, API_KEY) as api, start_worker(rabbitmq_url=worker_url):
        created = await api.post(
            "/api/v1/subscriptions", json={"requesting_service": svc, "channel_type": "trades", "symbol": "BTCUSDT"}
        )
        assert created.status_code == 201
        # The notice went out on the API's user and the worker, on its own, subscribed and declared the queue.
        await wait_until(lambda: fake.subscribe_requests("publicTrade.BTCUSDT") == 1, what="bybit subscribe")
        async with consuming(consumer_url, queue) as inbox:
            await wait_until(lambda: len(inbox.envelopes) >= 3, what="three trade events for the consumer")
        health = (await api.get("/health")).json()
        assert health["rabbitmq"]["status"] == "up"

    # The worker's user may not forge change notices.
    async with await aio_pika.connect(worker_url) as connection:
        channel = await connection.channel()
        commands = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
        with pytest.raises(ChannelAccessRefused):
            await commands.publish(aio_pika.Message(b"{}"), routing_key="subscriptions.changed")
    # The API's user may not read any service's events.
    async with await aio_pika.connect(api_url) as connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        with pytest.raises(ChannelAccessRefused):
            await declared.get(fail=False)
    await delete_queues(rabbitmq_url, queue)
