"""The stream worker's wiring: builds the parts and owns their task tree. Nothing else lives here.

The layers and the path of a Bybit frame through them are in docs/architecture.md. Each layer with settings of
its own builds itself from them (`exchange/assembly.py`); here, each part is handed the others it talks to, and
`run` starts the inputs, then stops them, hands our topics over and drains, in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from loguru import logger

from shared.enums import Endpoint
from shared.tasks import until_first_ends
from stream_worker.broker.commands import CommandListener
from stream_worker.broker.publisher import Publisher
from stream_worker.cluster.identity import claim_worker_id
from stream_worker.cluster.membership import MembershipStore
from stream_worker.cluster.ownership import Cluster
from stream_worker.convergence import Convergence
from stream_worker.dispatch import Dispatcher, TraceIds
from stream_worker.envelopes.market import BookOutput, MarketState
from stream_worker.envelopes.normalize import Normalizer
from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.errors import WorkerError
from stream_worker.exchange.account_sync import AccountSync
from stream_worker.exchange.assembly import PUBLIC_ENDPOINTS, build_exchange
from stream_worker.exchange.connection import ConnectionSettings
from stream_worker.exchange.resync import AccountResync
from stream_worker.exchange.sockets import Sockets
from stream_worker.health import Health, write_heartbeats
from stream_worker.metrics import PublishTally, serve_metrics, worker_registry
from stream_worker.op_traces import OpTraces
from stream_worker.settings import WorkerSettings
from stream_worker.silence import SilenceWatch
from stream_worker.snapshots import Snapshots
from stream_worker.state.balances import BalanceWriter
from stream_worker.state.desired import DesiredSet
from stream_worker.state.open_items import OpenItems
from stream_worker.state.persistence import DATABASE_ERRORS, StateWriter, Store


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
        self.instance_id = uuid.uuid4().hex
        self.store = store
        self.publisher = publisher
        self.state = StateWriter(store)
        self.balances = BalanceWriter(store)
        self.open_items = OpenItems(store)
        self.published = PublishTally()
        publisher.on_handed_over = self.published.on_handed_over
        trace_id = TraceIds()
        op_traces = OpTraces()

        exchange = build_exchange(
            settings, engine=store.engine, database_timeout=store.timeout, connection=connection_settings
        )
        self.capture = exchange.capture
        self.connect_budget = exchange.connect_budget
        self.rest = exchange.rest
        self.markets = {
            endpoint: MarketState(
                endpoint,
                book_output=BookOutput(settings.book_output),
                top_levels=settings.book_top_levels,
                checksum_levels=settings.book_checksum_levels,
                snapshot_timeout=settings.snapshot_timeout,
                gap_check=settings.book_gap_check,
            )
            for endpoint in PUBLIC_ENDPOINTS
        }
        self.normalizers = {endpoint: Normalizer(endpoint) for endpoint in exchange.endpoints}
        self.connections: dict[Endpoint, Sockets] = {}  # filled below, once the dispatcher exists

        self.account_sync: AccountSync | None = None
        resync: AccountResync | None = None
        if exchange.rest is not None and exchange.private_protocol is not None:
            resync = AccountResync(exchange.rest, self.open_items, option_base_coins=settings.option_base_coins)
            self.account_sync = AccountSync(
                resync,
                exchange.private_protocol,
                put_account=self.put_account,
                balances=self.balances,
                wall=wall,
                trace_id=trace_id,
                interval=settings.account_resync_interval,
            )
        self.snapshots = Snapshots(
            markets=self.markets, connections=self.connections, publisher=publisher, resync=resync, wall=wall
        )
        self.convergence = Convergence(
            store=store,
            state=self.state,
            publisher=publisher,
            connections=self.connections,
            markets=self.markets,
            cluster=lambda: self.cluster,
            op_traces=op_traces,
            snapshots=self.snapshots,
            reconcile_interval=settings.reconcile_interval,
        )
        self.dispatcher = Dispatcher(
            connections=self.connections,
            markets=self.markets,
            normalizers=self.normalizers,
            publisher=publisher,
            put_account=self.put_account,
            balances=self.balances,
            state=self.state,
            convergence=self.convergence,
            op_traces=op_traces,
            trace_id=trace_id,
            account_sync=lambda: self.account_sync,
            snapshots=self.snapshots,
            silence=SilenceWatch(settings.stale_after),
            wall=wall,
            book_top_interval=settings.book_top_interval,
        )
        for endpoint in exchange.endpoints:
            self.connections[endpoint] = exchange.sockets.category(
                endpoint,
                on_event=self.dispatcher.on_event,
                on_connected=self.dispatcher.on_connected,
                private=exchange.private_protocol,
            )
        self.commands = CommandListener(
            settings.rabbitmq_url,
            self.worker_id,
            self.instance_id,
            store.deployment_id,
            self.convergence.on_command,
            reread=self.convergence.reload,
        )
        membership = MembershipStore(
            store.engine,
            worker_id=self.worker_id,
            instance_id=self.instance_id,
            ttl=settings.lease_ttl,
            timeout=min(store.timeout, settings.lease_ttl / 2),
        )
        account_sync = self.account_sync
        self.cluster = Cluster(
            membership,
            renew_interval=settings.lease_renew_interval,
            can_serve_private=Endpoint.PRIVATE in self.connections,
            on_change=self.convergence.cluster_changed,
            on_private_acquired=account_sync.took_over if account_sync is not None else lambda _lease: None,
            last_private_frame_ms=lambda: account_sync.last_frame_ms if account_sync is not None else None,
            subscribed=lambda: {endpoint: c.protocol.subscribed for endpoint, c in self.connections.items()},
        )
        self.health = Health(self, broker_grace=settings.broker_grace)
        self.metrics = worker_registry(self, self.published)

    @property
    def desired(self) -> DesiredSet:
        return self.convergence.desired

    async def put_account(self, item: Outgoing) -> None:
        """Publish an account event, and remember which orders and positions it leaves open (re-sync)."""
        self.open_items.observe(item)
        await self.publisher.put_account(item)

    # -- the task tree --------------------------------------------------------------------------------------

    def _inputs(self, stop: asyncio.Event) -> dict[str, Coroutine[Any, Any, object]]:
        """What feeds the worker; each runs until cancelled, and `stop` ends them all."""
        inputs: dict[str, Coroutine[Any, Any, object]] = {
            "stop": stop.wait(),
            "cluster": self.cluster.run(),
            "cluster-converge": self.convergence.follow_cluster(),
            "reconciler": self.convergence.run_timer(),
            "commands": self.commands.run(),
            "heartbeat": write_heartbeats(self.store, self.worker_id, self.health.report),
            "market-timers": self.dispatcher.run_market_timers(),
            "snapshots": self.snapshots.run(),
        }
        if self.account_sync is not None:
            inputs["account-resync"] = self.account_sync.run()
        for endpoint, sockets in self.connections.items():
            inputs[f"bybit-{endpoint}"] = sockets.run()
        if self.settings.metrics_port:
            inputs["metrics"] = serve_metrics(self.metrics, self.settings.metrics_host, self.settings.metrics_port)
        return inputs

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then stop the inputs, drain what is buffered and close. Raises
        DuplicateWorkerId, before starting anything, if another running worker has our worker id."""
        if not await claim_worker_id(self.cluster.store, stop, poll=self.settings.lease_renew_interval):
            if self.rest is not None:
                await self.rest.close()
            return
        async with asyncio.TaskGroup() as outer:
            publishing = outer.create_task(self.publisher.run(), name="publisher")
            writing = outer.create_task(self.state.run(), name="state-writer")
            balances = outer.create_task(self.balances.run(), name="balance-writer")
            capturing = outer.create_task(self.capture.run(), name="capture") if self.capture is not None else None
            remembering = outer.create_task(self.open_items.run(), name="open-items-writer")
            ended = await until_first_ends(self._inputs(stop))
            if ended is not None:
                raise ended
            if not stop.is_set():
                raise WorkerError("an input task of the worker ended on its own")
            logger.info("stopping: inputs closed, handing our topics over and draining buffers")
            # The successor's re-sync reads the orders and positions we published as open from PostgreSQL: store
            # them before the lease passes on, and whether or not the drain below finishes within the grace.
            with contextlib.suppress(TimeoutError, *DATABASE_ERRORS):
                async with asyncio.timeout(self.settings.shutdown_grace):
                    await self.open_items.flush()
            await self.cluster.leave()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.shutdown_grace):
                    await self.publisher.wait_drained()
                    await self.balances.wait_drained()
                    await self.state.flush()
                    await self.open_items.flush()
            for task in (publishing, writing, balances, remembering, capturing):
                if task is not None:
                    task.cancel()  # the capture writes what it holds before it ends
        if self.rest is not None:
            await self.rest.close()
