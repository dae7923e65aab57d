"""Prometheus metrics of the stream worker, and the small HTTP endpoint that serves them.

Almost everything is read at scrape time from numbers the worker keeps anyway (the ones its heartbeat shows):
socket state, reconnects, publisher stats, book counters. Only two facts are counted per message, each a dict
increment: pushes received per topic root (in `Dispatcher._on_push`), and envelopes handed to RabbitMQ with their
exchange-to-publish latency (`PublishTally`, called by the publisher as it stamps `published_ts`).

Labels are bounded sets: class (channel type), category (or socket), cause and kind; never a symbol or topic.
The HTTP server is plain asyncio, owned by the worker's task tree: no threads, nothing left running.

Over 400 lines, with a reason: one collector reads every part at scrape time, one family per method; the
families share the label rules above, so they stay together.
"""

from __future__ import annotations

import asyncio
import contextlib
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from typing import Protocol

from loguru import logger
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.enums import Endpoint
from shared.events import EventEnvelope
from shared.heartbeat import WorkerHeartbeat
from stream_worker.errors import WorkerError
from stream_worker.exchange.connect_budget import ConnectBudget
from stream_worker.health import WorkerParts
from stream_worker.snapshots import Snapshots

PREFIX = "ws_gateway_worker"
# Bybit's topic roots (PROTOCOL.md §6, §9) as the channel types consumers know; anything else is "unknown",
# so an unexpected topic from the exchange cannot mint label values.
TOPIC_CLASS = {
    "publicTrade": "trades",
    "orderbook": "orderbook",
    "tickers": "ticker",
    "kline": "kline",
    "allLiquidation": "liquidation",
    "liquidation": "liquidation",
    "order": "order",
    "execution": "execution",
    "position": "position",
    "wallet": "balance",
}
# Exchange-to-publish latency buckets, in milliseconds (the envelope's times are epoch ms).
LATENCY_BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000)
REQUEST_TIMEOUT = 5.0  # a scrape that has not sent its request line and headers by then is dropped


class _Tally:
    __slots__ = ("buckets", "count", "latency_count", "latency_sum_ms")

    def __init__(self) -> None:
        self.count = 0
        self.latency_count = 0
        self.latency_sum_ms = 0
        self.buckets = [0] * (len(LATENCY_BOUNDS_MS) + 1)  # per bucket, not cumulative; the last is +Inf


class PublishTally:
    """Envelopes handed to RabbitMQ per (class, category), and how long after Bybit's timestamp that was.

    The latency runs from `exchange_ts` to `published_ts`, which the publisher stamps as it hands the message to
    the AMQP client (not the confirm: market data has none). Re-publishes count again; REST snapshots and
    events without an exchange time are counted but not timed.
    """

    def __init__(self) -> None:
        self.tallies: dict[tuple[str, str], _Tally] = {}

    def on_handed_over(self, envelope: EventEnvelope) -> None:
        key = (envelope.event_type, envelope.category)
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = _Tally()
        tally.count += 1
        exchange_ts = envelope.exchange_ts
        if exchange_ts is not None and not envelope.snapshot:
            latency = max(0, envelope.published_ts - exchange_ts)
            tally.buckets[bisect_left(LATENCY_BOUNDS_MS, latency)] += 1
            tally.latency_count += 1
            tally.latency_sum_ms += latency


def topic_class(root: str) -> str:
    return TOPIC_CLASS.get(root, "unknown")


class HealthSource(Protocol):
    def report(self) -> WorkerHeartbeat: ...


class MetricsSource(WorkerParts, Protocol):
    """The narrow view of the worker that a scrape reads: what its health report reads, and a little more (the
    worker hands itself over as one)."""

    @property
    def snapshots(self) -> Snapshots: ...
    @property
    def health(self) -> HealthSource: ...
    @property
    def connect_budget(self) -> ConnectBudget: ...


class WorkerCollector(Collector):
    """Reads the worker's own counters and state at scrape time."""

    def __init__(self, worker: MetricsSource, tally: PublishTally) -> None:
        self._worker = worker
        self._tally = tally

    def collect(self) -> Iterable[Metric]:
        yield from self._health()
        yield from self._bybit()
        yield from self._published()
        yield from self._publisher()
        yield from self._market()
        yield from self._cluster()
        yield from self._resync()
        yield from self._connect_budget()

    def _connect_budget(self) -> Iterable[Metric]:
        budget = self._worker.connect_budget
        yield CounterMetricFamily(
            f"{PREFIX}_bybit_connect_budget_waits",
            "Connect attempts that found the shared budget of new Bybit connections spent and waited",
            value=budget.waits,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_bybit_connect_budget_shared",
            "1 while the connection budget is shared through PostgreSQL, 0 while this worker limits itself alone",
            value=int(budget.shared),
        )

    def _resync(self) -> Iterable[Metric]:
        sync = self._worker.account_sync
        runs = CounterMetricFamily(f"{PREFIX}_account_resyncs", "Account re-syncs over REST that completed a fetch")
        incomplete = CounterMetricFamily(
            f"{PREFIX}_account_resync_incomplete",
            "Parts of account re-syncs that could not complete (each also a resync_incomplete event)",
            labels=["cause"],
        )
        resolved = CounterMetricFamily(
            f"{PREFIX}_account_resync_resolved",
            "Orders, positions and coins believed open that a re-sync found closed",
            labels=["kind"],
        )
        if sync is not None:
            runs.add_metric([], sync.state["runs"])
            for cause, count in sorted(sync.incomplete.items()):
                incomplete.add_metric([cause], count)
            for kind, count in sorted(sync.state["resolved"].items()):
                resolved.add_metric([kind], count)
        yield from (runs, incomplete, resolved)

    def _health(self) -> Iterable[Metric]:
        report = self._worker.health.report()
        yield GaugeMetricFamily(
            f"{PREFIX}_healthy",
            "1 when the worker reports itself healthy (wanted Bybit sockets up, RabbitMQ links up or within grace)",
            value=int(report.healthy),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_commands_connected",
            "1 while the command listener is consuming change notices from RabbitMQ",
            value=int(report.commands_connected),
        )
        down = GaugeMetricFamily(
            f"{PREFIX}_rabbitmq_down_seconds",
            "Seconds a RabbitMQ link has been down (0 while up), by link",
            labels=["link"],
        )
        down.add_metric(["publisher"], report.publisher.down_for_s or 0.0)
        down.add_metric(["commands"], report.commands_down_for_s or 0.0)
        yield down

    def _cluster(self) -> Iterable[Metric]:
        cluster = self._worker.cluster
        yield GaugeMetricFamily(
            f"{PREFIX}_cluster_members",
            "Live workers in this worker's view of the cluster",
            value=len(cluster.assignment.members),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_private_lease_held",
            "1 while this worker holds the private stream lease",
            value=int(cluster.holds_private),
        )
        owned = GaugeMetricFamily(f"{PREFIX}_owned_topics", "Wanted topics assigned to this worker", labels=["socket"])
        for socket, count in sorted(cluster.health().owned_topics.items()):
            owned.add_metric([socket], count)
        yield owned
        yield CounterMetricFamily(
            f"{PREFIX}_lease_renewals", "Membership lease renewals that succeeded", value=cluster.renewals
        )
        yield CounterMetricFamily(
            f"{PREFIX}_lease_renewal_failures",
            "Membership lease renewals PostgreSQL did not answer",
            value=cluster.failed_renewals,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_cluster_changes",
            "Membership views that moved topics or the private stream",
            value=cluster.changes,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_tombstones_unbound",
            "Queue bindings of cancelled subscriptions this worker unbound as the owner of their topic",
            value=self._worker.convergence.tombstones_unbound,
        )

    def _bybit(self) -> Iterable[Metric]:
        worker = self._worker
        received = CounterMetricFamily(
            f"{PREFIX}_bybit_messages_received",
            "Data pushes received from Bybit, by channel class and category (private: the private socket)",
            labels=["class", "category"],
        )
        by_class: dict[tuple[str, str], int] = {}
        for (endpoint, root), count in list(worker.dispatcher.received.items()):
            key = (topic_class(root), endpoint.value)
            by_class[key] = by_class.get(key, 0) + count
        for labels, count in sorted(by_class.items()):
            received.add_metric(list(labels), count)
        yield received

        errors = CounterMetricFamily(
            f"{PREFIX}_decode_errors",
            "Unreadable Bybit input: malformed or unknown frames and undecodable payloads, by kind",
            labels=["kind"],
        )
        for name, count in sorted(worker.dispatcher.counters.items()):
            if name.startswith("frames:"):
                errors.add_metric([name.removeprefix("frames:")], count)
            elif name.startswith("payload:"):
                errors.add_metric([name], count)
        yield errors

        reconnects = CounterMetricFamily(
            f"{PREFIX}_bybit_reconnects", "Bybit socket sessions after the first", labels=["socket"]
        )
        auth_failures = CounterMetricFamily(
            f"{PREFIX}_bybit_auth_failures", "Auth attempts Bybit rejected", labels=["socket"]
        )
        connected = GaugeMetricFamily(
            f"{PREFIX}_bybit_socket_connected", "1 when the socket is open", labels=["socket"]
        )
        authenticated = GaugeMetricFamily(
            f"{PREFIX}_bybit_socket_authenticated", "1 when the private socket is authenticated", labels=["socket"]
        )
        subscribed = GaugeMetricFamily(
            f"{PREFIX}_bybit_subscribed_topics", "Topics Bybit acknowledged on the socket", labels=["socket"]
        )
        wanted = GaugeMetricFamily(f"{PREFIX}_bybit_wanted_topics", "Topics the socket should carry", labels=["socket"])
        failed = GaugeMetricFamily(
            f"{PREFIX}_bybit_failed_topics", "Topics Bybit rejected on the socket", labels=["socket"]
        )
        sockets = GaugeMetricFamily(
            f"{PREFIX}_bybit_sockets_open",
            "Open sockets of the category: more than one when its topics exceed one socket's caps",
            labels=["socket"],
        )
        moved = CounterMetricFamily(
            f"{PREFIX}_bybit_topics_moved",
            "Topics moved to another socket of their category (a capacity refusal, or fewer sockets needed)",
            labels=["socket"],
        )
        for endpoint, connection in worker.connections.items():
            socket = [endpoint.value]
            protocol = connection.protocol
            sockets.add_metric(socket, connection.open_sockets)
            moved.add_metric(socket, connection.moved)
            reconnects.add_metric(socket, connection.reconnects)
            auth_failures.add_metric(socket, connection.auth_failures)
            connected.add_metric(socket, 1 if connection.connected else 0)
            if endpoint is Endpoint.PRIVATE:
                authenticated.add_metric(socket, 1 if protocol.authenticated else 0)
            subscribed.add_metric(socket, len(protocol.subscribed))
            wanted.add_metric(socket, len(protocol.wanted))
            failed.add_metric(socket, len(protocol.failed))
        yield from (reconnects, auth_failures, connected, authenticated, subscribed, wanted, failed, sockets, moved)

    def _published(self) -> Iterable[Metric]:
        published = CounterMetricFamily(
            f"{PREFIX}_events_published",
            "Event envelopes handed to RabbitMQ, by class and category (re-publishes included)",
            labels=["class", "category"],
        )
        latency = HistogramMetricFamily(
            f"{PREFIX}_exchange_to_publish_latency_seconds",
            "From Bybit's exchange timestamp to the publisher handing the event to RabbitMQ (pushed events only)",
            labels=["class", "category"],
        )
        for (event_class, category), tally in sorted(self._tally.tallies.items()):
            labels = [event_class, category]
            published.add_metric(labels, tally.count)
            if not tally.latency_count:
                continue
            buckets: list[tuple[str, float]] = []
            cumulative = 0
            for bound, count in zip((*LATENCY_BOUNDS_MS, None), tally.buckets, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound is None else str(bound / 1000), cumulative))
            latency.add_metric(labels, buckets, tally.latency_sum_ms / 1000)
        yield published
        yield latency

    def _publisher(self) -> Iterable[Metric]:
        stats = self._worker.publisher.stats
        dropped = CounterMetricFamily(
            f"{PREFIX}_dropped_events", "Events dropped before reaching RabbitMQ, by cause", labels=["cause"]
        )
        for cause, count in sorted(stats.dropped.items()):
            dropped.add_metric([cause], count)
        yield dropped
        messages = CounterMetricFamily(
            f"{PREFIX}_rabbitmq_published_messages", "Messages handed to RabbitMQ, by buffer", labels=["buffer"]
        )
        for buffer, count in sorted(stats.published.items()):
            messages.add_metric([buffer], count)
        yield messages
        yield CounterMetricFamily(
            f"{PREFIX}_rabbitmq_confirmed", "Account messages RabbitMQ confirmed", stats.confirmed
        )
        yield CounterMetricFamily(f"{PREFIX}_rabbitmq_nacked", "Account messages RabbitMQ nacked", stats.nacked)
        yield CounterMetricFamily(
            f"{PREFIX}_rabbitmq_republished",
            "Account messages published again after a nack or a lost connection",
            stats.republished,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_rabbitmq_reconnects", "RabbitMQ connections after the first", stats.reconnects
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_rabbitmq_connected", "1 when the publisher is connected", int(stats.connected)
        )
        depth = GaugeMetricFamily(
            f"{PREFIX}_publish_buffer_depth", "Events waiting in the publisher's buffers", labels=["buffer"]
        )
        depth.add_metric(["market"], stats.market_depth)
        depth.add_metric(["account"], stats.account_depth)
        yield depth
        yield GaugeMetricFamily(
            f"{PREFIX}_rabbitmq_unconfirmed", "Account messages published and not yet confirmed", stats.unconfirmed
        )
        confirm = GaugeMetricFamily(
            f"{PREFIX}_rabbitmq_last_confirm_latency_seconds", "Publish-to-confirm time of the latest confirmed message"
        )
        if stats.last_confirm_latency is not None:
            confirm.add_metric([], stats.last_confirm_latency)
        yield confirm

    def _market(self) -> Iterable[Metric]:
        invalid = CounterMetricFamily(
            f"{PREFIX}_book_invalidations",
            "Order books declared invalid, by category and cause",
            labels=["category", "cause"],
        )
        malformed = CounterMetricFamily(
            f"{PREFIX}_malformed_market_pushes",
            "Book and ticker pushes that could not be read (state dropped, resubscribed), by category and kind",
            labels=["category", "kind"],
        )
        gaps_ignored = CounterMetricFamily(
            f"{PREFIX}_book_gaps_ignored",
            "Book deltas applied across a jump in u because WS_GATEWAY_BOOK_GAP_CHECK is off",
            labels=["category"],
        )
        for endpoint, market in self._worker.markets.items():
            for key, count in sorted(market.counters.items()):
                if key.startswith("book_invalid:"):
                    invalid.add_metric([endpoint.value, key.removeprefix("book_invalid:")], count)
                elif key.startswith("malformed:"):
                    malformed.add_metric([endpoint.value, key.removeprefix("malformed:")], count)
            gaps_ignored.add_metric([endpoint.value], market.counters["book:gap_ignored"])
        yield invalid
        yield malformed
        yield gaps_ignored
        stale = GaugeMetricFamily(
            f"{PREFIX}_stale_topics",
            "Acknowledged public topics with no push for longer than their channel's threshold",
            labels=["socket"],
        )
        by_socket = Counter(endpoint.value for endpoint, _ in self._worker.dispatcher.silence.stale)
        for endpoint in self._worker.markets:
            stale.add_metric([endpoint.value], by_socket.get(endpoint.value, 0))
        yield stale
        yield CounterMetricFamily(
            f"{PREFIX}_stale_detections",
            "Times a topic went silent and was resubscribed once",
            value=self._worker.dispatcher.counters.get("stale:detected", 0),
        )
        snapshots = CounterMetricFamily(
            f"{PREFIX}_snapshots_sent",
            "Snapshots sent to one queue: on join, or on request (POST .../snapshot), by class",
            labels=["reason", "class"],
        )
        for key, count in sorted(self._worker.snapshots.counters.items()):
            parts = key.split(":")  # snapshot:{reason}:{class}
            if len(parts) == 3 and parts[1] in ("join", "requested"):
                snapshots.add_metric([parts[1], parts[2]], count)
        yield snapshots


def worker_registry(worker: MetricsSource, tally: PublishTally) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(worker, tally))
    return registry


async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> None:
    """Answer `GET /metrics` on host:port until cancelled; each scrape is one request on its own connection."""
    arrivals: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrivals.put_nowait((reader, writer))  # answered by a task this function owns, not by asyncio's

    try:
        server = await asyncio.start_server(accept, host, port)
    except OSError as error:
        raise WorkerError(
            f"cannot serve metrics on {host}:{port} ({error.strerror}): set WS_GATEWAY_WORKER_METRICS_PORT to a free "
            "port, or 0 for none"
        ) from None
    logger.bind(host=host, port=port).info("metrics endpoint listening")
    async with server, asyncio.TaskGroup() as answering:
        while True:
            reader, writer = await arrivals.get()
            answering.create_task(_answer(registry, reader, writer), name="metrics-scrape")


async def _answer(registry: CollectorRegistry, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                request_line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
        except (TimeoutError, ValueError, ConnectionError):  # slow, oversized or vanished: nothing to answer
            return
        parts = request_line.split()
        if len(parts) >= 2 and parts[0] in (b"GET", b"HEAD") and parts[1].split(b"?")[0] == b"/metrics":
            status, content_type, body = b"200 OK", CONTENT_TYPE_LATEST.encode(), generate_latest(registry)
        else:
            status, content_type, body = b"404 Not Found", b"text/plain; charset=utf-8", b"not found: try /metrics\n"
        head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
            status,
            content_type,
            len(body),
        )
        writer.write(head if parts[:1] == [b"HEAD"] else head + body)
        with contextlib.suppress(ConnectionError, TimeoutError):  # the scraper went away: its loss
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await writer.drain()
    finally:
        writer.close()
