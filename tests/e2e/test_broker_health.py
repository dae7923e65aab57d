"""A worker cut from RabbitMQ past a short grace is unhealthy: in its heartbeat, in the API's /health and in metrics.

Before, the status page showed "healthy" beside "RabbitMQ disconnected": only Bybit sockets counted.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream_worker.health import broker_problems
from stream_worker.worker import Worker
from tests.e2e.conftest import running_worker, worker_settings
from tests.fake_bybit import FakeBybit
from tests.support.fault_proxy import FaultProxy, Mode
from tests.support.waiting import wait_until

GRACE = 2.0


def gauges(worker: Worker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(worker.metrics).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def health(api: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await api.get("/health")
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def test_a_worker_cut_from_rabbitmq_past_its_grace_is_unhealthy_everywhere_and_recovers(
    api: httpx.AsyncClient, fake: FakeBybit, database_url: str, rabbitmq_url: str
) -> None:
    parts = urlsplit(rabbitmq_url)
    async with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5672) as proxy:
        netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{proxy.port}"
        settings = worker_settings(fake, database_url, urlunsplit(parts._replace(netloc=netloc)), broker_grace=GRACE)
        async with running_worker(settings) as worker:
            await wait_until(
                lambda: worker.publisher.connected and worker.commands.connected, what="both RabbitMQ links up"
            )
            assert worker.health.report().healthy

            async def api_says(status: int, needle: str | None) -> bool:
                code, body = await health(api)
                detail = (body.get("worker") or {}).get("detail") or ""
                return code == status and (needle is None or needle in detail)

            await wait_until(lambda: api_says(200, None), timeout=15, what="/health 200 before the cut")

            await proxy.set_mode(Mode.REFUSE)  # cuts both links and refuses every reconnect
            await wait_until(
                lambda: not worker.publisher.connected and not worker.commands.connected, what="both links lost"
            )
            within_grace = worker.health.report()
            assert within_grace.healthy, within_grace.problems  # a blip shorter than the grace is not a page

            await wait_until(lambda: not worker.health.report().healthy, timeout=GRACE + 5, what="unhealthy")
            report = worker.health.report()
            assert [p.split(" disconnected")[0] for p in report.problems] == [
                "RabbitMQ publisher",
                "RabbitMQ command listener",
            ]
            assert (report.publisher.down_for_s or 0) >= GRACE
            assert (report.commands_down_for_s or 0) >= GRACE
            metrics = gauges(worker)
            assert metrics[("ws_gateway_worker_healthy", ())] == 0
            assert metrics[("ws_gateway_worker_commands_connected", ())] == 0
            assert metrics[("ws_gateway_worker_rabbitmq_down_seconds", (("link", "publisher"),))] >= GRACE
            await wait_until(
                lambda: api_says(503, "RabbitMQ publisher disconnected"),
                timeout=15,
                what="/health 503 naming the publisher",
            )
            _, body = await health(api)
            assert body["worker"]["status"] == "degraded"
            assert body["rabbitmq"]["status"] == "up"  # the API's own link is fine: it is the worker's that is cut

            await proxy.set_mode(Mode.FORWARD)
            await wait_until(lambda: worker.health.report().healthy, timeout=20, what="healthy again")
            assert gauges(worker)[("ws_gateway_worker_healthy", ())] == 1
            await wait_until(lambda: api_says(200, None), timeout=15, what="/health 200 after the restore")


def test_broker_links_get_a_grace_before_they_count_as_problems() -> None:
    assert broker_problems(None, None, 10) == []
    assert broker_problems(9.9, 10.0, 10) == []
    assert broker_problems(10.1, None, 10) == ["RabbitMQ publisher disconnected for 10s"]
    assert broker_problems(None, 30, 10) == ["RabbitMQ command listener disconnected for 30s"]
