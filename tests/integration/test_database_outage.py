"""When PostgreSQL is unreachable the API answers 503 in the error shape within its timeout, never hangs."""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import msgspec
import pytest

from control_api.settings import ApiSettings
from tests.conftest import API_KEY
from tests.support.apiserver import api_client
from tests.support.fault_proxy import FaultProxy, Mode
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"
DB_TIMEOUT = 1.0


@pytest.mark.parametrize("mode", [Mode.REFUSE, Mode.BLACKHOLE])
async def test_api_answers_503_in_the_error_shape_when_postgres_is_down(
    api_settings: ApiSettings, database_url: str, mode: Mode
) -> None:
    parts = urlsplit(database_url)
    async with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        settings = msgspec.structs.replace(
            api_settings,
            database_url=urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}")),
            db_timeout=DB_TIMEOUT,
        )
        async with api_client(settings, API_KEY) as api:

            async def answers() -> bool:
                return (await api.get(URL)).status_code == 200

            # A first connection through the proxy can take longer than the 1 s budget on a loaded box.
            await wait_until(answers, timeout=30, interval=0.2, what="the API reaching PostgreSQL through the proxy")

            await proxy.set_mode(mode)
            for request in (
                api.get(URL),
                api.post(URL, json={"channel_type": "ticker", "requesting_service": "a", "symbol": "BTCUSDT"}),
                api.get("/api/v1/balances"),
            ):
                started = time.monotonic()
                response = await request
                elapsed = time.monotonic() - started
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "database_unavailable"
                assert elapsed < DB_TIMEOUT * 3, f"took {elapsed:.1f}s"

            health = await api.get("/health")
            assert health.status_code == 503
            assert health.json()["database"]["status"] == "down"

            await proxy.set_mode(Mode.FORWARD)
            await wait_until(answers, timeout=30, interval=0.2, what="the API answering again once PostgreSQL is back")
