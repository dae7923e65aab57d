"""Alembic environment: runs migrations over the async engine named by DATABASE_URL.

A caller (the test suite, the dev launcher) may pass a URL in `config.attributes["database_url"]` instead.
"""

from __future__ import annotations

import asyncio
import os

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from shared.logformat import configure_logging
from shared.schema import metadata

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"

config = context.config
if config.attributes.get("configure_logging", True):
    # The same lines as the services write (LOG_FORMAT / LOG_LEVEL), so a deploy's log has one format.
    configure_logging("alembic", os.environ.get("LOG_LEVEL", "info"), os.environ.get("LOG_FORMAT", "auto"))


def database_url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    return str(url)


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=metadata, literal_binds=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_async_engine(database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
