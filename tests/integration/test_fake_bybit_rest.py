"""The fake's REST endpoints are never kinder than Bybit's v5 docs: open orders only on `order/realtime`,
closed orders (with their retention) on `order/history`, no flat positions by settle coin, no zero coins,
paged lists with percent-encoded cursors, honoured limits and 7-day windows, and rate limits that bite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.fake_bybit import FakeBybit
from tests.fake_bybit.rest import rest_signature
from tests.support.clock import Clock

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def fake(clock: Clock) -> AsyncIterator[FakeBybit]:
    async with FakeBybit(accounts={"key": "secret"}, auto_push=False, clock=clock) as server:
        yield server


async def get(fake: FakeBybit, path: str, query: str) -> dict[str, Any]:
    """A signed GET with `query` sent exactly as given (no encoding added), as pybit sends it."""
    timestamp = str(fake.now_ms())
    headers = {
        "X-BAPI-API-KEY": "key",
        "X-BAPI-TIMESTAMP": timestamp,
        "X-BAPI-RECV-WINDOW": "5000",
        "X-BAPI-SIGN": rest_signature("secret", timestamp, "key", "5000", query),
    }
    base = fake.url.replace("ws://", "http://")
    async with httpx.AsyncClient(base_url=base) as client:
        response = await client.get(f"{path}?{query}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def listed(fake: FakeBybit, path: str, query: str) -> list[dict[str, Any]]:
    body = await get(fake, path, query)
    assert body["retCode"] == 0, body
    rows: list[dict[str, Any]] = body["result"]["list"]
    return rows


async def test_open_orders_lists_only_open_ones_and_linear_needs_a_settle_coin(fake: FakeBybit) -> None:
    live = await fake.push_account("order", status="New")
    gone = await fake.push_account("order", status="New")
    await fake.push_account("order", status="Cancelled", order_id=gone["data"][0]["orderId"])
    rows = await listed(fake, "/v5/order/realtime", "category=linear&settleCoin=USDT")
    refused = await get(fake, "/v5/order/realtime", "category=linear")
    assert [row["orderId"] for row in rows] == [live["data"][0]["orderId"]]
    assert refused["retCode"] == 10001


async def test_order_history_keeps_cancelled_orders_a_day_and_filled_ones_a_week(fake: FakeBybit, clock: Clock) -> None:
    cancelled = (await fake.push_account("order", status="Cancelled"))["data"][0]["orderId"]
    filled = (await fake.push_account("order", status="Filled"))["data"][0]["orderId"]
    await fake.push_account("order", status="New")
    clock.forward(10)  # the factory's times run ahead of a frozen clock by a millisecond per push
    first = await listed(fake, "/v5/order/history", "category=linear")
    clock.forward(DAY_MS + 1)
    next_day = await listed(fake, "/v5/order/history", "category=linear")
    by_id = await listed(fake, "/v5/order/history", f"category=linear&orderId={cancelled}")
    assert {row["orderId"] for row in first} == {cancelled, filled}  # never the open one
    assert [row["orderId"] for row in next_day] == [filled]
    assert by_id == []


async def test_positions_by_settle_coin_omit_flat_ones_and_by_symbol_do_not(fake: FakeBybit) -> None:
    await fake.push_account("position", symbol="BTCUSDT", size="0.5")
    await fake.push_account("position", symbol="ETHUSDT", size="0.5")
    await fake.push_account("position", symbol="ETHUSDT", size="0")
    by_coin = await listed(fake, "/v5/position/list", "category=linear&settleCoin=USDT")
    by_symbol = await listed(fake, "/v5/position/list", "category=linear&symbol=ETHUSDT")
    refused = await get(fake, "/v5/position/list", "category=linear")
    assert [row["symbol"] for row in by_coin] == ["BTCUSDT"]
    assert [(row["symbol"], row["size"]) for row in by_symbol] == [("ETHUSDT", "0")]
    assert refused["retCode"] == 10001


async def test_wallet_balance_omits_zero_coins_unless_asked_for_by_name(fake: FakeBybit) -> None:
    await fake.push_account("wallet", coins={"USDT": "100", "BTC": "1"})
    await fake.push_account("wallet", coins={"BTC": "0"})
    default = await listed(fake, "/v5/account/wallet-balance", "accountType=UNIFIED")
    named = await listed(fake, "/v5/account/wallet-balance", "accountType=UNIFIED&coin=USDT,BTC")
    assert [coin["coin"] for coin in default[0]["coin"]] == ["USDT"]
    assert {coin["coin"]: coin["walletBalance"] for coin in named[0]["coin"]} == {"USDT": "100", "BTC": "0"}


async def test_executions_page_with_percent_encoded_cursors_sent_as_they_came(fake: FakeBybit, clock: Clock) -> None:
    for _ in range(6):
        await fake.push_account("execution", fills=20)  # 120 fills
    clock.forward(10)
    first = await get(fake, "/v5/execution/list", "category=linear")
    cursor = first["result"]["nextPageCursor"]
    assert len(first["result"]["list"]) == 50  # "Default: `50`"
    assert "%3D" in cursor  # an opaque, percent-encoded token
    assert "=" not in cursor
    seen = [row["execId"] for row in first["result"]["list"]]
    while cursor:
        page = await get(fake, "/v5/execution/list", f"category=linear&limit=100&cursor={cursor}")
        assert page["retCode"] == 0, page
        seen += [row["execId"] for row in page["result"]["list"]]
        cursor = page["result"]["nextPageCursor"]
    assert len(seen) == len(set(seen)) == 120
    times = [int(row["execTime"]) for row in await listed(fake, "/v5/execution/list", "category=linear&limit=100")]
    assert times == sorted(times, reverse=True)  # newest first


async def test_a_cursor_encoded_twice_or_reused_on_another_query_is_refused(fake: FakeBybit, clock: Clock) -> None:
    await fake.push_account("execution", fills=3)
    clock.forward(10)
    cursor = (await get(fake, "/v5/execution/list", "category=linear&limit=1"))["result"]["nextPageCursor"]
    twice = await get(fake, "/v5/execution/list", urlencode({"category": "linear", "limit": "1", "cursor": cursor}))
    elsewhere = await get(fake, "/v5/execution/list", f"category=linear&symbol=ETHUSDT&cursor={cursor}")
    assert quote(cursor, safe="") != cursor
    assert twice["retCode"] == 10001
    assert elsewhere["retCode"] == 10001


@pytest.mark.parametrize(("path", "query"), [("/v5/execution/list", "limit=101"), ("/v5/order/history", "limit=51")])
async def test_a_limit_past_the_documented_maximum_is_refused(fake: FakeBybit, path: str, query: str) -> None:
    assert (await get(fake, path, f"category=linear&{query}"))["retCode"] == 10001


async def test_option_executions_default_to_btc_base_coin(fake: FakeBybit, clock: Clock) -> None:
    await fake.push_account("execution", category="option", symbol="BTC-30DEC26-100000-C")
    await fake.push_account("execution", category="option", symbol="ETH-30DEC26-5000-C")
    clock.forward(10)
    default = await listed(fake, "/v5/execution/list", "category=option")
    eth = await listed(fake, "/v5/execution/list", "category=option&baseCoin=ETH")
    assert [row["symbol"] for row in default] == ["BTC-30DEC26-100000-C"]
    assert [row["symbol"] for row in eth] == ["ETH-30DEC26-5000-C"]


async def test_executions_come_in_seven_day_windows_and_older_ones_are_gone(fake: FakeBybit, clock: Clock) -> None:
    old = (await fake.push_account("execution"))["data"][0]["execId"]
    clock.forward(3 * DAY_MS)
    recent = (await fake.push_account("execution"))["data"][0]["execId"]
    clock.forward(10)
    start = fake.now_ms() - 3 * DAY_MS - 1000
    window = await listed(fake, "/v5/execution/list", f"category=linear&startTime={start}")
    wide = await get(fake, "/v5/execution/list", f"category=linear&startTime={start - 8 * DAY_MS}&endTime={start}")
    clock.forward(5 * DAY_MS)
    later = await listed(fake, "/v5/execution/list", f"category=linear&startTime={start}")
    assert {row["execId"] for row in window} == {old, recent}
    assert wide["retCode"] == 10001  # "endTime - startTime <= 7 days"
    assert [row["execId"] for row in later] == [recent]  # past the fake's 7-day retention


async def test_banned_rest_answers_403_and_throttled_rest_answers_10006(fake: FakeBybit) -> None:
    fake.throttle_rest(1)
    throttled = await get(fake, "/v5/order/realtime", "category=spot")
    fine = await get(fake, "/v5/order/realtime", "category=spot")
    fake.ban_rest(600)
    async with httpx.AsyncClient(base_url=fake.url.replace("ws://", "http://")) as client:
        banned = await client.get("/v5/order/realtime?category=spot")
    assert throttled["retCode"] == 10006
    assert fine["retCode"] == 0
    assert banned.status_code == 403
    assert banned.text == "access too frequent"


async def test_new_connections_past_the_rate_limit_are_refused_with_403() -> None:
    async with FakeBybit(auto_push=False, max_new_connections=2, connection_window=60) as fake:
        for _ in range(2):
            async with connect(f"{fake.url}/v5/public/linear"):
                pass
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{fake.url}/v5/public/linear"):
                pass
    assert refused.value.response.status_code == 403
    assert fake.rate_limited_handshakes == 1
    assert len(fake.connections) == 2
