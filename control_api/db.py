"""PostgreSQL access for the API: the engine, and a transaction that answers 503 instead of hanging.

Every request's database work runs inside `Database.transaction()`, bounded by the configured timeout; a
connection failure or timeout becomes `DatabaseUnavailable`, which the error handler turns into a 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from control_api.errors import DatabaseUnavailable
from shared import schema

# What "the database is unreachable" looks like from SQLAlchemy over asyncpg. Integrity and programming
# errors are not here on purpose: they are bugs or conflicts, not outages.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
)


def is_unavailable(error: BaseException) -> bool:
    if isinstance(error, UNAVAILABLE_ERRORS):
        return True
    return isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated


def create_engine(database_url: str, timeout: float) -> AsyncEngine:
    return schema.create_engine(database_url, timeout, pool_size=10, max_overflow=10)


class Database:
    """Owns the engine; hands out bounded transactions."""

    def __init__(self, engine: AsyncEngine, timeout: float) -> None:
        self.engine = engine
        self.timeout = timeout
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One transaction, committed on success; outages and timeouts raise DatabaseUnavailable."""
        try:
            async with asyncio.timeout(self.timeout), self._sessions() as session, session.begin():
                yield session
        except Exception as error:
            if is_unavailable(error):
                raise DatabaseUnavailable("the database is unavailable", {"reason": type(error).__name__}) from error
            raise

    async def ping(self) -> bool:
        try:
            async with self.transaction() as session:
                await session.execute(text("SELECT 1"))
        except DatabaseUnavailable:
            return False
        return True

    async def close(self) -> None:
        await self.engine.dispose()
