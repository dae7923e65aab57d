"""The whole gateway in one test: fake Bybit, the API under uvicorn, an in-process worker, real brokers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import httpx
import msgspec
import pytest
from aio_pika.abc import AbstractIncomingMessage

from control_api.settings import ApiSettings
from shared.config import Secret
from shared.events import ENVELOPE_DECODER, EventEnvelope
from stream_worker.broker.publisher import Publisher
from stream_worker.exchange.connection import ConnectionSettings
from stream_worker.settings import WorkerSettings
from stream_worker.state.persistence import Store, create_engine
from stream_worker.worker import Worker
from tests.conftest import API_KEY
from tests.fake_bybit import FakeBybit
from tests.support.apiserver import api_client
from tests.support.queues import consuming_with

BYBIT_KEY, BYBIT_SECRET = "fake-key", "fake-secret"
FAST_SOCKETS = ConnectionSettings(open_timeout=5, backoff_first=0.05, backoff_cap=0.3, auth_backoff_first=0.3)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(accounts={BYBIT_KEY: BYBIT_SECRET}, push_interval=0.02) as server:
        yield server


@pytest.fixture
async def api(api_settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(msgspec.structs.replace(api_settings, worker_stale_after=3.0), API_KEY) as client:
        yield client


def worker_settings(fake: FakeBybit, db_url: str, amqp_url: str, **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "rabbitmq_url": amqp_url,
        "public_ws_url": fake.url,
        "private_ws_url": fake.url,
        "rest_url": fake.url.replace("ws://", "http://"),
        "bybit_api_key": Secret(BYBIT_KEY),
        "bybit_api_secret": Secret(BYBIT_SECRET),
        "ping_interval": 1.0,
        "dead_after": 3.0,
        "reconcile_interval": 2.0,
        "worker_id": f"test-{uuid.uuid4().hex[:8]}",
        "shutdown_grace": 5.0,
        "metrics_port": 0,  # several workers may run at once; a test that scrapes picks a free port
    }
    return WorkerSettings(**(values | overrides))


@asynccontextmanager
async def running_worker(settings: WorkerSettings) -> AsyncIterator[Worker]:
    engine = create_engine(settings.database_url, 5.0)
    worker = Worker(
        settings,
        store=Store(engine, 5.0),
        publisher=Publisher(settings.rabbitmq_url, reconnect_cap=0.5),
        connection_settings=FAST_SOCKETS,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop), name="worker-under-test")
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await engine.dispose()


@pytest.fixture
def start_worker(fake: FakeBybit, database_url: str, rabbitmq_url: str) -> Callable[..., Any]:
    def start(**overrides: Any) -> Any:
        return running_worker(worker_settings(fake, database_url, rabbitmq_url, **overrides))

    return start


@dataclass
class Inbox:
    """Envelopes consumed from one service queue."""

    envelopes: list[EventEnvelope] = field(default_factory=list)
    messages: list[AbstractIncomingMessage] = field(default_factory=list)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        async with message.process():
            self.messages.append(message)
            self.envelopes.append(ENVELOPE_DECODER.decode(message.body))

    def ids(self) -> list[str]:
        return [e.event_id for e in self.envelopes]


@asynccontextmanager
async def consuming(rabbitmq_url: str, queue_name: str, timeout: float = 15) -> AsyncIterator[Inbox]:
    """Consume a queue the worker declares (waits until it exists)."""
    inbox = Inbox()
    async with consuming_with(rabbitmq_url, queue_name, inbox.on_message, timeout):
        yield inbox


async def delete_queues(rabbitmq_url: str, *names: str) -> None:
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
