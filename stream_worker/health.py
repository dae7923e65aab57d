"""The worker's own account of its health: written as its heartbeat row, read by the API's /health and status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import msgspec
from loguru import logger

from shared.enums import Endpoint
from shared.heartbeat import PublisherHealth, ResyncHealth, SocketHealth, WorkerHeartbeat
from stream_worker.broker.commands import CommandListener
from stream_worker.broker.publisher import Publisher
from stream_worker.cluster.ownership import Cluster
from stream_worker.convergence import NO_KEYS, Convergence
from stream_worker.dispatch import Dispatcher
from stream_worker.envelopes.market import MarketState
from stream_worker.exchange.account_sync import AccountSync
from stream_worker.exchange.sockets import Sockets
from stream_worker.state.persistence import DATABASE_ERRORS, StateWriter, Store

HEARTBEAT_SECONDS = 5.0


def broker_problems(publisher_down_for: float | None, commands_down_for: float | None, grace: float) -> list[str]:
    """What makes the worker unhealthy on the RabbitMQ side: a link down for longer than `grace` seconds.

    A short blip (a broker restart, a reconnect) is not worth a page, so it gets `grace` to come back; after
    that the events (publisher) or the change notices (command listener) are not flowing and /health says so.
    """
    problems = []
    if publisher_down_for is not None and publisher_down_for > grace:
        problems.append(f"RabbitMQ publisher disconnected for {publisher_down_for:.0f}s")
    if commands_down_for is not None and commands_down_for > grace:
        problems.append(f"RabbitMQ command listener disconnected for {commands_down_for:.0f}s")
    return problems


class WorkerParts(Protocol):
    """What the health report reads of the worker (the worker hands itself over as one)."""

    @property
    def connections(self) -> Mapping[Endpoint, Sockets]: ...
    @property
    def markets(self) -> Mapping[Endpoint, MarketState]: ...
    @property
    def publisher(self) -> Publisher: ...
    @property
    def commands(self) -> CommandListener: ...
    @property
    def state(self) -> StateWriter: ...
    @property
    def convergence(self) -> Convergence: ...
    @property
    def dispatcher(self) -> Dispatcher: ...
    @property
    def cluster(self) -> Cluster: ...
    @property
    def account_sync(self) -> AccountSync | None: ...


class Health:
    def __init__(
        self, parts: WorkerParts, *, broker_grace: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._parts = parts
        self._broker_grace = broker_grace
        self._clock = clock

    def report(self) -> WorkerHeartbeat:
        now = self._clock()
        sockets: dict[str, SocketHealth] = {}
        problems: list[str] = []
        for endpoint, connection in self._parts.connections.items():
            protocol = connection.protocol
            wanted = len(protocol.wanted)
            up = connection.connected and (not endpoint.private or protocol.authenticated)
            if wanted and not up:
                problems.append(f"Bybit socket {endpoint.value} is down")
            last = protocol.last_received
            sockets[endpoint.value] = SocketHealth(
                wanted=wanted,
                connected=connection.connected,
                authenticated=protocol.authenticated if endpoint.private else None,
                topics=len(protocol.subscribed),
                failed_topics=len(protocol.failed),
                last_message_age_s=round(now - last, 3) if last is not None and connection.connected else None,
                reconnects=connection.reconnects,
                auth_failures=connection.auth_failures,
                last_end_reason=connection.last_end_reason,
                conn_id=connection.conn_id,
                sockets=connection.open_sockets,
            )
        desired = self._parts.convergence.desired.topics()
        if desired.get(Endpoint.PRIVATE) and Endpoint.PRIVATE not in self._parts.connections:
            sockets["private"] = SocketHealth(wanted=len(desired[Endpoint.PRIVATE]), detail=NO_KEYS)
        resync = self._parts.account_sync.state if self._parts.account_sync is not None else None
        publisher_down, commands_down = self._parts.publisher.down_for(now), self._parts.commands.down_for(now)
        problems += broker_problems(publisher_down, commands_down, self._broker_grace)
        publisher = msgspec.convert(self._parts.publisher.stats_dict(), PublisherHealth)
        publisher.down_for_s = _rounded(publisher_down)
        return WorkerHeartbeat(
            healthy=not problems,
            problems=problems,
            revision=self._parts.convergence.desired.revision,
            sockets=sockets,
            publisher=publisher,
            counters=dict(self._parts.dispatcher.counters),
            market={e.value: dict(m.counters) for e, m in self._parts.markets.items() if m.counters},
            commands_connected=self._parts.commands.connected,
            commands_down_for_s=_rounded(commands_down),
            state_pending=self._parts.state.pending,
            account_resync=msgspec.convert(resync, ResyncHealth) if resync is not None else None,
            cluster=self._parts.cluster.health(),
        )


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


async def write_heartbeats(
    store: Store, worker_id: str, report: Callable[[], WorkerHeartbeat], interval: float = HEARTBEAT_SECONDS
) -> None:
    while True:
        try:
            await store.write_heartbeat(worker_id, report())
        except DATABASE_ERRORS as error:
            logger.bind(error=type(error).__name__).warning("could not write the heartbeat")
        await asyncio.sleep(interval)
