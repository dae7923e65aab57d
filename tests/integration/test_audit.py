"""The audit trail: one row per write request, whatever its outcome, and `GET /api/v1/audit` to read it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from control_api.security import key_id
from control_api.settings import ApiSettings
from tests.conftest import API_KEY
from tests.integration.test_access_control import READ_A, WRITE_A, as_key, scoped_settings, trades
from tests.support.apiserver import api_client

URL = "/api/v1/subscriptions"
AUDIT = "/api/v1/audit"


@pytest.fixture
async def client(api_settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(scoped_settings(api_settings), API_KEY) as api:
        yield api


async def audit_rows(api: httpx.AsyncClient, **filters: Any) -> list[dict[str, Any]]:
    response = await api.get(AUDIT, params={"limit": 500, **filters})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items[::-1]  # oldest first, as the writes were made


def summary(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["key_id"], row["action"], row["service"], row["subscription_id"], row["result"], row["status"])


async def test_audit_rows_match_the_writes_exactly_including_refused_and_failed_ones(
    client: httpx.AsyncClient,
) -> None:
    admin, writer, reader = key_id(API_KEY), key_id(WRITE_A), key_id(READ_A)
    b = (await client.post(URL, json=trades("svc-b"))).json()["id"]
    a = (await client.post(URL, json=trades("svc-a"), headers=as_key(WRITE_A))).json()["id"]
    assert (await client.post(URL, json=trades("svc-a"), headers=as_key(WRITE_A))).status_code == 200
    assert (await client.post(URL, json=trades("svc-b"), headers=as_key(WRITE_A))).status_code == 403
    assert (await client.post(URL, json=trades("svc-a", "SOLUSDT"), headers=as_key(READ_A))).status_code == 403
    bad_depth = {"channel_type": "orderbook", "requesting_service": "svc-a", "symbol": "BTCUSDT", "depth": 7}
    assert (await client.post(URL, json=bad_depth, headers=as_key(WRITE_A))).status_code == 400
    malformed = await client.post(
        URL, content=b'{"channel_type": ', headers={**as_key(WRITE_A), "Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    assert (await client.delete(f"{URL}/{a}", headers=as_key(WRITE_A))).status_code == 200
    assert (await client.delete(f"{URL}/{a}", headers=as_key(WRITE_A))).status_code == 200
    missing = uuid.uuid4()
    assert (await client.delete(f"{URL}/{missing}", headers=as_key(WRITE_A))).status_code == 404
    assert (await client.delete(f"{URL}/{b}", headers=as_key(WRITE_A))).status_code == 403
    assert (await client.delete(f"{URL}/by-service/svc-a", headers=as_key(WRITE_A))).json() == {"cancelled": 0}
    assert (await client.delete(f"{URL}/by-service/svc-b")).json() == {"cancelled": 1}
    assert (await client.post(URL, json=trades("svc-a"), headers=as_key("no-such-key"))).status_code == 401
    assert (await client.get(URL, headers=as_key(WRITE_A))).status_code == 200  # reads are not audited

    rows = await audit_rows(client)
    assert [summary(row) for row in rows] == [
        (admin, "create", "svc-b", b, "created", 201),
        (writer, "create", "svc-a", a, "created", 201),
        (writer, "create", "svc-a", a, "existing", 200),
        (writer, "create", "svc-b", None, "forbidden", 403),
        (reader, "create", "svc-a", None, "forbidden", 403),
        (writer, "create", "svc-a", None, "invalid", 400),
        (writer, "create", None, None, "invalid", 400),
        (writer, "cancel", "svc-a", a, "cancelled", 200),
        (writer, "cancel", "svc-a", a, "unchanged", 200),
        (writer, "cancel", None, str(missing), "not_found", 404),
        (writer, "cancel", "svc-b", b, "forbidden", 403),
        (writer, "cancel_service", "svc-a", None, "unchanged", 200),
        (admin, "cancel_service", "svc-b", None, "cancelled", 200),
    ]
    assert rows[1]["detail"] == {"endpoint": "linear", "topic": "publicTrade.BTCUSDT"}
    assert rows[3]["detail"] == {"code": "forbidden"}
    assert (rows[5]["detail"], rows[6]["detail"]) == ({"code": "validation_error"}, {"code": "malformed_request"})
    assert rows[-1]["detail"] == {"cancelled": 1}
    assert {row["role"] for row in rows} == {"admin", "write", "read"}
    assert all(len(row["trace_id"]) >= 8 for row in rows)
    for key in (API_KEY, WRITE_A, READ_A):
        assert key not in str(rows)


async def test_an_audit_row_carries_the_requests_trace_id(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json=trades("svc-a"), headers={**as_key(WRITE_A), "X-Trace-Id": "audit-trace-1"})
    [row] = await audit_rows(client, trace_id="audit-trace-1")
    assert (row["subscription_id"], row["result"]) == (response.json()["id"], "created")


async def test_a_change_and_its_audit_row_commit_together(client: httpx.AsyncClient, database_url: str) -> None:
    """Every subscription row and outbox notice has its audit row, and nothing else does (read in SQL)."""
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        await client.post(URL, json=trades("svc-a", symbol), headers=as_key(WRITE_A))
    await client.delete(f"{URL}/by-service/svc-a", headers=as_key(WRITE_A))
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        created = {r["id"] for r in await connection.fetch("SELECT id FROM subscriptions")}
        audited = {
            r["subscription_id"]
            for r in await connection.fetch("SELECT subscription_id FROM audit_log WHERE result = 'created'")
        }
        revision = await connection.fetchval("SELECT revision FROM desired_state")
        changes = await connection.fetchval("SELECT count(*) FROM audit_log WHERE result IN ('created', 'cancelled')")
    finally:
        await connection.close()
    assert created == audited
    assert revision == changes == 4  # each change bumped the revision once and left one audit row


async def test_rate_limited_writes_are_audited(api_settings: ApiSettings) -> None:
    async with api_client(scoped_settings(api_settings, write_rate=0.01, write_burst=2), API_KEY) as client:
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert (await client.post(URL, json=trades("svc-a", symbol), headers=as_key(WRITE_A))).status_code == 201
        limited = await client.delete(f"{URL}/by-service/svc-a", headers=as_key(WRITE_A))
        assert limited.status_code == 429
        also_limited = await client.post(URL, json=trades("svc-a", "SOLUSDT"), headers=as_key(WRITE_A))
        assert also_limited.status_code == 429
        rows = await audit_rows(client, result="rate_limited")
    assert [summary(row) for row in rows] == [
        (key_id(WRITE_A), "cancel_service", "svc-a", None, "rate_limited", 429),
        (key_id(WRITE_A), "create", None, None, "rate_limited", 429),  # refused before its body was read
    ]


async def test_audit_route_filters_and_pages(client: httpx.AsyncClient) -> None:
    before_ms = int(time.time() * 1000) - 1000
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        await client.post(URL, json=trades("svc-a", symbol), headers=as_key(WRITE_A))
    first = (await client.post(URL, json=trades("svc-b"))).json()["id"]
    await client.delete(f"{URL}/{first}")
    await client.post(URL, json=trades("svc-b"), headers=as_key(WRITE_A))

    page = (await client.get(AUDIT, params={"limit": 2})).json()
    assert (page["total"], page["limit"], page["offset"], len(page["items"])) == (6, 2, 0, 2)
    assert page["items"][0]["result"] == "forbidden"  # newest first
    rest = (await client.get(AUDIT, params={"limit": 2, "offset": 4})).json()
    assert [item["result"] for item in rest["items"]] == ["created", "created"]

    async def count(**filters: Any) -> int:
        response = await client.get(AUDIT, params=filters)
        assert response.status_code == 200, response.text
        total: int = response.json()["total"]
        return total

    assert await count(key_id=key_id(WRITE_A)) == 4
    assert await count(service="svc-b") == 3
    assert await count(action="cancel") == 1
    assert await count(result="forbidden") == 1
    assert await count(subscription_id=first) == 2
    assert await count(start_ts=before_ms) == 6
    assert await count(end_ts=before_ms) == 0
    assert await count(service="svc-a", result="created") == 3
    bad = await client.get(AUDIT, params={"action": "explode"})
    assert bad.status_code == 400


async def test_only_admin_keys_read_the_audit_trail(client: httpx.AsyncClient) -> None:
    await client.post(URL, json=trades("svc-a"), headers=as_key(WRITE_A))
    for key in (WRITE_A, READ_A):
        response = await client.get(AUDIT, headers=as_key(key))
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
    assert (await client.get(AUDIT, headers=as_key("second-key"))).json()["total"] == 1


async def test_concurrent_identical_creates_leave_one_created_and_the_rest_existing(
    client: httpx.AsyncClient,
) -> None:
    responses = await asyncio.gather(
        *(client.post(URL, json=trades("svc-a"), headers=as_key(WRITE_A)) for _ in range(8))
    )
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    results = sorted(row["result"] for row in await audit_rows(client))
    assert results == ["created"] + ["existing"] * 7


async def test_snapshot_requests_are_scoped_and_audited(client: httpx.AsyncClient, database_url: str) -> None:
    a = (await client.post(URL, json=trades("svc-a"), headers=as_key(WRITE_A))).json()["id"]
    b = (await client.post(URL, json=trades("svc-b"))).json()["id"]
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:  # no worker runs here: make them live as an ack would
        await connection.execute("UPDATE subscriptions SET status = 'active'")
    finally:
        await connection.close()
    assert (await client.post(f"{URL}/{a}/snapshot", headers=as_key(WRITE_A))).status_code == 202
    assert (await client.post(f"{URL}/{b}/snapshot", headers=as_key(WRITE_A))).status_code == 403
    assert (await client.post(f"{URL}/{a}/snapshot", headers=as_key(READ_A))).status_code == 403
    rows = [summary(r) for r in await audit_rows(client, action="snapshot")]
    writer, reader = key_id(WRITE_A), key_id(READ_A)
    assert rows == [
        (writer, "snapshot", "svc-a", a, "requested", 202),
        (writer, "snapshot", "svc-b", b, "forbidden", 403),
        (reader, "snapshot", "svc-a", a, "forbidden", 403),
    ]
