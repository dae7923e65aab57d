"""Wallet pushes into `account_balances`, `account_totals` and the append-only history.

Idempotent by Bybit's message id (a replayed or re-fetched message changes nothing), and newer-wins by
exchange time, so an old message arriving late never overwrites a newer balance. Never dropped: the hand-off
queue is bounded and blocks the private reader when full, and an outage is retried until it lands.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from loguru import logger
from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.backoff import Backoff, retry
from shared.schema import (
    ACCOUNT_DECIMAL_FIELDS,
    COIN_BOOL_FIELDS,
    COIN_DECIMAL_FIELDS,
    AccountBalanceHistoryRow,
    AccountBalanceRow,
    AccountTotalsRow,
)
from stream_worker.envelopes.normalize import WalletUpdate
from stream_worker.state.persistence import DATABASE_ERRORS, Store

COIN_COLUMNS = tuple(column for _, column in (*COIN_DECIMAL_FIELDS, *COIN_BOOL_FIELDS))
ACCOUNT_COLUMNS = tuple(column for _, column in ACCOUNT_DECIMAL_FIELDS)


async def load_held_coins(engine: AsyncEngine, timeout: float, account_type: str) -> dict[str, str]:
    """Coins stored with a non-zero balance, equity or borrowing, each with the message id that set it."""
    held = or_(
        AccountBalanceRow.wallet_balance != 0, AccountBalanceRow.equity != 0, AccountBalanceRow.borrow_amount != 0
    )
    query = select(AccountBalanceRow.coin, AccountBalanceRow.message_id).where(
        AccountBalanceRow.account_type == account_type, held
    )
    async with asyncio.timeout(timeout), engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    return {row.coin: row.message_id for row in rows}


async def save_wallets(engine: AsyncEngine, timeout: float, updates: Sequence[WalletUpdate]) -> None:
    async with asyncio.timeout(timeout), engine.begin() as connection:
        for update in updates:
            account = update.account
            account_type = account.account_type
            stamp = {"message_id": update.message_id, "exchange_ts": update.exchange_ts}
            totals = {column: getattr(account, column) for column in ACCOUNT_COLUMNS}
            statement = insert(AccountTotalsRow).values(account_type=account_type, **totals, **stamp)
            await connection.execute(
                statement.on_conflict_do_update(
                    index_elements=[AccountTotalsRow.account_type],
                    set_={**totals, **stamp, "updated_at": statement.excluded.updated_at},
                    where=AccountTotalsRow.exchange_ts <= statement.excluded.exchange_ts,
                )
            )
            for coin in account.coin:
                fields: dict[str, Any] = {column: getattr(coin, column) for column in COIN_COLUMNS}
                key = {"account_type": account_type, "coin": coin.coin}
                history = insert(AccountBalanceHistoryRow).values(**key, **fields, **stamp)
                await connection.execute(
                    history.on_conflict_do_nothing(constraint="uq_account_balance_history_message")
                )
                latest = insert(AccountBalanceRow).values(**key, **fields, **stamp)
                await connection.execute(
                    latest.on_conflict_do_update(
                        index_elements=[AccountBalanceRow.account_type, AccountBalanceRow.coin],
                        set_={**fields, **stamp, "updated_at": latest.excluded.updated_at},
                        where=AccountBalanceRow.exchange_ts <= latest.excluded.exchange_ts,
                    )
                )


class BalanceWriter:
    def __init__(
        self,
        store: Store,
        *,
        capacity: int = 1_000,
        retry_cap: float = 10.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._queue: asyncio.Queue[WalletUpdate] = asyncio.Queue(maxsize=capacity)
        self._backoff = Backoff(0.2, retry_cap, rng or random.Random())
        self._sleep = sleep
        self.written = 0
        self.failed_writes = 0

    async def put(self, update: WalletUpdate) -> None:
        await self._queue.put(update)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def wait_drained(self) -> None:
        await self._queue.join()

    def _on_error(self, error: BaseException, delay: float) -> None:
        self.failed_writes += 1
        logger.bind(error=type(error).__name__, retry_in_s=round(delay, 2)).warning(
            "could not store balances; will retry"
        )

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < 100:
                batch.append(self._queue.get_nowait())
            await retry(
                functools.partial(save_wallets, self._store.engine, self._store.timeout, batch),
                errors=DATABASE_ERRORS,
                backoff=self._backoff,
                on_error=self._on_error,
                sleep=self._sleep,
            )
            self.written += len(batch)
            for _ in batch:
                self._queue.task_done()
