"""Every write reaches the workers as a notice on ws-gateway.commands, even across a RabbitMQ outage."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import msgspec
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from control_api.settings import ApiSettings
from shared.commands import COMMAND_DECODER, SubscriptionsChanged
from shared.routing import COMMANDS_EXCHANGE
from tests.conftest import API_KEY
from tests.support.apiserver import api_client
from tests.support.fault_proxy import FaultProxy, Mode
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"


class NoticeInbox:
    """A private queue bound to the command exchange, collecting decoded notices."""

    def __init__(self) -> None:
        self.notices: list[SubscriptionsChanged] = []
        self.messages: list[AbstractIncomingMessage] = []

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        async with message.process():
            notice = COMMAND_DECODER.decode(message.body)
            assert isinstance(notice, SubscriptionsChanged)
            self.messages.append(message)
            self.notices.append(notice)


@pytest.fixture
async def inbox(rabbitmq_url: str) -> AsyncIterator[NoticeInbox]:
    connection = await aio_pika.connect(rabbitmq_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(COMMANDS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    queue: AbstractQueue = await channel.declare_queue(f"test-notices-{uuid.uuid4().hex}", exclusive=True)
    await queue.bind(exchange, "#")
    collected = NoticeInbox()
    await queue.consume(collected.on_message)
    yield collected
    await connection.close()


async def test_create_and_cancel_each_send_a_notice_with_revision_and_trace_id(
    api_settings: ApiSettings, inbox: NoticeInbox
) -> None:
    async with api_client(api_settings, API_KEY) as api:
        created = await api.post(
            URL,
            json={"channel_type": "orderbook", "requesting_service": "svc-a", "symbol": "BTCUSDT"},
            headers={"X-Trace-Id": "trace-create"},
        )
        await api.post(  # an idempotent repeat changes nothing and sends nothing
            URL, json={"channel_type": "orderbook", "requesting_service": "svc-a", "symbol": "BTCUSDT"}
        )
        await api.delete(f"{URL}/{created.json()['id']}", headers={"X-Trace-Id": "trace-cancel"})
        await wait_until(lambda: len(inbox.notices) >= 2, what="two notices")

    first, second = inbox.notices
    assert (first.revision, first.trace_id) == (1, "trace-create")
    assert (second.revision, second.trace_id) == (2, "trace-cancel")
    change = first.changes[0]
    assert (change.action, change.topic, change.endpoint) == ("created", "orderbook.50.BTCUSDT", "linear")
    assert str(change.subscription_id) == created.json()["id"]
    assert second.changes[0].action == "cancelled"
    message = inbox.messages[0]
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.headers["trace_id"] == "trace-create"
    assert message.message_id == "revision-1"
    assert len(inbox.notices) == 2


async def test_cancel_by_service_sends_one_notice_listing_every_cancelled_row(
    api_settings: ApiSettings, inbox: NoticeInbox
) -> None:
    async with api_client(api_settings, API_KEY) as api:
        for symbol in ("BTCUSDT", "ETHUSDT"):
            await api.post(URL, json={"channel_type": "trades", "requesting_service": "svc-a", "symbol": symbol})
        await api.delete(f"{URL}/by-service/svc-a")
        await wait_until(lambda: len(inbox.notices) >= 3, what="three notices")
    assert [n.revision for n in inbox.notices] == [1, 2, 3]
    assert sorted(c.topic for c in inbox.notices[2].changes) == ["publicTrade.BTCUSDT", "publicTrade.ETHUSDT"]


def through(proxy: FaultProxy, url: str) -> str:
    """The same AMQP URL, pointed at the proxy."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"))


async def test_write_accepted_while_rabbitmq_is_down_is_relayed_once_it_is_back(
    api_settings: ApiSettings, inbox: NoticeInbox, rabbitmq_url: str
) -> None:
    parts = urlsplit(rabbitmq_url)
    async with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5672) as proxy:
        await proxy.set_mode(Mode.REFUSE)
        settings = msgspec.structs.replace(api_settings, rabbitmq_url=through(proxy, rabbitmq_url))
        async with api_client(settings, API_KEY) as api:
            health = await api.get("/health")
            assert health.status_code == 503
            assert health.json()["rabbitmq"]["status"] == "down"

            response = await api.post(
                URL,
                json={"channel_type": "ticker", "requesting_service": "svc-a", "symbol": "BTCUSDT"},
                headers={"X-Trace-Id": "written-during-outage"},
            )
            assert response.status_code == 201
            assert (await api.get("/health")).json()["outbox_pending"] == 1
            assert inbox.notices == []

            await proxy.set_mode(Mode.FORWARD)
            await wait_until(lambda: len(inbox.notices) == 1, timeout=15, what="the relayed notice")
            assert inbox.notices[0].trace_id == "written-during-outage"

            async def healthy_with_empty_outbox() -> bool:
                response = await api.get("/health")
                return response.status_code == 200 and response.json()["outbox_pending"] == 0

            await wait_until(healthy_with_empty_outbox, timeout=15, what="health 200 and an empty outbox")
