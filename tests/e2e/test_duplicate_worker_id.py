"""A worker id belongs to one running process: a second worker started with it refuses to start, and a worker
restarted after a crash takes its id over once the dead instance's lease has expired."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import httpx

from tests.e2e.test_graceful_shutdown import worker_env
from tests.fake_bybit import FakeBybit
from tests.support.processes import running
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"
TOPIC = ("linear", "publicTrade.BTCUSDT")
# Long enough that the restart below starts while the killed instance's lease is still live.
LEASE = {"WS_GATEWAY_LEASE_TTL": "10", "WS_GATEWAY_LEASE_RENEW_INTERVAL": "1"}


def served_by_connections_since(fake: FakeBybit, first: int) -> bool:
    return any(
        record.is_open and record.category == TOPIC[0] and TOPIC[1] in record.topics
        for record in fake.connections[first:]
    )


def log_lines(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


async def test_a_second_worker_with_a_running_workers_id_refuses_and_a_crashed_ones_restart_takes_over(
    api: httpx.AsyncClient, fake: FakeBybit, database_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    response = await api.post(URL, json={"requesting_service": svc, "channel_type": "trades", "symbol": "BTCUSDT"})
    assert response.status_code == 201, response.text
    env = worker_env(fake, database_url, rabbitmq_url) | LEASE  # one WS_GATEWAY_WORKER_ID for all three

    async with running("stream_worker", env, tmp_path, "first") as first:
        await wait_until(lambda: served_by_connections_since(fake, 0), timeout=30, what="the first worker serving")
        async with running("stream_worker", env, tmp_path, "twin") as twin:
            code = await twin.wait(30)
        assert code == 3
        errors = [line for line in log_lines(twin.stderr) if line["level"] in ("ERROR", "CRITICAL")]
        assert len(errors) == 1, twin.stderr
        assert "WS_GATEWAY_WORKER_ID" in str(errors[0]["message"])
        assert "Traceback" not in twin.stderr
        assert first.process.returncode is None, "the running worker is untouched"
        assert served_by_connections_since(fake, 0)

        first.kill()
        assert await first.wait(10) == -signal.SIGKILL
    await wait_until(lambda: not fake.open_connections, timeout=10, what="the dead worker's sockets gone")
    before = len(fake.connections)
    # Restarted at once, while the killed instance's lease is still live: it waits for it to expire, then serves.
    async with running("stream_worker", env, tmp_path, "restarted") as restarted:
        await wait_until(
            lambda: served_by_connections_since(fake, before), timeout=30, what="the restarted worker serving"
        )
        restarted.terminate()
        assert await restarted.wait(15) == 0
    assert "worker id claimed" in restarted.stderr
