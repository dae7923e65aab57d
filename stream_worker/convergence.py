"""Converging Bybit subscriptions and queue bindings to the desired state in PostgreSQL (level-triggered).

Triggers: start-up, the reconcile timer, a socket (re)connect, a change notice (applied in revision order; a gap
means a missed notice, so the whole set is re-read), and a cluster change. Each computes one plan with the pure
`reconciler.plan` and applies it under one lock, so two triggers never interleave their ops. Cancelled
subscriptions read with the set, as tombstones, are unbound under the same lock by their topic's owner, after the
plan's own unbinds (`state/tombstones.py`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping

from loguru import logger

from shared.commands import Command, ResyncRequested, SnapshotRequested, SubscriptionsChanged
from shared.enums import Endpoint, SubscriptionStatus
from shared.tasks import wait_set
from shared.topics import bybit_topic
from stream_worker.broker.publisher import Publisher
from stream_worker.cluster.ownership import Cluster
from stream_worker.envelopes.market import MarketState
from stream_worker.errors import WorkerError
from stream_worker.exchange.sockets import Sockets
from stream_worker.op_traces import OpTraces
from stream_worker.snapshots import SnapshotRequest, Snapshots
from stream_worker.state.desired import Binding, DesiredSet
from stream_worker.state.persistence import DATABASE_ERRORS, StateWriter, Store
from stream_worker.state.reconciler import plan
from stream_worker.state.tombstones import Tombstone, plan_tombstones

NO_KEYS = "BYBIT_API_KEY/BYBIT_API_SECRET are not configured: private channels are unavailable"


class Convergence:
    def __init__(
        self,
        *,
        store: Store,
        state: StateWriter,
        publisher: Publisher,
        connections: Mapping[Endpoint, Sockets],
        markets: Mapping[Endpoint, MarketState],
        cluster: Callable[[], Cluster],
        op_traces: OpTraces,
        snapshots: Snapshots,
        reconcile_interval: float,
    ) -> None:
        self.desired = DesiredSet()
        self.bound: set[Binding] = set()
        # Cancelled subscriptions whose binding may outlive every worker that bound it, read with the desired set
        # (so never newer than it); the topic's owner unbinds them (`state/tombstones.py`).
        self.tombstones: list[Tombstone] = []
        self.tombstones_unbound = 0
        self.reloads = 0  # full re-reads of the desired set that succeeded
        self._store = store
        self._state = state
        self._publisher = publisher
        self._connections = connections
        self._markets = markets
        self._cluster = cluster  # built after us: it asks us nothing, we ask it who owns what
        self._op_traces = op_traces
        self._snapshots = snapshots
        self._reconcile_interval = reconcile_interval
        self._lock = asyncio.Lock()
        self._reload_requested = asyncio.Event()
        self._cluster_changed = asyncio.Event()
        self._statuses_written: dict[tuple[Endpoint, str], frozenset[uuid.UUID]] = {}

    # -- triggers -----------------------------------------------------------------------------------------

    def request_reload(self) -> None:
        """Soon, not now: called from a socket's task when it (re)connects."""
        self._reload_requested.set()

    def cluster_changed(self) -> None:
        self._cluster_changed.set()

    async def run_timer(self) -> None:
        """Re-read on start-up, every reconcile interval, and soon after any reload request."""
        while True:
            self._reload_requested.clear()
            await self.reload()
            await wait_set(self._reload_requested, self._reconcile_interval)

    async def follow_cluster(self) -> None:
        """Membership or the private lease moved: subscribe what became ours, drop what is no longer ours."""
        while True:
            await self._cluster_changed.wait()
            self._cluster_changed.clear()
            async with self._lock:
                await self._converge()

    async def reload(self) -> None:
        """Re-read the whole desired set from PostgreSQL and converge to it."""
        async with self._lock:
            try:
                desired, tombstones = await self._store.load_desired()
            except DATABASE_ERRORS as error:
                logger.bind(error=type(error).__name__).warning("cannot read desired subscriptions; keeping ours")
                return
            if desired.revision != self.desired.revision:
                logger.bind(revision=desired.revision, subscriptions=len(desired)).info("desired set loaded")
            self.desired = desired
            self.tombstones = tombstones
            self.reloads += 1
            await self._converge()

    async def on_command(self, command: Command) -> None:
        match command:
            case SubscriptionsChanged(revision=revision, changes=changes):
                async with self._lock:
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
            case SnapshotRequested():
                self._snapshots.request(
                    SnapshotRequest(
                        service=command.requesting_service,
                        channel_type=command.channel_type,
                        endpoint=command.endpoint,
                        topic=command.topic,
                        trace_id=command.trace_id,
                        reason="requested",
                    )
                )

    # -- applying a plan ----------------------------------------------------------------------------------

    async def _converge(self, trace_id: str | None = None) -> None:
        """Bind, subscribe and unsubscribe until Bybit and RabbitMQ match the desired set.

        `trace_id` is the change notice's: the ops it causes, and their acks, are logged under it.
        """
        topics = self.desired.bybit_topics()
        private = self._connections.get(Endpoint.PRIVATE)
        steps = plan(
            desired_bindings=self.desired.bindings(),
            bound=self.bound,
            owned=self._cluster().claim(topics),  # no worker subscribes a topic it does not own
            wanted={endpoint: c.protocol.wanted for endpoint, c in self._connections.items()},
            binding_topics=self.desired.binding_topics(),
            # Bybit gives a private topic no initial state on subscribe; while the socket is down, the re-sync
            # after its (re)auth fetches everything for everyone anyway.
            silent_on_subscribe=(Endpoint.PRIVATE,) if private is not None and private.protocol.authenticated else (),
        )
        for binding in steps.bind:
            try:
                await self._publisher.bind(binding.service, binding.channel_type, binding.key)
            except WorkerError as error:  # RabbitMQ away or the queue declared otherwise: retried next round
                logger.bind(service=binding.service, key=binding.key, error=str(error)).warning("cannot bind queue")
                continue
            self.bound.add(binding)
        for endpoint, added in steps.subscribe.items():
            for topic in added:
                self._op_traces.log(endpoint, topic, trace_id).info("subscribe requested")
                self._connections[endpoint].want(topic)
        # After the binds (the queue exists and is bound: the snapshot lands before its next delta) and after the
        # subscribes (a private topic added now is already wanted; its snapshot waits for the ack).
        for step in steps.snapshot:
            if step.binding in self.bound:
                self._snapshots.request(
                    SnapshotRequest(
                        service=step.binding.service,
                        channel_type=step.binding.channel_type,
                        endpoint=step.endpoint,
                        topic=step.topic,
                        trace_id=trace_id or "join",
                        reason="join",
                    )
                )
        for endpoint, removed in steps.unsubscribe.items():
            for topic in removed:
                self._op_traces.log(endpoint, topic, trace_id).info("unsubscribe requested")
                self._connections[endpoint].unwant(topic)
            if endpoint in self._markets:
                self._markets[endpoint].forget(removed)
            self._snapshots.forget(endpoint, removed)
        for binding in steps.unbind:
            await self._unbind(binding, "cannot unbind queue")
        await self._apply_tombstones()
        self._write_known_statuses(self.desired.topics())

    async def _unbind(self, binding: Binding, failure: str) -> bool:
        """Unbind and forget it as bound; False (logged as `failure`) when RabbitMQ refused or was away."""
        try:
            await self._publisher.unbind(binding.service, binding.channel_type, binding.key)
        except WorkerError as error:
            logger.bind(service=binding.service, key=binding.key, error=str(error)).warning(failure)
            return False
        self.bound.discard(binding)
        return True

    async def _apply_tombstones(self) -> None:
        """Unbind the cancelled bindings whose topic we own and no live subscription wants; settle them in
        PostgreSQL. Under the convergence lock, like our binds: a newer subscription of the same binding is applied
        after this and binds it again (it is no longer in `bound`)."""
        if not self.tombstones:
            return
        steps = plan_tombstones(self.tombstones, desired_bindings=self.desired.bindings(), owns=self._cluster().owns)
        settled = set(steps.superseded)
        for binding, subscription_ids in steps.unbind.items():
            # RabbitMQ away: the tombstone stays, the next round retries it.
            if not await self._unbind(binding, "cannot unbind a cancelled subscription's queue"):
                continue
            logger.bind(service=binding.service, key=binding.key).info("cancelled subscription's queue unbound")
            self.tombstones_unbound += 1
            settled.update(subscription_ids)
        if not settled:
            return
        self.tombstones = [t for t in self.tombstones if t.subscription_id not in settled]
        try:
            await self._store.settle_tombstones(settled)
        except DATABASE_ERRORS as error:  # still pending in PostgreSQL: re-read and re-applied (harmlessly) later
            logger.bind(error=type(error).__name__).warning("cannot settle tombstones")

    # -- subscription statuses ----------------------------------------------------------------------------

    def settled(self, endpoint: Endpoint, topic: str, status: SubscriptionStatus, reason: str | None = None) -> None:
        """Bybit answered for a topic: every live row it serves (`order` serves `order.linear`) takes the status."""
        for served in self.desired.served_by(endpoint, topic) | {topic}:
            self._state.set_status(endpoint, served, status, reason)
            self._statuses_written[(endpoint, served)] = frozenset(self.desired.subscription_ids(endpoint, served))

    def _write_known_statuses(self, topics: dict[Endpoint, set[str]]) -> None:
        """Give rows created for an already settled topic (acked, rejected, or unservable) their status."""
        for endpoint, endpoint_topics in topics.items():
            connection = self._connections.get(endpoint)
            for topic in endpoint_topics:
                ids = frozenset(self.desired.subscription_ids(endpoint, topic))
                if self._statuses_written.get((endpoint, topic)) == ids:
                    continue
                upstream = bybit_topic(endpoint, topic)
                if connection is None:
                    if self._cluster().private_served_elsewhere:
                        continue  # a worker with keys serves it: its acks write the status
                    self.settled(endpoint, topic, SubscriptionStatus.FAILED, NO_KEYS)
                elif upstream in connection.protocol.subscribed:
                    self.settled(endpoint, topic, SubscriptionStatus.ACTIVE)
                elif upstream in connection.protocol.failed:
                    self.settled(endpoint, topic, SubscriptionStatus.FAILED, connection.protocol.failed[upstream])
                # else still pending: its ack will write the status
