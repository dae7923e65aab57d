"""`/status.json` tells an anonymous caller aggregate health only, a scoped key its own services' topics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from control_api.security import key_id
from control_api.settings import ApiSettings
from tests.conftest import API_KEY
from tests.integration.test_access_control import READ_A, SCOPED, WRITE_B, as_key, scoped_settings, trades
from tests.support.apiserver import api_client

URL = "/api/v1/subscriptions"


@pytest.fixture
async def client(api_settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(scoped_settings(api_settings), API_KEY) as api:
        for service, symbol in (("svc-a", "BTCUSDT"), ("svc-b", "BTCUSDT"), ("svc-b", "ETHUSDT")):
            assert (await api.post(URL, json=trades(service, symbol))).status_code == 201
        yield api


def topics(body: dict[str, object]) -> dict[str, list[str]]:
    listed = body["topics"]
    assert isinstance(listed, list)
    return {t["topic"]: [s["service"] for s in t["services"]] for t in listed}


async def test_anonymous_status_shows_aggregate_health_and_no_topic_service_or_key_id(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/status.json", headers={"X-API-Key": ""})
    assert response.status_code == 200
    body = response.json()
    assert body["access"] == "anonymous"
    assert body["caller"] is None
    assert body["topics"] == []
    assert body["database"] == "up"
    assert body["worker"]["status"] == "unknown"
    for secret in ("svc-a", "svc-b", "BTCUSDT", "ETHUSDT", *(key_id(k) for k in [API_KEY, *SCOPED])):
        assert secret not in response.text
    page = await client.get("/", headers={"X-API-Key": ""})
    assert page.status_code == 200
    assert "svc-a" not in page.text


async def test_a_read_key_sees_only_its_services_topics_and_subscribers(client: httpx.AsyncClient) -> None:
    response = await client.get("/status.json", headers=as_key(READ_A))
    body = response.json()
    assert body["access"] == "read"
    assert body["caller"] == {"key_id": key_id(READ_A), "role": "read", "services": ["svc-a"]}
    assert topics(body) == {"publicTrade.BTCUSDT": ["svc-a"]}  # svc-b shares the topic but stays hidden
    assert "svc-b" not in response.text
    assert "ETHUSDT" not in response.text
    other = (await client.get("/status.json", headers=as_key(WRITE_B))).json()
    assert topics(other) == {"publicTrade.BTCUSDT": ["svc-b"], "publicTrade.ETHUSDT": ["svc-b"]}


async def test_an_admin_key_sees_every_topic_and_subscriber(client: httpx.AsyncClient) -> None:
    body = (await client.get("/status.json")).json()
    assert body["access"] == "admin"
    assert body["caller"]["services"] is None
    assert topics(body) == {"publicTrade.BTCUSDT": ["svc-a", "svc-b"], "publicTrade.ETHUSDT": ["svc-b"]}


async def test_a_wrong_key_on_the_status_page_is_401_not_anonymous(client: httpx.AsyncClient) -> None:
    response = await client.get("/status.json", headers=as_key("typo-" + API_KEY))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
