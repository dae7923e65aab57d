"""The stream worker: owns the task tree and converges Bybit subscriptions and queue bindings to PostgreSQL.

Inputs (Bybit sockets, change notices, the reconcile timer) feed bounded hand-offs; the publisher and the
state writer drain them. The Bybit readers never await RabbitMQ or PostgreSQL directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from loguru import logger

from shared.commands import Command, ResyncRequested, SubscriptionsChanged
from shared.enums import Endpoint, SubscriptionStatus
from stream_worker.broker.commands import CommandListener
from stream_worker.broker.publisher import Publisher
from stream_worker.bybit.events import (
    Authenticated,
    AuthRejected,
    Event,
    Malformed,
    Push,
    Subscribed,
    SubscribeRejected,
    Unknown,
)
from stream_worker.bybit.protocol import BybitProtocol
from stream_worker.bybit.signing import Credentials
from stream_worker.cluster.membership import MembershipStore, PrivateLease
from stream_worker.cluster.ownership import Cluster
from stream_worker.envelopes.market import BookOutput, MarketResult, MarketState
from stream_worker.envelopes.normalize import Normalizer, PayloadError
from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.errors import WorkerError
from stream_worker.exchange.account_sync import AccountSync
from stream_worker.exchange.connection import Connection, ConnectionSettings
from stream_worker.exchange.rest import BybitRest
from stream_worker.exchange.resync import AccountResync
from stream_worker.metrics import PublishTally, serve_metrics, worker_registry
from stream_worker.settings import WorkerSettings
from stream_worker.state.balances import BalanceWriter
from stream_worker.state.desired import Binding, DesiredSet, topic_changes
from stream_worker.state.open_items import OpenItems
from stream_worker.state.persistence import DATABASE_ERRORS, StateWriter, Store

PUBLIC_ENDPOINTS = (Endpoint.SPOT, Endpoint.LINEAR, Endpoint.INVERSE, Endpoint.OPTION)
NO_KEYS = "BYBIT_API_KEY/BYBIT_API_SECRET are not configured: private channels are unavailable"
HEARTBEAT_SECONDS = 5.0


class Stopping(Exception):
    """Raised inside the input task group when the process is asked to stop."""


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        *,
        store: Store,
        publisher: Publisher,
        connection_settings: ConnectionSettings | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.worker_id = settings.worker_id
        self.store = store
        self.publisher = publisher
        self.state = StateWriter(store)
        self.balances = BalanceWriter(store)
        self.open_items = OpenItems(store)
        self.desired = DesiredSet()
        self.bound: set[Binding] = set()
        self.counters: Counter[str] = Counter()
        self.received: Counter[tuple[Endpoint, str]] = Counter()  # pushes per (socket, topic root), for metrics
        self.published = PublishTally()
        publisher.on_handed_over = self.published.on_handed_over
        self.metrics = worker_registry(self, self.published)
        self._wall = wall
        self._logged_kinds: set[str] = set()
        self._reconcile_lock = asyncio.Lock()
        self._reload_requested = asyncio.Event()
        self._cluster_changed = asyncio.Event()
        self.reloads = 0  # full re-reads of the desired set that succeeded
        self._op_traces: dict[tuple[Endpoint, str], str] = {}  # the notice that last asked for each topic
        self._statuses_written: dict[tuple[Endpoint, str], frozenset[uuid.UUID]] = {}
        self._trace_ids = itertools.count()
        self._trace_prefix = uuid.uuid4().hex[:8]
        self.connections: dict[Endpoint, Connection] = {}
        self.normalizers: dict[Endpoint, Normalizer] = {}
        self.markets: dict[Endpoint, MarketState] = {
            endpoint: MarketState(
                endpoint,
                book_output=BookOutput(settings.book_output),
                top_levels=settings.book_top_levels,
                checksum_levels=settings.book_checksum_levels,
                snapshot_timeout=settings.snapshot_timeout,
            )
            for endpoint in PUBLIC_ENDPOINTS
        }
        for endpoint in PUBLIC_ENDPOINTS:
            self._add_connection(endpoint, None, settings.public_ws_url, connection_settings)
        self.rest: BybitRest | None = None
        self.account_sync: AccountSync | None = None
        if settings.bybit_api_key is not None and settings.bybit_api_secret is not None:
            credentials = Credentials(settings.bybit_api_key.reveal(), settings.bybit_api_secret.reveal())
            self._add_connection(Endpoint.PRIVATE, credentials, settings.private_ws_url, connection_settings)
            self.rest = BybitRest(settings.rest_url, credentials)
            self.account_sync = AccountSync(
                AccountResync(self.rest, self.open_items, option_base_coins=settings.option_base_coins),
                self.connections[Endpoint.PRIVATE].protocol,
                put_account=self.put_account,
                balances=self.balances,
                wall=wall,
                trace_id=self._trace_id,
            )
        self.commands = CommandListener(
            settings.rabbitmq_url, self.worker_id, self.on_command, on_connected=self.reload
        )
        self.instance_id = uuid.uuid4().hex
        membership = MembershipStore(
            store.engine,
            worker_id=self.worker_id,
            instance_id=self.instance_id,
            ttl=settings.lease_ttl,
            timeout=min(store.timeout, settings.lease_ttl / 2),
        )
        self.cluster = Cluster(
            membership,
            renew_interval=settings.lease_renew_interval,
            can_serve_private=Endpoint.PRIVATE in self.connections,
            on_change=self._on_cluster_change,
            on_private_acquired=self._on_private_acquired,
            last_private_frame_ms=lambda: self.account_sync.last_frame_ms if self.account_sync else None,
            subscribed=lambda: {endpoint: c.protocol.subscribed for endpoint, c in self.connections.items()},
        )

    def _add_connection(
        self,
        endpoint: Endpoint,
        credentials: Credentials | None,
        base_url: str,
        connection_settings: ConnectionSettings | None,
    ) -> None:
        protocol = BybitProtocol(
            endpoint=endpoint,
            credentials=credentials,
            ping_interval=self.settings.ping_interval,
            dead_after=self.settings.dead_after,
            ack_timeout=self.settings.ack_timeout,
        )
        self.connections[endpoint] = Connection(
            protocol,
            f"{base_url}{endpoint.path}",
            self.on_event,
            on_connected=self._on_connected,
            settings=connection_settings,
        )
        self.normalizers[endpoint] = Normalizer(endpoint)

    # -- the task tree --------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then stop the inputs, drain what is buffered and close."""
        async with asyncio.TaskGroup() as outer:
            publishing = outer.create_task(self.publisher.run(), name="publisher")
            writing = outer.create_task(self.state.run(), name="state-writer")
            balances = outer.create_task(self.balances.run(), name="balance-writer")
            remembering = outer.create_task(self.open_items.run(), name="open-items-writer")
            try:
                async with asyncio.TaskGroup() as inputs:
                    inputs.create_task(self.cluster.run(), name="cluster")
                    inputs.create_task(self._follow_cluster(), name="cluster-converge")
                    inputs.create_task(self._reconcile_periodically(), name="reconciler")
                    inputs.create_task(self.commands.run(), name="commands")
                    inputs.create_task(self._heartbeat(), name="heartbeat")
                    inputs.create_task(self._market_timers(), name="market-timers")
                    if self.account_sync is not None:
                        inputs.create_task(self.account_sync.run(), name="account-resync")
                    for endpoint, connection in self.connections.items():
                        inputs.create_task(connection.run(), name=f"bybit-{endpoint}")
                    if self.settings.metrics_port:
                        metrics = serve_metrics(self.metrics, self.settings.metrics_host, self.settings.metrics_port)
                        inputs.create_task(metrics, name="metrics")
                    inputs.create_task(_raise_when_set(stop), name="stop")
            except* Stopping:
                pass
            logger.info("stopping: inputs closed, handing our topics over and draining buffers")
            await self.cluster.leave()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.shutdown_grace):
                    await self.publisher.wait_drained()
                    await self.balances.wait_drained()
                    await self.state.flush()
                    await self.open_items.flush()
            for task in (publishing, writing, balances, remembering):
                task.cancel()
        if self.rest is not None:
            await self.rest.close()

    async def _reconcile_periodically(self) -> None:
        """Re-read on start-up, every reconcile interval, and soon after any Bybit socket (re)connects."""
        while True:
            self._reload_requested.clear()
            await self.reload()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reload_requested.wait(), self.settings.reconcile_interval)

    def _on_connected(self, endpoint: Endpoint) -> None:
        """A socket (re)connected: its books start over, and anything missed meanwhile is re-read."""
        self._reload_requested.set()
        market = self.markets.get(endpoint)
        if market is not None:
            result = market.reset(now=time.monotonic(), received_ms=int(self._wall() * 1000), trace_id=self._trace_id())
            self._publish_market(endpoint, result)

    async def put_account(self, item: Outgoing) -> None:
        """Publish an account event, and remember which orders and positions it leaves open (re-sync)."""
        self.open_items.observe(item)
        await self.publisher.put_account(item)

    def _trace_id(self) -> str:
        return f"{self._trace_prefix}-{next(self._trace_ids)}"

    def _publish_market(self, endpoint: Endpoint, result: MarketResult) -> None:
        for item in result.events:
            self.publisher.offer_market(item)
        for topic in result.resubscribe:
            connection = self.connections[endpoint]
            if topic in connection.protocol.wanted:
                logger.bind(endpoint=endpoint.value, topic=topic).info("resubscribing to resync")
                connection.resubscribe(topic)

    async def _market_timers(self) -> None:
        """Resubscribe books whose fresh snapshot is overdue; emit throttled top-N snapshots if configured."""
        interval = min(1.0, self.settings.book_top_interval)
        next_overdue_check = 0.0
        while True:
            now = time.monotonic()
            received_ms = int(self._wall() * 1000)
            for endpoint, market in self.markets.items():
                for item in market.top_snapshots(received_ms=received_ms, trace_id=self._trace_id()):
                    self.publisher.offer_market(item)
                if now >= next_overdue_check:
                    self._publish_market(endpoint, MarketResult(resubscribe=market.overdue(now)))
            if now >= next_overdue_check:
                next_overdue_check = now + 1.0
            await asyncio.sleep(interval)

    # -- converging to the desired state --------------------------------------------------------------------

    async def reload(self) -> None:
        """Re-read the whole desired set from PostgreSQL and converge to it."""
        async with self._reconcile_lock:
            try:
                desired = await self.store.load_desired()
            except DATABASE_ERRORS as error:
                logger.bind(error=type(error).__name__).warning("cannot read desired subscriptions; keeping ours")
                return
            if desired.revision != self.desired.revision:
                logger.bind(revision=desired.revision, subscriptions=len(desired)).info("desired set loaded")
            self.desired = desired
            self.reloads += 1
            await self._converge()

    def _on_cluster_change(self) -> None:
        self._cluster_changed.set()

    async def _follow_cluster(self) -> None:
        """Membership or the private lease moved: subscribe what became ours, drop what is no longer ours."""
        while True:
            await self._cluster_changed.wait()
            self._cluster_changed.clear()
            async with self._reconcile_lock:
                await self._converge()

    def _on_private_acquired(self, lease: PrivateLease) -> None:
        if self.account_sync is not None:
            self.account_sync.took_over(lease)

    async def on_command(self, command: Command) -> None:
        match command:
            case SubscriptionsChanged(revision=revision, changes=changes):
                async with self._reconcile_lock:
                    if revision <= self.desired.revision:
                        return  # already applied (a notice can arrive twice, or after a full read)
                    if revision == self.desired.revision + 1:
                        self.desired.apply(changes, revision)
                        logger.bind(revision=revision, changes=len(changes)).info("change notice applied")
                        await self._converge(trace_id=command.trace_id)
                        return
                logger.bind(expected=self.desired.revision + 1, got=revision).info("missed notices; re-reading")
                await self.reload()
            case ResyncRequested():
                await self.reload()

    async def _converge(self, trace_id: str | None = None) -> None:
        """Bind, subscribe and unsubscribe until Bybit and RabbitMQ match the desired set.

        `trace_id` is the change notice's: the ops it causes, and their acks, are logged under it.
        """
        desired_bindings = self.desired.bindings()
        # Bind before subscribing, so the first events of a new topic already have somewhere to go.
        for binding in sorted(desired_bindings - self.bound, key=_binding_order):
            try:
                await self.publisher.bind(binding.service, binding.channel_type, binding.key)
            except WorkerError as error:  # RabbitMQ away or the queue declared otherwise: retried next round
                logger.bind(service=binding.service, key=binding.key, error=str(error)).warning("cannot bind queue")
                continue
            self.bound.add(binding)
        topics = self.desired.topics()
        owned = self.cluster.owned(topics)  # no worker subscribes a topic it does not own
        actual = {endpoint: set(c.protocol.wanted) for endpoint, c in self.connections.items()}
        changes = topic_changes(actual, {e: t for e, t in owned.items() if e in self.connections})
        for endpoint, added in changes.subscribe.items():
            for topic in sorted(added):
                self._op_log(endpoint, topic, trace_id).info("subscribe requested")
                self.connections[endpoint].want(topic)
        for endpoint, removed in changes.unsubscribe.items():
            for topic in sorted(removed):
                self._op_log(endpoint, topic, trace_id).info("unsubscribe requested")
                self.connections[endpoint].unwant(topic)
            if endpoint in self.markets:
                self.markets[endpoint].forget(removed)
        for binding in sorted(self.bound - desired_bindings, key=_binding_order):
            try:
                await self.publisher.unbind(binding.service, binding.channel_type, binding.key)
            except WorkerError as error:
                logger.bind(service=binding.service, key=binding.key, error=str(error)).warning("cannot unbind queue")
                continue
            self.bound.discard(binding)
        self._write_known_statuses(topics)

    def _write_known_statuses(self, topics: dict[Endpoint, set[str]]) -> None:
        """Give rows created for an already settled topic (acked, rejected, or unservable) their status."""
        for endpoint, endpoint_topics in topics.items():
            connection = self.connections.get(endpoint)
            for topic in endpoint_topics:
                ids = frozenset(self.desired.subscription_ids(endpoint, topic))
                if self._statuses_written.get((endpoint, topic)) == ids:
                    continue
                if connection is None:
                    if self.cluster.private_served_elsewhere:
                        continue  # a worker with keys serves it: its acks write the status
                    self.state.set_status(endpoint, topic, SubscriptionStatus.FAILED, NO_KEYS)
                elif topic in connection.protocol.subscribed:
                    self.state.set_status(endpoint, topic, SubscriptionStatus.ACTIVE)
                elif topic in connection.protocol.failed:
                    reason = connection.protocol.failed[topic]
                    self.state.set_status(endpoint, topic, SubscriptionStatus.FAILED, reason)
                else:
                    continue  # still pending: its ack will write the status
                self._statuses_written[(endpoint, topic)] = ids

    # -- events from the Bybit sockets (the hot path) ------------------------------------------------------

    async def on_event(self, endpoint: Endpoint, event: Event) -> None:
        if endpoint is Endpoint.PRIVATE and self.account_sync is not None:
            self.account_sync.observe(event)
        match event:
            case Push():
                await self._on_push(endpoint, event)
            case Subscribed(topic=topic):
                self._op_log(endpoint, topic).info("subscribe acked")
                self.state.set_status(endpoint, topic, SubscriptionStatus.ACTIVE)
                self._statuses_written[(endpoint, topic)] = frozenset(self.desired.subscription_ids(endpoint, topic))
            case SubscribeRejected(topic=topic, reason=reason):
                self._op_log(endpoint, topic).bind(reason=reason).warning("bybit rejected a topic")
                self.state.set_status(endpoint, topic, SubscriptionStatus.FAILED, reason)
                self._statuses_written[(endpoint, topic)] = frozenset(self.desired.subscription_ids(endpoint, topic))
            case Authenticated():
                logger.bind(endpoint=endpoint.value).info("bybit private stream authenticated")
            case AuthRejected(reason=reason):
                logger.bind(reason=reason).error(
                    "bybit rejected our API key: check clock skew, key, secret and BYBIT_ENVIRONMENT"
                )
            case Unknown(kind=kind) | Malformed(kind=kind):
                self._count_once(f"frames:{type(event).__name__.lower()}:{kind}", endpoint)
            case _:
                pass

    async def _on_push(self, endpoint: Endpoint, push: Push) -> None:
        self.received[(endpoint, push.topic.partition(".")[0])] += 1
        received_ms = int(self._wall() * 1000)
        trace_id = self._trace_id()
        market = self.markets.get(endpoint)
        if market is not None and market.handles(push.topic):
            self._publish_market(
                endpoint, market.on_push(push, now=time.monotonic(), received_ms=received_ms, trace_id=trace_id)
            )
            self.state.touch(endpoint, push.topic, received_ms)
            self.counters[f"received:{endpoint.value}"] += 1
            return
        try:
            normalized = self.normalizers[endpoint].normalize(push, received_ms=received_ms, trace_id=trace_id)
        except PayloadError as error:
            self._count_once(f"payload:{error.kind}", endpoint)
            return
        for item in normalized.events:
            if item.account:
                await self.put_account(item)
            else:
                self.publisher.offer_market(item)
        for wallet in normalized.wallets:
            await self.balances.put(wallet)
        self.state.touch(endpoint, push.topic, received_ms)
        self.counters[f"received:{endpoint.value}"] += 1

    def _op_log(self, endpoint: Endpoint, topic: str, trace_id: str | None = None) -> Any:
        """A logger for one topic's op: remembers the trace id of the notice that asked for the op, so the
        ack, which arrives later on the socket's own task, is logged under the same trace id."""
        key = (endpoint, topic)
        if trace_id is not None:
            self._op_traces[key] = trace_id
        bound = logger.bind(endpoint=endpoint.value, topic=topic)
        remembered = self._op_traces.get(key)
        return bound.bind(trace_id=remembered) if remembered is not None else bound

    def _count_once(self, key: str, endpoint: Endpoint) -> None:
        self.counters[key] += 1
        if key not in self._logged_kinds:  # log once per kind; the counter keeps the total
            self._logged_kinds.add(key)
            logger.bind(endpoint=endpoint.value, kind=key).warning("unreadable frame from bybit (counted)")

    # -- health -------------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        sockets: dict[str, Any] = {}
        healthy = True
        for endpoint, connection in self.connections.items():
            protocol = connection.protocol
            wanted = len(protocol.wanted)
            up = connection.connected and (not endpoint.private or protocol.authenticated)
            if wanted and not up:
                healthy = False
            last = protocol.last_received
            sockets[endpoint.value] = {
                "wanted": wanted,
                "connected": connection.connected,
                "authenticated": protocol.authenticated if endpoint.private else None,
                "topics": len(protocol.subscribed),
                "failed_topics": len(protocol.failed),
                "last_message_age_s": round(now - last, 3) if last is not None and connection.connected else None,
                "reconnects": connection.reconnects,
                "auth_failures": connection.auth_failures,
                "last_end_reason": connection.last_end_reason,
            }
        if self.desired.topics().get(Endpoint.PRIVATE) and Endpoint.PRIVATE not in self.connections:
            sockets["private"] = {"wanted": len(self.desired.topics()[Endpoint.PRIVATE]), "detail": NO_KEYS}
        return {
            "healthy": healthy,
            "revision": self.desired.revision,
            "sockets": sockets,
            "publisher": self.publisher.stats_dict(),
            "counters": dict(self.counters),
            "market": {e.value: dict(m.counters) for e, m in self.markets.items() if m.counters},
            "commands_connected": self.commands.connected,
            "state_pending": self.state.pending,
            "account_resync": self.account_sync.state if self.account_sync is not None else None,
            "cluster": self.cluster.health(),
        }

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self.store.write_heartbeat(self.worker_id, self.health())
            except DATABASE_ERRORS as error:
                logger.bind(error=type(error).__name__).warning("could not write the heartbeat")
            await asyncio.sleep(HEARTBEAT_SECONDS)


def _binding_order(binding: Binding) -> tuple[str, str, str]:
    return (binding.service, binding.channel_type.value, binding.key)


async def _raise_when_set(stop: asyncio.Event) -> None:
    await stop.wait()
    raise Stopping
