"""Workers whose sockets Bybit keeps dropping reconnect within one shared budget of new connections.

The fake refuses (HTTP 403) any handshake past its own connection-rate limit, set here to the workers' budget:
a worker that reconnected on its own backoff alone would be refused within a few drops.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import BYBIT_KEY, BYBIT_SECRET
from tests.fake_bybit import FakeBybit
from tests.support.cluster import exactly_once
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"
BUDGET = 6
FAKE_WINDOW = 4.0
# Our window is a little longer than the fake's: a slot is taken a moment before its handshake reaches the fake.
BUDGET_WINDOW = FAKE_WINDOW + 1.0
FAST_LEASES = {"lease_ttl": 2.0, "lease_renew_interval": 0.3}
MARKET = [("linear", "BTCUSDT"), ("linear", "ETHUSDT"), ("linear", "SOLUSDT"), ("spot", "BTCUSDT"), ("spot", "ETHUSDT")]
WANTED = {(category, f"publicTrade.{symbol}") for category, symbol in MARKET} | {("private", "order")}
DROPS = 3


def back_on_new_sockets(fake: FakeBybit, dropped: set[str]) -> bool:
    """Every wanted topic is subscribed once again, and only on connections opened after the drop."""
    return exactly_once(fake, WANTED) and not {record.conn_id for record in fake.open_connections} & dropped


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(
        accounts={BYBIT_KEY: BYBIT_SECRET},
        push_interval=0.05,
        max_new_connections=BUDGET,
        connection_window=FAKE_WINDOW,
    ) as server:
        yield server


async def test_workers_whose_sockets_keep_dropping_stay_within_the_shared_connection_budget(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any]
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    for category, symbol in MARKET:
        response = await api.post(
            URL, json={"requesting_service": svc, "channel_type": "trades", "category": category, "symbol": symbol}
        )
        assert response.status_code == 201, response.text
    response = await api.post(URL, json={"requesting_service": svc, "channel_type": "order"})
    assert response.status_code == 201, response.text
    budget = {
        "connect_budget": BUDGET,
        "connect_budget_window": BUDGET_WINDOW,
        "connect_budget_scope": f"host-{uuid.uuid4().hex[:8]}",
        **FAST_LEASES,
    }
    async with start_worker(worker_id="alpha", **budget) as alpha, start_worker(worker_id="beta", **budget) as beta:
        await wait_until(lambda: exactly_once(fake, WANTED), timeout=30, what="every topic subscribed once")
        for drop in range(DROPS):
            dropped = {record.conn_id for record in fake.connections}
            await fake.drop_connections(close_frame=False)
            await wait_until(
                lambda dropped=dropped: back_on_new_sockets(fake, dropped),
                timeout=6 * BUDGET_WINDOW,
                what=f"every topic back on new sockets after drop {drop}",
            )
        waits = alpha.connect_budget.waits + beta.connect_budget.waits
    assert fake.rate_limited_handshakes == 0, "a handshake went past Bybit's limit"
    assert len(fake.connections) > BUDGET, "the drops needed more connects than one window holds"
    assert waits > 0, "the budget made sockets wait"
