"""Balances written by the worker are served exactly: NUMERIC in, decimal strings out, empty means null."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from shared.schema import AccountBalanceHistoryRow, AccountBalanceRow, AccountTotalsRow


@pytest.fixture
async def seeded(database_url: str) -> None:
    engine = create_async_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(
            insert(AccountTotalsRow).values(
                account_type="UNIFIED",
                total_equity=Decimal("10262.91335023"),
                total_perp_upl=Decimal("-1.5"),
                message_id="m2",
                exchange_ts=2000,
            )
        )
        await connection.execute(
            insert(AccountBalanceRow).values(
                account_type="UNIFIED",
                coin="BTC",
                equity=Decimal("0.00102964"),
                cum_realised_pnl=Decimal("-0.00000973"),
                total_order_im=None,
                collateral_switch=True,
                message_id="m2",
                exchange_ts=2000,
            )
        )
        for ts, message in ((1000, "m1"), (2000, "m2"), (3000, "m3")):
            await connection.execute(
                insert(AccountBalanceHistoryRow).values(
                    account_type="UNIFIED", coin="BTC", equity=Decimal(ts), message_id=message, exchange_ts=ts
                )
            )
        await connection.execute(
            insert(AccountBalanceHistoryRow).values(
                account_type="UNIFIED", coin="USDT", equity=Decimal(5), message_id="m2", exchange_ts=2000
            )
        )
    await engine.dispose()


@pytest.mark.usefixtures("seeded")
async def test_latest_balances_keep_every_digit_and_sign(api: httpx.AsyncClient) -> None:
    body = (await api.get("/api/v1/balances")).json()
    (account,) = body["accounts"]
    assert account["totalEquity"] == "10262.91335023"
    assert account["totalPerpUPL"] == "-1.5"
    assert account["totalWalletBalance"] is None
    (btc,) = body["coins"]
    assert (btc["coin"], btc["equity"], btc["cumRealisedPnl"]) == ("BTC", "0.00102964", "-0.00000973")
    assert btc["totalOrderIM"] is None
    assert btc["collateralSwitch"] is True


@pytest.mark.usefixtures("seeded")
async def test_history_filters_by_coin_and_time_range_and_paginates(api: httpx.AsyncClient) -> None:
    page = (await api.get("/api/v1/balances/history", params={"coin": "btc"})).json()
    assert page["total"] == 3
    assert [item["message_id"] for item in page["items"]] == ["m1", "m2", "m3"]
    ranged = (
        await api.get("/api/v1/balances/history", params={"coin": "BTC", "start_ts": 1500, "end_ts": 3000})
    ).json()
    assert [item["exchange_ts"] for item in ranged["items"]] == [2000]
    second = (await api.get("/api/v1/balances/history", params={"limit": 2, "offset": 2})).json()
    assert second["total"] == 4
    assert len(second["items"]) == 2
    bad = await api.get("/api/v1/balances/history", params={"start_ts": "yesterday"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "validation_error"


async def test_balances_need_the_api_key(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/v1/balances", headers={"X-API-Key": "nope"})
    assert response.status_code == 401
