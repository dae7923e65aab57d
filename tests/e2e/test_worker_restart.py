"""A worker killed with SIGKILL and started again converges from PostgreSQL and re-syncs what it missed."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import httpx

from shared.enums import ChannelType
from shared.routing import service_queue
from tests.e2e.conftest import consuming, delete_queues
from tests.e2e.test_graceful_shutdown import worker_env
from tests.fake_bybit import FakeBybit
from tests.support.processes import running
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"
TOPICS = {"private": {"execution", "wallet"}, "linear": {"publicTrade.BTCUSDT"}}


def subscribed_since(fake: FakeBybit, first: int) -> dict[str, set[str]]:
    """Topics subscribed on the open connections opened after `fake.connections[first - 1]`."""
    topics: dict[str, set[str]] = {}
    for record in fake.connections[first:]:
        if record.is_open:
            topics.setdefault(record.category, set()).update(record.topics)
    return topics


async def test_killed_worker_restarts_from_postgres_and_resyncs_what_it_missed(
    api: httpx.AsyncClient, fake: FakeBybit, database_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    queues = (service_queue(svc, ChannelType.EXECUTION), service_queue(svc, ChannelType.BALANCE))
    for fields in (
        {"channel_type": "execution"},
        {"channel_type": "balance"},
        {"channel_type": "trades", "symbol": "BTCUSDT"},
    ):
        response = await api.post(URL, json={"requesting_service": svc, **fields})
        assert response.status_code == 201, response.text
    env = worker_env(fake, database_url, rabbitmq_url)

    async with running("stream_worker", env, tmp_path, "worker-1") as first:
        await wait_until(lambda: subscribed_since(fake, 0) == TOPICS, timeout=30, what="the first worker subscribed")
        first.kill()
        assert await first.wait(10) == -signal.SIGKILL
    await wait_until(lambda: not fake.open_connections, timeout=10, what="the fake sees the dead worker's sockets go")
    first_connections = len(fake.connections)

    fill = await fake.push_account("execution", category="linear", symbol="BTCUSDT")
    wallet = await fake.push_account("wallet", coins={"USDT": "31337.5"})
    exec_id = fill["data"][0]["execId"]
    assert wallet["data"][0]["coin"][0]["walletBalance"] == "31337.5"

    async with running("stream_worker", env, tmp_path, "worker-2") as second:
        async with consuming(rabbitmq_url, queues[0]) as executions:
            await wait_until(
                lambda: subscribed_since(fake, first_connections) == TOPICS,
                timeout=30,
                what="the restarted worker subscribed the same topics",
            )
            await wait_until(
                lambda: f"execution:{exec_id}" in executions.ids(), timeout=20, what="the missed fill re-synced"
            )

            async def balance_stored() -> bool:
                coins = (await api.get("/api/v1/balances")).json()["coins"]
                return any(c["coin"] == "USDT" and c["walletBalance"] == "31337.5" for c in coins)

            await wait_until(balance_stored, timeout=20, what="the missed wallet change in the balances API")
        second.terminate()
        code = await second.wait(15)
    new = fake.connections[first_connections:]
    for topic in ("execution", "wallet", "publicTrade.BTCUSDT"):
        assert sum(record.subscribe_requests(topic) for record in new) == 1, topic
    assert not any(request.op == "unsubscribe" for record in fake.connections for request in record.requests)
    recovered = [e for e in executions.envelopes if e.event_id == f"execution:{exec_id}"]
    assert recovered
    assert all(e.snapshot is True for e in recovered)
    assert recovered[0].payload["execPrice"] == fill["data"][0]["execPrice"]
    assert "/v5/execution/list" in fake.ledger.requests
    assert code == 0
    assert "Traceback" not in first.stderr + second.stderr
    print(
        f"\nfirst worker exit={first.process.returncode}; connections before={first_connections} after={len(new)}; "
        f"fill deliveries={len(recovered)}; second worker exit={code}"
    )
    await delete_queues(rabbitmq_url, *queues, service_queue(svc, ChannelType.TRADES))
