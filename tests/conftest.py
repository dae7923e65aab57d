"""Fixtures shared by the whole suite: real PostgreSQL and RabbitMQ, isolated per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from hypothesis import settings

from control_api.settings import ApiSettings
from shared.config import Secret
from tests.support import services
from tests.support.apiserver import api_client

API_KEY = "test-api-key"

# CI must be deterministic (a flaky test is a bug); developers' runs keep exploring new random examples.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def template_database() -> Iterator[str]:
    """A migrated database that per-test databases are copied from (much faster than migrating each)."""
    name = services.unique_name("wsg_tpl")
    url = services.create_database(name)
    services.migrate(url)
    yield name
    services.drop_database(name)


@pytest.fixture
def database_url(template_database: str) -> Iterator[str]:
    name = services.unique_name("wsg_test")
    url = services.create_database(name, template=template_database)
    yield url
    services.drop_database(name)


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """A vhost for this run. Tests run one at a time and each reads only from queues it declares itself,
    so fixed exchange names (ws-gateway.commands) cannot carry one test's messages into another's queue."""
    name = services.unique_name("wsg_test")
    url = services.create_vhost(name)
    yield url
    services.delete_vhost(name)


@pytest.fixture
def api_settings(database_url: str, rabbitmq_url: str) -> ApiSettings:
    return ApiSettings(
        database_url=database_url,
        rabbitmq_url=rabbitmq_url,
        api_keys=(Secret(API_KEY), Secret("second-key")),
        db_timeout=2.0,
        relay_retry_max=0.5,
    )


@pytest.fixture
async def api(api_settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The API served by uvicorn in this test's loop, with the key header set."""
    async with api_client(api_settings, API_KEY) as client:
        yield client
