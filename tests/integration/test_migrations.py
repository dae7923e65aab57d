"""Alembic is the only way the schema changes: up from empty, down to nothing, and in step with the models."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import command
from shared.schema import metadata
from tests.support import services

TABLES = {
    "subscriptions",
    "desired_state",
    "outbox",
    "account_balances",
    "account_balance_history",
    "account_totals",
    "account_open_items",
    "worker_heartbeats",
    "worker_members",
    "leases",
    "connect_budgets",
    "audit_log",
}


@pytest.fixture
def empty_database() -> Iterator[str]:
    name = services.unique_name("wsg_migrate")
    yield services.create_database(name)
    services.drop_database(name)


def tables(url: str) -> set[str]:
    async def query() -> set[str]:
        connection = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        finally:
            await connection.close()
        return {row["tablename"] for row in rows} - {"alembic_version"}

    return asyncio.run(query())


def schema_differences(url: str) -> list[object]:
    def compare(connection: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))

    async def run() -> list[object]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(compare)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_upgrade_head_on_an_empty_database_creates_every_table(empty_database: str) -> None:
    command.upgrade(services.alembic_config(empty_database), "head")
    assert tables(empty_database) == TABLES


def test_migrated_schema_matches_the_models(empty_database: str) -> None:
    command.upgrade(services.alembic_config(empty_database), "head")
    assert schema_differences(empty_database) == []


def test_downgrade_base_removes_everything_and_upgrade_works_again(empty_database: str) -> None:
    config = services.alembic_config(empty_database)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    assert tables(empty_database) == set()
    command.upgrade(config, "head")
    assert tables(empty_database) == TABLES
