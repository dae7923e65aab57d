"""Both processes serve Prometheus metrics whose counters move with the stream and whose labels name no symbol."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared.enums import ChannelType
from shared.routing import service_queue
from tests.e2e.conftest import delete_queues
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"
SYMBOL = "BTCUSDT"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def scrape(client: httpx.AsyncClient, url: str) -> Samples:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            assert SYMBOL not in sample.name
            for name, value in sample.labels.items():
                assert name not in ("symbol", "topic"), sample
                assert SYMBOL not in value, sample
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_worker_and_api_metrics_move_with_the_stream_without_symbol_labels(
    api: httpx.AsyncClient, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    port = free_port()
    worker_url = f"http://127.0.0.1:{port}/metrics"
    async with start_worker(metrics_port=port), httpx.AsyncClient(base_url=str(api.base_url)) as anonymous:
        for channel_type in ("trades", "orderbook"):
            fields = {"requesting_service": svc, "channel_type": channel_type, "symbol": SYMBOL}
            if channel_type == "orderbook":
                fields["depth"] = 50
            created = await api.post(URL, json=fields)
            assert created.status_code in (200, 201), created.text
            assert (await api.get(f"{URL}/{created.json()['id']}")).status_code == 200

        received = "ws_gateway_worker_bybit_messages_received_total"
        published = "ws_gateway_worker_events_published_total"

        async def streaming() -> Samples | None:
            samples = await scrape(anonymous, worker_url)
            moving = all(
                value(samples, name, **{"class": cls, "category": "linear"}) > 0
                for name in (received, published)
                for cls in ("trades", "orderbook")
            )
            return samples if moving else None

        first = await wait_until(streaming, timeout=20, interval=0.1, what="trades and books counted")
        assert value(first, "ws_gateway_worker_bybit_socket_connected", socket="linear") == 1
        assert value(first, "ws_gateway_worker_bybit_subscribed_topics", socket="linear") == 2
        assert (
            value(
                first,
                "ws_gateway_worker_exchange_to_publish_latency_seconds_count",
                **{"class": "trades", "category": "linear"},
            )
            > 0
        )
        assert ("ws_gateway_worker_publish_buffer_depth", frozenset({("buffer", "market")})) in first
        assert value(first, "ws_gateway_worker_cluster_members") == 1
        assert value(first, "ws_gateway_worker_owned_topics", socket="linear") == 2
        assert value(first, "ws_gateway_worker_lease_renewals_total") >= 1

        async def moved() -> bool:
            second = await scrape(anonymous, worker_url)
            return all(
                value(second, name, **{"class": cls, "category": "linear"})
                > value(first, name, **{"class": cls, "category": "linear"})
                for name in (received, published)
                for cls in ("trades", "orderbook")
            )

        await wait_until(moved, timeout=20, interval=0.1, what="worker counters moving between scrapes")

        api_first = await scrape(anonymous, "/metrics")
        route = "/api/v1/subscriptions/{subscription_id}"
        requests = "ws_gateway_api_http_requests_total"
        assert value(api_first, requests, route=route, method="GET", status="200") >= 2
        assert value(api_first, "ws_gateway_api_http_request_duration_seconds_count", route=route, method="GET") >= 2
        assert ("ws_gateway_api_outbox_pending", frozenset()) in api_first
        await wait_until(
            lambda: anonymous_relay_published(anonymous),
            timeout=10,
            what="relay published notices counted",
        )
        api_second = await scrape(anonymous, "/metrics")
        scrapes = {"route": "/metrics", "method": "GET", "status": "200"}
        assert value(api_second, requests, **scrapes) > value(api_first, requests, **scrapes)
        assert "/metrics" not in (await anonymous.get("/schema/openapi.json")).json()["paths"]
    await delete_queues(rabbitmq_url, service_queue(svc, ChannelType.TRADES), service_queue(svc, ChannelType.ORDERBOOK))


async def anonymous_relay_published(client: httpx.AsyncClient) -> bool:
    samples = await scrape(client, "/metrics")
    return value(samples, "ws_gateway_api_relay_published_notices_total") >= 2
