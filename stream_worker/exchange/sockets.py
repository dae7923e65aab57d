"""All of one category's Bybit sockets, seen by the rest of the worker as one: topics are sharded across them.

A category carries more topics than one socket may (21,000 args characters; 2,000 option topics, §5.2), so the
worker holds as many sockets as the `ShardPlan` needs. The rest of the worker keeps talking to one object per
category: `want`, `unwant`, `resubscribe`, and a read-only `protocol` view over every socket's core.

Each socket's events pass through here first: a push from a socket that no longer carries its topic (it moved)
is dropped, and a capacity refusal moves the topic to another socket instead of parking it as failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Protocol

from loguru import logger

from shared.enums import Endpoint
from stream_worker.bybit.events import Event, Push, Subscribed, SubscribeRejected
from stream_worker.bybit.shards import ShardLimits, ShardPlan
from stream_worker.exchange.connection import Connection

EventHandler = Callable[[Endpoint, Event], Awaitable[None]]
ConnectedHandler = Callable[[Endpoint, Collection[str]], None]

# Bybit's texts for a full connection are undocumented (PROTOCOL.md §5.2-5.3); these are the ones known or
# probable. Any other refusal on a socket that carries other topics counts as capacity too (see `_refused`).
CAPACITY_HINTS = ("args length", "topics size", "exceed", "too many", "limit")
PER_TOPIC_REFUSALS = ("handler not found", "already subscribed", "not authorized", "unauthorized")


class ConnectionFactory(Protocol):
    def __call__(
        self,
        index: int,
        on_event: Callable[[Endpoint, Event], Awaitable[None]],
        on_connected: Callable[[Endpoint], None],
        /,
    ) -> Connection: ...


class SocketsView:
    """What `BybitProtocol` tells about one socket, told about all of a category's sockets together."""

    def __init__(self, sockets: Sockets) -> None:
        self._sockets = sockets

    @property
    def endpoint(self) -> Endpoint:
        return self._sockets.endpoint

    @property
    def authenticated(self) -> bool:
        return self._sockets.first.protocol.authenticated

    @property
    def wanted(self) -> frozenset[str]:
        return frozenset().union(*(c.protocol.wanted for c in self._sockets.connections))

    def is_wanted(self, topic: str) -> bool:
        return topic in self._sockets.plan

    @property
    def subscribed(self) -> frozenset[str]:
        return frozenset().union(*(c.protocol.subscribed for c in self._sockets.connections))

    @property
    def failed(self) -> Mapping[str, str]:
        failed: dict[str, str] = {}
        for connection in self._sockets.connections:
            failed.update(connection.protocol.failed)
        return failed

    @property
    def conn_id(self) -> str | None:
        return self._sockets.first.protocol.conn_id

    @property
    def last_received(self) -> float | None:
        times = [c.protocol.last_received for c in self._sockets.active if c.protocol.last_received is not None]
        return min(times) if times else None  # the quietest socket is the one health should see


class Sockets:
    """One category's sockets. Socket 0 always exists; the others are opened as topics need them."""

    def __init__(
        self,
        endpoint: Endpoint,
        make: ConnectionFactory,
        *,
        limits: ShardLimits,
        on_event: EventHandler,
        on_connected: ConnectedHandler | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.plan = ShardPlan(limits)
        self._make = make
        self._on_event = on_event
        self._on_connected = on_connected
        self.connections: list[Connection] = []
        self.moved = 0  # topics moved between sockets: capacity refusals and consolidation
        self.protocol = SocketsView(self)
        self._started = 0  # connections whose run task exists
        self._grown = asyncio.Event()
        self._connection(0)

    # -- what the rest of the worker reads ----------------------------------------------------------------

    @property
    def first(self) -> Connection:
        return self.connections[0]

    @property
    def active(self) -> list[Connection]:
        """Sockets that carry topics, or socket 0 when none does: the ones whose state health reports."""
        carrying = [c for c in self.connections if c.protocol.wanted]
        return carrying or [self.connections[0]]

    @property
    def open_sockets(self) -> int:
        return sum(1 for c in self.connections if c.connected)

    @property
    def connected(self) -> bool:
        return all(c.connected for c in self.active)

    @property
    def reconnects(self) -> int:
        return sum(c.reconnects for c in self.connections)

    @property
    def auth_failures(self) -> int:
        return sum(c.auth_failures for c in self.connections)

    @property
    def last_end_reason(self) -> str | None:
        reasons = [c.last_end_reason for c in self.active if c.last_end_reason is not None]
        return reasons[0] if reasons else self.first.last_end_reason

    @property
    def conn_id(self) -> str | None:
        return self.first.conn_id

    # -- desired topics -----------------------------------------------------------------------------------

    def want(self, topic: str) -> None:
        if topic in self.plan:
            return
        index = self.plan.place(topic)
        self._connection(index).want(topic)

    def unwant(self, topic: str) -> None:
        index = self.plan.remove(topic)
        if index is None:
            # Not planned here, but a socket may still hold it parked as failed: forget it everywhere.
            for connection in self.connections:
                connection.unwant(topic)
            return
        self.connections[index].unwant(topic)
        for move in self.plan.consolidate():
            self._move(move.topic, move.source, move.target, "consolidated onto fewer sockets")

    def resubscribe(self, topic: str) -> None:
        index = self.plan.shard_of(topic)
        if index is not None:
            self.connections[index].resubscribe(topic)

    # -- the sockets' tasks -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run every socket, including the ones opened later, until cancelled."""
        async with asyncio.TaskGroup() as group:
            while True:
                while self._started < len(self.connections):
                    index = self._started
                    group.create_task(self.connections[index].run(), name=f"bybit-{self.endpoint}-{index}")
                    self._started += 1
                self._grown.clear()
                await self._grown.wait()

    def _connection(self, index: int) -> Connection:
        while len(self.connections) <= index:
            number = len(self.connections)
            connection = self._make(number, self._events_of(number), self._connects_of(number))
            self.connections.append(connection)
            if number:
                logger.bind(endpoint=self.endpoint.value, socket=number).info("another socket for this category")
            self._grown.set()
        return self.connections[index]

    def _events_of(self, index: int) -> EventHandler:
        async def on_event(endpoint: Endpoint, event: Event) -> None:
            await self._event(index, endpoint, event)

        return on_event

    def _connects_of(self, index: int) -> Callable[[Endpoint], None]:
        def on_connected(endpoint: Endpoint) -> None:
            self._connected(index, endpoint)

        return on_connected

    def _move(self, topic: str, source: int, target: int, why: str) -> None:
        self.moved += 1
        logger.bind(endpoint=self.endpoint.value, topic=topic, source=source, target=target).info(why)
        self.connections[source].unwant(topic)
        self._connection(target).want(topic)

    # -- events of one socket -----------------------------------------------------------------------------

    async def _event(self, index: int, endpoint: Endpoint, event: Event) -> None:
        match event:
            case Push(topic=topic) if self.plan.shard_of(topic) not in (index, None):
                return  # moved to another socket; this one's unsubscribe is on its way
            case Subscribed(topic=topic) if self.plan.shard_of(topic) not in (index, None):
                return  # acked on a socket that no longer carries it: its ack on the new one counts
            case SubscribeRejected(topic=topic, reason=reason) if self.plan.shard_of(topic) == index:
                if self._refused(index, topic, reason):
                    return
            case SubscribeRejected(topic=topic) if self.plan.shard_of(topic) not in (index, None):
                return
        await self._on_event(endpoint, event)

    def _refused(self, index: int, topic: str, reason: str) -> bool:
        """A refusal on a socket that carries other topics, not one of the per-topic texts, is the socket being
        full: move the topic. True when handled here (the topic is not failed)."""
        if self.endpoint.private:
            return False  # one private socket per worker: Bybit's private stream has no such caps
        text = reason.lower()
        if any(hint in text for hint in PER_TOPIC_REFUSALS) and not any(hint in text for hint in CAPACITY_HINTS):
            return False
        target = self.plan.refused_for_capacity(topic)
        if target is None:
            return False  # alone on its socket and still refused: no socket can carry it
        self.moved += 1
        logger.bind(endpoint=self.endpoint.value, topic=topic, source=index, target=target, reason=reason).warning(
            "bybit refused a topic for capacity: moving it to another socket"
        )
        self.connections[index].unwant(topic)  # clears its parked refusal there
        self._connection(target).want(topic)
        return True

    def _connected(self, index: int, endpoint: Endpoint) -> None:
        if self._on_connected is not None:
            self._on_connected(endpoint, self.connections[index].protocol.wanted)
