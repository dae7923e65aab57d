"""`/api/v1/balances`: the latest wallet state the worker stored, and its history."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from litestar import Controller, get
from litestar.params import FromQuery, QueryParameter
from sqlalchemy import Select, select

from control_api.routes.common import MAX_EPOCH_MS, MAX_OFFSET, MAX_PAGE, Db, error_responses, paginate
from shared.api import AccountTotals, BalanceHistoryPage, Balances, CoinBalance
from shared.schema import (
    ACCOUNT_DECIMAL_FIELDS,
    COIN_BOOL_FIELDS,
    COIN_DECIMAL_FIELDS,
    AccountBalanceHistoryRow,
    AccountBalanceRow,
    AccountTotalsRow,
)


def coin_from_row(row: AccountBalanceRow | AccountBalanceHistoryRow) -> CoinBalance:
    fields: dict[str, Decimal | bool | None] = {
        bybit: getattr(row, column) for bybit, column in (*COIN_DECIMAL_FIELDS, *COIN_BOOL_FIELDS)
    }
    updated_at = row.updated_at if isinstance(row, AccountBalanceRow) else row.recorded_at
    return CoinBalance(
        account_type=row.account_type,
        coin=row.coin,
        message_id=row.message_id,
        exchange_ts=row.exchange_ts,
        updated_at=updated_at,
        **fields,  # type: ignore[arg-type]
    )


def totals_from_row(row: AccountTotalsRow) -> AccountTotals:
    fields = {bybit: getattr(row, column) for bybit, column in ACCOUNT_DECIMAL_FIELDS}
    return AccountTotals(
        account_type=row.account_type,
        message_id=row.message_id,
        exchange_ts=row.exchange_ts,
        updated_at=row.updated_at,
        **fields,
    )


def EpochMs(description: str) -> Any:
    return QueryParameter(ge=0, le=MAX_EPOCH_MS, description=description)


class BalanceController(Controller):
    path = "/balances"
    tags = ["balances"]

    @get("/", summary="Latest balance per coin and the account totals", responses=error_responses(401, 503))
    async def latest(self, db: Db) -> Balances:
        async with db.transaction() as session:
            totals = (await session.scalars(select(AccountTotalsRow).order_by(AccountTotalsRow.account_type))).all()
            coins = (
                await session.scalars(
                    select(AccountBalanceRow).order_by(AccountBalanceRow.account_type, AccountBalanceRow.coin)
                )
            ).all()
        return Balances(accounts=[totals_from_row(r) for r in totals], coins=[coin_from_row(r) for r in coins])

    @get(
        "/history",
        summary="Balance history of coins over a time range (exchange time, UTC epoch ms)",
        responses=error_responses(400, 401, 503),
    )
    async def history(
        self,
        db: Db,
        coin: FromQuery[str | None] = None,
        account_type: FromQuery[str | None] = None,
        start_ts: Annotated[
            int | None, QueryParameter(ge=0, le=MAX_EPOCH_MS, description="inclusive, UTC epoch ms")
        ] = None,
        end_ts: Annotated[
            int | None, QueryParameter(ge=0, le=MAX_EPOCH_MS, description="exclusive, UTC epoch ms")
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 100,
        offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
    ) -> BalanceHistoryPage:
        query: Select[Any] = select(AccountBalanceHistoryRow)
        if coin is not None:
            query = query.where(AccountBalanceHistoryRow.coin == coin.strip().upper())
        if account_type is not None:
            query = query.where(AccountBalanceHistoryRow.account_type == account_type.strip().upper())
        if start_ts is not None:
            query = query.where(AccountBalanceHistoryRow.exchange_ts >= start_ts)
        if end_ts is not None:
            query = query.where(AccountBalanceHistoryRow.exchange_ts < end_ts)
        async with db.transaction() as session:
            order = (AccountBalanceHistoryRow.exchange_ts, AccountBalanceHistoryRow.id)
            total, rows = await paginate(session, query, order, limit, offset)
        return BalanceHistoryPage(items=[coin_from_row(r) for r in rows], total=total, limit=limit, offset=offset)
