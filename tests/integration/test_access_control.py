"""Scoped keys through the real app and PostgreSQL: a key reaches only its services, by every route and method."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest
from litestar.routes import HTTPRoute
from loguru import logger

from control_api.app import create_app
from control_api.audit import AUDIT_OPT, AuditAction
from control_api.ratelimit import WRITE_METHODS
from control_api.security import key_id, parse_scoped_keys
from control_api.settings import ApiSettings
from tests.conftest import API_KEY
from tests.support.apiserver import api_client

URL = "/api/v1/subscriptions"
WRITE_A = "write-key-for-svc-a-000001"
READ_A = "read-key-for-svc-a-0000002"
WRITE_B = "write-key-for-svc-b-000003"
SCOPED = {
    WRITE_A: {"role": "write", "services": ["svc-a"]},
    READ_A: {"role": "read", "services": ["svc-a"]},
    WRITE_B: {"role": "write", "services": ["svc-b"]},
}


def scoped_settings(api_settings: ApiSettings, **overrides: Any) -> ApiSettings:
    keys = parse_scoped_keys("WS_GATEWAY_API_KEYS", json.dumps(SCOPED))
    return msgspec.structs.replace(api_settings, scoped_keys=keys, **overrides)


@pytest.fixture
async def client(api_settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The API with one admin key (the client's default header) and the scoped keys above."""
    async with api_client(scoped_settings(api_settings), API_KEY) as api:
        yield api


def as_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def trades(service: str, symbol: str = "BTCUSDT") -> dict[str, Any]:
    return {"channel_type": "trades", "requesting_service": service, "symbol": symbol}


@dataclass(frozen=True)
class Rows:
    a: str  # a live subscription of svc-a
    b: str  # a live subscription of svc-b (on a topic svc-a does not want)


async def seed(api: httpx.AsyncClient) -> Rows:
    a = await api.post(URL, json=trades("svc-a"))
    b = await api.post(URL, json=trades("svc-b", "ETHUSDT"))
    assert (a.status_code, b.status_code) == (201, 201)
    return Rows(a=a.json()["id"], b=b.json()["id"])


def assert_forbidden(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == "forbidden"
    assert "ETHUSDT" not in response.text  # nothing of svc-b's subscription leaks into the refusal


Call = Callable[[httpx.AsyncClient, Rows, str], Awaitable[httpx.Response]]

# Every route under /api/v1 and what "another service's data" means for it. The test below fails when a route
# is added without a row here, so a new route cannot skip the scope check.
OUT_OF_SCOPE: dict[tuple[str, str], Call] = {
    ("POST", "/api/v1/subscriptions"): lambda api, rows, key: api.post(URL, json=trades("svc-b"), headers=as_key(key)),
    ("GET", "/api/v1/subscriptions"): lambda api, rows, key: api.get(
        URL, params={"requesting_service": "svc-b"}, headers=as_key(key)
    ),
    ("GET", "/api/v1/subscriptions/{subscription_id:uuid}"): lambda api, rows, key: api.get(
        f"{URL}/{rows.b}", headers=as_key(key)
    ),
    ("DELETE", "/api/v1/subscriptions/{subscription_id:uuid}"): lambda api, rows, key: api.delete(
        f"{URL}/{rows.b}", headers=as_key(key)
    ),
    ("DELETE", "/api/v1/subscriptions/by-service/{service:str}"): lambda api, rows, key: api.delete(
        f"{URL}/by-service/svc-b", headers=as_key(key)
    ),
    ("POST", "/api/v1/subscriptions/{subscription_id:uuid}/snapshot"): lambda api, rows, key: api.post(
        f"{URL}/{rows.b}/snapshot", headers=as_key(key)
    ),
    ("GET", "/api/v1/audit"): lambda api, rows, key: api.get("/api/v1/audit", headers=as_key(key)),
}
# Routes that answer a scoped key, showing only what is in its scope (or account-wide data, see README).
FILTERED: set[tuple[str, str]] = {
    ("GET", "/api/v1/workers"),
    ("GET", "/api/v1/balances"),
    ("GET", "/api/v1/balances/history"),
}


def api_routes(settings: ApiSettings) -> set[tuple[str, str]]:
    app = create_app(settings)
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, HTTPRoute) and route.path.startswith("/api/v1")
        for method in route.methods
        if method not in ("HEAD", "OPTIONS")
    }


def test_every_api_route_and_method_is_covered_by_the_scope_tests(api_settings: ApiSettings) -> None:
    assert api_routes(api_settings) == set(OUT_OF_SCOPE) | FILTERED


def test_every_write_route_is_marked_for_the_audit_trail(api_settings: ApiSettings) -> None:
    handlers = [
        (method, route.path, handler)
        for route in create_app(api_settings).routes
        if isinstance(route, HTTPRoute)
        for handler in route.route_handlers
        for method in handler.http_methods
        if method in WRITE_METHODS
    ]
    assert len(handlers) >= 3
    for method, path, handler in handlers:
        assert isinstance(handler.opt.get(AUDIT_OPT), AuditAction), (method, path)


@pytest.mark.parametrize("key", [WRITE_A, READ_A], ids=["write-key", "read-key"])
@pytest.mark.parametrize("route", sorted(OUT_OF_SCOPE), ids=lambda r: f"{r[0]} {r[1]}")
async def test_a_scoped_key_gets_403_for_another_services_data(
    client: httpx.AsyncClient, route: tuple[str, str], key: str
) -> None:
    rows = await seed(client)
    assert_forbidden(await OUT_OF_SCOPE[route](client, rows, key))
    other = (await client.get(f"{URL}/{rows.b}")).json()
    assert (other["is_active"], other["status"]) == (True, "pending")  # untouched
    assert (await client.get(URL, params={"requesting_service": "svc-b"})).json()["total"] == 1


@pytest.mark.parametrize("key", [WRITE_A, READ_A], ids=["write-key", "read-key"])
async def test_listing_and_workers_never_reveal_other_services_rows(client: httpx.AsyncClient, key: str) -> None:
    rows = await seed(client)
    shared = await client.post(URL, json=trades("svc-b"))  # svc-b on svc-a's topic too
    assert shared.status_code == 201
    listing = await client.get(URL, headers=as_key(key))
    assert listing.status_code == 200
    assert [item["id"] for item in listing.json()["items"]] == [rows.a]
    assert listing.json()["total"] == 1
    by_topic = await client.get(URL, params={"symbol": "ETHUSDT"}, headers=as_key(key))
    assert by_topic.json() == {"items": [], "total": 0, "limit": 100, "offset": 0}
    workers = await client.get("/api/v1/workers", headers=as_key(key))
    assert workers.status_code == 200
    assert workers.json()["unowned_topics"] == ["linear:publicTrade.BTCUSDT"]  # not svc-b's ETHUSDT
    admin_view = (await client.get("/api/v1/workers")).json()
    assert sorted(admin_view["unowned_topics"]) == ["linear:publicTrade.BTCUSDT", "linear:publicTrade.ETHUSDT"]
    assert "svc-b" not in listing.text + by_topic.text + workers.text


async def test_a_write_key_manages_its_own_services_subscriptions(client: httpx.AsyncClient) -> None:
    created = await client.post(URL, json=trades("svc-a", "SOLUSDT"), headers=as_key(WRITE_A))
    assert created.status_code == 201
    again = await client.post(URL, json=trades("svc-a", "SOLUSDT"), headers=as_key(WRITE_A))
    assert again.status_code == 200
    assert (await client.get(f"{URL}/{created.json()['id']}", headers=as_key(READ_A))).status_code == 200
    cancelled = await client.delete(f"{URL}/{created.json()['id']}", headers=as_key(WRITE_A))
    assert cancelled.json()["status"] == "cancelled"
    await client.post(URL, json=trades("svc-a", "XRPUSDT"), headers=as_key(WRITE_A))
    by_service = await client.delete(f"{URL}/by-service/svc-a", headers=as_key(WRITE_A))
    assert by_service.json() == {"cancelled": 1}


@pytest.mark.parametrize(
    "write",
    [
        lambda api, rows: api.post(URL, json=trades("svc-a", "SOLUSDT"), headers=as_key(READ_A)),
        lambda api, rows: api.delete(f"{URL}/{rows.a}", headers=as_key(READ_A)),
        lambda api, rows: api.delete(f"{URL}/by-service/svc-a", headers=as_key(READ_A)),
        lambda api, rows: api.post(f"{URL}/{rows.a}/snapshot", headers=as_key(READ_A)),
    ],
    ids=["create", "cancel", "cancel-by-service", "snapshot"],
)
async def test_a_read_only_key_cannot_write_even_its_own_service(
    client: httpx.AsyncClient, write: Callable[[httpx.AsyncClient, Rows], Awaitable[httpx.Response]]
) -> None:
    rows = await seed(client)
    response = await write(client, rows)
    assert response.status_code == 403
    assert "read-only" in response.json()["error"]["message"]
    assert (await client.get(f"{URL}/{rows.a}")).json()["is_active"] is True
    listing = await client.get(URL, headers=as_key(READ_A))
    assert [item["id"] for item in listing.json()["items"]] == [rows.a]


async def test_admin_keys_from_ws_gateway_api_key_still_reach_every_service(client: httpx.AsyncClient) -> None:
    rows = await seed(client)
    listing = (await client.get(URL, headers=as_key("second-key"))).json()
    assert {item["id"] for item in listing["items"]} == {rows.a, rows.b}
    assert (await client.delete(f"{URL}/by-service/svc-b", headers=as_key("second-key"))).json() == {"cancelled": 1}


async def test_log_lines_name_keys_by_key_id_never_by_the_key(client: httpx.AsyncClient) -> None:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(f"{message} {message.record['extra']}"), level="DEBUG")
    try:
        await client.post(URL, json=trades("svc-a"), headers=as_key(WRITE_A))
        await client.post(URL, json=trades("svc-b"), headers=as_key(WRITE_A))
        await client.get(URL, headers=as_key(READ_A))
    finally:
        logger.remove(sink)
    everything = "\n".join(lines)
    for key in (WRITE_A, READ_A, API_KEY):
        assert key not in everything
    assert key_id(WRITE_A) in everything
    assert key_id(READ_A) in everything
    assert sum("write refused" in line for line in lines) == 1


async def test_an_unknown_key_is_401_for_every_route(client: httpx.AsyncClient) -> None:
    for method, path in sorted(OUT_OF_SCOPE):
        url = path.replace("{subscription_id:uuid}", str(uuid.uuid4())).replace("{service:str}", "svc-a")
        response = await client.request(method, url, headers=as_key("not-a-key"), json=trades("svc-a"))
        assert response.status_code == 401, (method, path)
