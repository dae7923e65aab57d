"""SIGTERM stops both services cleanly: the worker drains and exits 0 without unsubscribing; the API finishes
the request in flight and exits 0."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from shared.enums import ChannelType
from shared.routing import service_queue
from tests.e2e.conftest import BYBIT_KEY, BYBIT_SECRET, consuming, delete_queues
from tests.fake_bybit import FakeBybit
from tests.support import processes
from tests.support.processes import running
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"
GRACE = 10.0  # WS_GATEWAY_SHUTDOWN_GRACE
MARGIN = 5.0  # interpreter exit, closing sockets and connections


def worker_env(fake: FakeBybit, database_url: str, rabbitmq_url: str) -> dict[str, str]:
    return processes.worker_env(
        fake.url,
        database_url,
        rabbitmq_url,
        api_key=BYBIT_KEY,
        api_secret=BYBIT_SECRET,
        WS_GATEWAY_WORKER_ID=f"test-{uuid.uuid4().hex[:8]}",
        WS_GATEWAY_SHUTDOWN_GRACE=str(GRACE),
        BYBIT_PING_INTERVAL="1",
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


async def test_sigterm_drains_the_worker_which_exits_0_without_unsubscribing(
    api: httpx.AsyncClient, fake: FakeBybit, database_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    queues = (service_queue(svc, ChannelType.TRADES), service_queue(svc, ChannelType.EXECUTION))
    for fields in ({"channel_type": "trades", "symbol": "BTCUSDT"}, {"channel_type": "execution"}):
        response = await api.post(URL, json={"requesting_service": svc, **fields})
        assert response.status_code == 201, response.text
    env = worker_env(fake, database_url, rabbitmq_url)
    async with (
        running("stream_worker", env, tmp_path, "worker") as worker,
        consuming(rabbitmq_url, queues[0], timeout=30) as trades,
    ):
        await wait_until(lambda: len(trades.envelopes) >= 5, timeout=20, what="the worker publishes trades")
        assert fake.open_connections, "the worker is connected to the fake"
        assert any(r.category == "private" and r.authenticated for r in fake.open_connections)
        worker.terminate()
        signalled = time.monotonic()
        code = await worker.wait(GRACE + MARGIN)
        took = time.monotonic() - signalled
    assert code == 0, worker.stderr
    ops = [request.op for record in fake.connections for request in record.requests]
    assert "unsubscribe" not in ops
    assert ops.count("subscribe") >= 2
    await wait_until(lambda: not fake.open_connections, timeout=5, what="the fake sees every socket closed")
    assert all(record.close_code == 1000 for record in fake.connections)  # closed with a close frame, not cut
    stderr = worker.stderr
    assert "Traceback" not in stderr
    assert '"event_loop":"uvloop"' in stderr  # uvloop by default (WS_GATEWAY_UVLOOP)
    messages = [json.loads(line).get("message", "") for line in stderr.splitlines() if line.startswith("{")]
    assert any("stopping" in message for message in messages), messages[-5:]
    print(
        f"\nworker exit={code} after {took:.2f}s; sockets={len(fake.connections)} "
        f"close codes={sorted(str(r.close_code) for r in fake.connections)}; ops={sorted(set(ops))}"
    )
    await delete_queues(rabbitmq_url, *queues)


async def test_sigterm_lets_the_api_finish_the_request_in_flight_and_exit_0(
    database_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "RABBITMQ_URL": rabbitmq_url,
        "WS_GATEWAY_API_KEY": "shutdown-key",
        "WS_GATEWAY_PORT": str(port),
        "LOG_FORMAT": "json",
    }
    base = f"http://127.0.0.1:{port}"
    body = json.dumps({"requesting_service": f"svc-{uuid.uuid4().hex[:8]}", "channel_type": "balance"}).encode()
    headers = {"X-API-Key": "shutdown-key", "Content-Type": "application/json", "Content-Length": str(len(body))}
    half_sent, release = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield body[:10]
        half_sent.set()  # httpx asks for the next chunk only after writing the first
        await release.wait()
        yield body[10:]

    async with running("control_api", env, tmp_path, "api") as api, httpx.AsyncClient(base_url=base) as client:

        async def healthy() -> bool:
            try:
                return (await client.get("/health", timeout=2)).status_code in (200, 503)
            except httpx.TransportError:
                return False

        await wait_until(healthy, timeout=30, what="the API answers")
        before = await client.get(URL, headers={"X-API-Key": "shutdown-key"})
        assert before.status_code == 200, before.text
        in_flight = asyncio.create_task(client.post(URL, content=slow_body(), headers=headers, timeout=30))
        await wait_until(half_sent.is_set, what="half the request sent")
        api.terminate()
        await wait_until(lambda: refuses_connections(port), timeout=10, what="the API stops accepting")
        assert api.process.returncode is None, "the API must wait for the request in flight"
        release.set()
        response = await in_flight
        code = await api.wait(15)
    assert response.status_code == 201, response.text
    assert code == 0, api.stderr
    assert "Traceback" not in api.stderr
    print(f"\napi exit={code}; in-flight request answered {response.status_code} after SIGTERM")


async def test_sigterm_makes_the_api_exit_0(database_url: str, rabbitmq_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "RABBITMQ_URL": rabbitmq_url,
        "WS_GATEWAY_API_KEY": "shutdown-key",
        "WS_GATEWAY_PORT": str(port),
    }
    async with running("control_api", env, tmp_path, "api") as api, httpx.AsyncClient() as client:

        async def answers() -> bool:
            try:
                response = await client.get(f"http://127.0.0.1:{port}{URL}", headers={"X-API-Key": "shutdown-key"})
            except httpx.TransportError:
                return False
            return response.status_code == 200

        await wait_until(answers, timeout=30, what="a request completed")
        api.terminate()
        code = await api.wait(15)
    assert "Traceback" not in api.stderr
    assert code == 0


@pytest.mark.xfail(
    strict=True,
    reason="found by the chaos run: the worker installs its SIGTERM handler only once its event loop runs "
    "(stream_worker/__main__.py, after seconds of imports on a busy machine); a SIGTERM before that kills it "
    "with -15 instead of a clean exit 0",
)
async def test_sigterm_while_the_worker_is_still_starting_exits_0(
    fake: FakeBybit, database_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    async with running("stream_worker", worker_env(fake, database_url, rabbitmq_url), tmp_path, "worker") as worker:
        worker.terminate()  # at once: the interpreter is still importing
        assert await worker.wait(30) == 0
