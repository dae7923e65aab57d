"""The subscription resource end to end through the real app, PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import msgspec
import pytest

from control_api.settings import ApiSettings
from tests.conftest import API_KEY
from tests.support.apiserver import api_client

URL = "/api/v1/subscriptions"

Client = httpx.AsyncClient


def body(**overrides: Any) -> dict[str, Any]:
    return {"channel_type": "trades", "requesting_service": "svc-a", "symbol": "BTCUSDT", **overrides}


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    if code is not None:
        assert error["code"] == code
    assert "Traceback" not in response.text
    return error  # type: ignore[no-any-return]


async def test_create_returns_201_then_200_with_the_same_row(api: Client) -> None:
    first = await api.post(URL, json=body(symbol="btcusdt"))
    second = await api.post(URL, json=body())
    assert first.status_code == 201
    assert second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    row = first.json()
    assert row["topic"] == "publicTrade.BTCUSDT"
    assert row["symbol"] == "BTCUSDT"
    assert row["category"] == "linear"
    assert row["status"] == "pending"
    assert row["is_active"] is True


async def test_twenty_concurrent_identical_posts_create_one_row(api: Client) -> None:
    responses = await asyncio.gather(*(api.post(URL, json=body(channel_type="ticker")) for _ in range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    listing = await api.get(URL, params={"channel_type": "ticker"})
    assert listing.json()["total"] == 1


async def test_same_topic_for_two_services_is_two_rows(api: Client) -> None:
    a = await api.post(URL, json=body(requesting_service="svc-a"))
    b = await api.post(URL, json=body(requesting_service="svc-b"))
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


async def test_same_topic_name_on_two_categories_is_two_subscriptions(api: Client) -> None:
    spot = await api.post(URL, json=body(category="spot"))
    linear = await api.post(URL, json=body(category="linear"))
    assert spot.status_code == linear.status_code == 201
    assert (spot.json()["endpoint"], linear.json()["endpoint"]) == ("spot", "linear")


async def test_list_filters_and_paginates(api: Client) -> None:
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        assert (await api.post(URL, json=body(symbol=symbol))).status_code == 201
    assert (await api.post(URL, json={"channel_type": "order", "requesting_service": "svc-b"})).status_code == 201

    page = (await api.get(URL, params={"requesting_service": "svc-a", "limit": 2, "offset": 0})).json()
    assert page["total"] == 3
    assert [i["symbol"] for i in page["items"]] == ["BTCUSDT", "ETHUSDT"]
    rest = (await api.get(URL, params={"requesting_service": "svc-a", "limit": 2, "offset": 2})).json()
    assert [i["symbol"] for i in rest["items"]] == ["SOLUSDT"]

    by_symbol = (await api.get(URL, params={"symbol": "ethusdt"})).json()
    assert [i["symbol"] for i in by_symbol["items"]] == ["ETHUSDT"]
    by_channel = (await api.get(URL, params={"channel_type": "order"})).json()
    assert [i["topic"] for i in by_channel["items"]] == ["order"]
    pending = (await api.get(URL, params={"status": "pending", "is_active": "true"})).json()
    assert pending["total"] == 4


async def test_get_returns_the_row_and_404_for_unknown_id(api: Client) -> None:
    created = (await api.post(URL, json=body())).json()
    assert (await api.get(f"{URL}/{created['id']}")).json() == created
    assert_error(await api.get(f"{URL}/{uuid.uuid4()}"), 404, "not_found")
    assert_error(await api.get(f"{URL}/not-a-uuid"), 404, "not_found")


async def test_delete_cancels_once_and_is_idempotent(api: Client) -> None:
    created = (await api.post(URL, json=body())).json()
    cancelled = await api.delete(f"{URL}/{created['id']}")
    assert cancelled.status_code == 200
    row = cancelled.json()
    assert (row["status"], row["is_active"]) == ("cancelled", False)
    assert row["cancelled_at"] is not None
    again = await api.delete(f"{URL}/{created['id']}")
    assert again.status_code == 200
    assert again.json() == row
    assert_error(await api.delete(f"{URL}/{uuid.uuid4()}"), 404, "not_found")


async def test_subscribing_again_after_cancel_creates_a_new_row(api: Client) -> None:
    first = (await api.post(URL, json=body())).json()
    await api.delete(f"{URL}/{first['id']}")
    second = await api.post(URL, json=body())
    assert second.status_code == 201
    assert second.json()["id"] != first["id"]


async def test_delete_by_service_cancels_only_that_services_live_rows(api: Client) -> None:
    for symbol in ("BTCUSDT", "ETHUSDT"):
        await api.post(URL, json=body(symbol=symbol))
    await api.post(URL, json=body(requesting_service="svc-b"))
    response = await api.delete(f"{URL}/by-service/svc-a")
    assert response.status_code == 200
    assert response.json() == {"cancelled": 2}
    assert (await api.delete(f"{URL}/by-service/svc-a")).json() == {"cancelled": 0}
    live = (await api.get(URL, params={"is_active": "true"})).json()
    assert [i["requesting_service"] for i in live["items"]] == ["svc-b"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (body(channel_type="nope"), "channel_type"),
        (body(symbol=None), "symbol"),
        ({"channel_type": "trades", "requesting_service": "svc-a"}, "symbol"),
        (body(channel_type="orderbook", depth=7), "depth"),
        (body(channel_type="kline", interval="2"), "interval"),
        (body(channel_type="kline"), "interval"),
        (body(channel_type="order"), "symbol"),
        (body(channel_type="liquidation", category="spot"), "category"),
        (body(category="futures"), "category"),
        (body(requesting_service=""), "requesting_service"),
        (body(requesting_service="has space"), "requesting_service"),
        (body(depth="fifty", channel_type="orderbook"), "depth"),
        (body(extra_field=1), "extra_field"),
    ],
)
async def test_invalid_request_is_400_naming_the_field(api: Client, payload: dict[str, Any], field: str) -> None:
    error = assert_error(await api.post(URL, json=payload), 400, "validation_error")
    assert field in error["message"]


async def test_wrong_depth_lists_allowed_values(api: Client) -> None:
    error = assert_error(await api.post(URL, json=body(channel_type="orderbook", depth=7)), 400)
    assert error["details"] == {"field": "depth", "allowed": ["1", "50", "200", "1000"]}


async def test_malformed_json_is_400(api: Client) -> None:
    response = await api.post(URL, content=b'{"channel_type": ', headers={"Content-Type": "application/json"})
    assert_error(response, 400, "malformed_request")


@pytest.mark.parametrize("content", [b"[]", b'"text"', b"null", b"12"])
async def test_json_that_is_not_an_object_is_400(api: Client, content: bytes) -> None:
    response = await api.post(URL, content=content, headers={"Content-Type": "application/json"})
    assert_error(response, 400)


async def test_oversized_body_is_400(api: Client) -> None:
    payload = body(symbol="X" * 200_000)
    assert_error(await api.post(URL, json=payload), 400, "body_too_large")


async def test_missing_or_wrong_key_is_401(api: Client) -> None:
    del api.headers["X-API-Key"]
    assert_error(await api.get(URL), 401, "unauthorized")
    assert_error(await api.post(URL, json=body()), 401, "unauthorized")
    assert_error(await api.get(URL, headers={"X-API-Key": "wrong"}), 401, "unauthorized")
    assert (await api.get(URL, headers={"X-API-Key": "second-key"})).status_code == 200


async def test_bad_pagination_is_400(api: Client) -> None:
    assert_error(await api.get(URL, params={"limit": 0}), 400)
    assert_error(await api.get(URL, params={"limit": 100_000}), 400)
    assert_error(await api.get(URL, params={"offset": -1}), 400)
    assert_error(await api.get(URL, params={"status": "sleeping"}), 400)


async def test_trace_id_is_taken_from_the_request_or_made(api: Client) -> None:
    given = await api.get(URL, headers={"X-Trace-Id": "trace-123"})
    assert given.headers["X-Trace-Id"] == "trace-123"
    made = await api.get(URL)
    assert len(made.headers["X-Trace-Id"]) == 32
    hostile = await api.get(URL, headers={"X-Trace-Id": "x" * 500})
    assert hostile.headers["X-Trace-Id"] != "x" * 500


async def test_unknown_route_and_method_use_the_error_shape(api: Client) -> None:
    assert_error(await api.get("/api/v1/nothing-here"), 404, "not_found")
    assert_error(await api.put(URL, json={}), 405, "method_not_allowed")


async def test_writes_beyond_the_per_key_rate_get_429_in_the_error_shape(api_settings: ApiSettings) -> None:
    settings = msgspec.structs.replace(api_settings, write_rate=0.5, write_burst=3)
    async with api_client(settings, API_KEY) as client:
        statuses = [(await client.post(URL, json=body(symbol=f"SYM{i}USDT"))).status_code for i in range(4)]
        assert statuses == [201, 201, 201, 429]
        limited = await client.post(URL, json=body(symbol="OTHERUSDT"))
        assert_error(limited, 429, "rate_limited")
        assert int(limited.headers["Retry-After"]) >= 1
        assert (await client.get(URL)).status_code == 200  # reads are not limited
        other_key = await client.post(URL, json=body(symbol="ELSEUSDT"), headers={"X-API-Key": "second-key"})
        assert other_key.status_code == 201  # the limit is per key


async def test_unknown_query_parameter_is_400_naming_it(api: Client) -> None:
    error = assert_error(await api.get(URL, params={"service": "svc-a"}), 400, "validation_error")
    assert error["details"] == {"unknown": ["service"]}


async def test_a_nul_character_in_a_query_filter_is_400_not_500(api: Client) -> None:
    # Found by schemathesis: PostgreSQL text cannot hold NUL, and the filter used to fail in the database.
    error = assert_error(await api.get(URL, params={"requesting_service": "svc\x00a"}), 400, "validation_error")
    assert error["details"] == {"fields": ["requesting_service"]}
