"""libpq's `sslmode` in DATABASE_URL reaches the driver: both services' engines honour it against a real server."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from control_api.db import create_engine as api_engine
from stream_worker.state.persistence import create_engine as worker_engine


async def server_has_tls(database_url: str) -> bool:
    engine = api_engine(database_url, 5.0)
    try:
        async with engine.connect() as connection:
            return bool((await connection.execute(text("SHOW ssl"))).scalar_one() == "on")
    finally:
        await engine.dispose()


@pytest.mark.parametrize("create_engine", [api_engine, worker_engine], ids=["api", "worker"])
async def test_sslmode_disable_connects_and_require_insists_on_tls(database_url: str, create_engine: object) -> None:
    assert callable(create_engine)
    tls = await server_has_tls(database_url)
    plain = create_engine(f"{database_url}?sslmode=disable", 5.0)
    try:
        async with plain.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await plain.dispose()
    required = create_engine(f"{database_url}?sslmode=require", 5.0)
    try:
        if tls:  # a server with TLS: the connection is encrypted
            async with required.connect() as connection:
                in_use = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                assert (await connection.execute(text(in_use))).scalar_one() is True
        else:  # this machine's server has TLS off: require must refuse, not fall back to plain text
            with pytest.raises(Exception, match=r"(?i)ssl") as raised:
                async with required.connect():
                    pass
            assert "password" not in str(raised.value)
    finally:
        await required.dispose()
