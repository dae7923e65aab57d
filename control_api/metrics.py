"""Prometheus metrics of the control API: one registry per app, an ASGI middleware, and `GET /metrics`.

The registry belongs to the app built by `create_app` (never a module global), so a test can build several
apps in one process. Requests are labelled by route template (`/api/v1/subscriptions/{subscription_id}`), never
by raw path, so ids do not become label values; requests that match no route share the label `unmatched`.
"""

from __future__ import annotations

from collections.abc import Iterable

from litestar import Response, get
from litestar.datastructures import State
from litestar.types import Scope
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from control_api.notices import OutboxRelay

UNMATCHED = "unmatched"


class _RelayCollector(Collector):
    """Reads the outbox relay's own counters at scrape time; `/metrics` hands it the relay the lifespan made."""

    def __init__(self) -> None:
        self.relay: OutboxRelay | None = None

    def collect(self) -> Iterable[Metric]:
        relay = self.relay
        published = CounterMetricFamily(
            "ws_gateway_api_relay_published_notices", "Change notices the outbox relay published to RabbitMQ"
        )
        connected = GaugeMetricFamily("ws_gateway_api_relay_connected", "1 when the outbox relay holds a connection")
        if relay is not None:
            published.add_metric([], relay.published)
            connected.add_metric([], 1 if relay.connected else 0)
        yield published
        yield connected


class ApiMetrics:
    """The API's registry and the instruments the middleware and `/metrics` update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ws_gateway_api_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "ws_gateway_api_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            ["route", "method"],
            registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "ws_gateway_api_outbox_pending",
            "Change notices waiting in the outbox (read at scrape; NaN when PostgreSQL is unreachable)",
            registry=self.registry,
        )
        self.relay = _RelayCollector()
        self.registry.register(self.relay)

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """One answered request; called by the trace middleware, which already times every request.

        The route template is in the scope once Litestar has routed the request (unrouted: "unmatched").
        """
        route = str(scope.get("path_template") or UNMATCHED)
        method = str(scope.get("method", ""))
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route, method).observe(seconds)


@get("/metrics", include_in_schema=False, cache=False)
async def metrics_endpoint(state: State) -> Response[bytes]:
    """Prometheus text format; no API key, like `/health` (it holds counts, never secrets or URLs)."""
    metrics: ApiMetrics = state.metrics
    relay: OutboxRelay | None = state.get("relay")
    metrics.relay.relay = relay
    pending = await relay.pending() if relay is not None else None
    metrics.outbox_pending.set(float("nan") if pending is None else pending)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
