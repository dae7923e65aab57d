"""Real PostgreSQL databases and RabbitMQ vhosts, each uniquely named and removed after the test.

URLs come from environment variables with the defaults of our machines:
TEST_POSTGRES_URL (admin connection, default postgresql://postgres@127.0.0.1:5432/postgres) and
TEST_RABBITMQ_URL (default amqp://guest:guest@127.0.0.1:5672/).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
from alembic.config import Config

from alembic import command

REPO_ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


def database_url(name: str, driver: str = "postgresql+asyncpg") -> str:
    parts = urlsplit(POSTGRES_URL)
    return urlunsplit(parts._replace(scheme=driver, path=f"/{name}"))


def alembic_config(url: str) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logging"] = False
    return config


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _new_deployment_id(name: str) -> None:
    connection = await asyncpg.connect(database_url(name, driver="postgresql"))
    try:
        await connection.execute(NEW_DEPLOYMENT_ID)
    finally:
        await connection.close()


# A copy of a migrated database would keep the template's deployment id; each test database is a deployment.
NEW_DEPLOYMENT_ID = "UPDATE desired_state SET deployment_id = replace(gen_random_uuid()::text, '-', '')"


def create_database(name: str, template: str | None = None) -> str:
    clause = f' TEMPLATE "{template}"' if template else ""
    asyncio.run(_admin(f'CREATE DATABASE "{name}"{clause}'))
    if template:
        asyncio.run(_new_deployment_id(name))
    return database_url(name)


def drop_database(name: str) -> None:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def migrate(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def create_vhost(name: str) -> str:
    """A vhost of our own, so fixed exchange and queue names cannot collide between tests."""
    user = urlsplit(RABBITMQ_URL).username or "guest"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
    return vhost_url(name)


def vhost_url(name: str, base: str = RABBITMQ_URL) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{quote(name, safe='')}"))


def delete_vhost(name: str) -> None:
    _rabbitmqctl("delete_vhost", name)
