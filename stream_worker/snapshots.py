"""Join and requested snapshots: one subscription's current state, published to its service's queue only.

A queue bound to a topic that is already streaming receives deltas only: Bybit sends a topic's snapshot once,
when the topic is first subscribed, and never again to a newcomer of ours. So the worker publishes what it
holds straight to the new queue (the default exchange, routing key = the queue's name), flagged
`snapshot: true`, through the same buffer and channel as the topic's deltas: the queue gets the snapshot
before the delta that follows it. The same happens on request (`POST /subscriptions/{id}/snapshot`), for a
consumer whose book broke.
- order book: our whole validated book as a `snapshot` with the `u`/`seq`/checksum of the last event published
  before it. A book that is not valid right now sends nothing: its next Bybit snapshot is routed to every
  bound queue, this one included, and that is "as soon as it is valid";
- ticker: the merged ticker (`type` "snapshot", every field in `changed`); kline: the latest candle, if open;
- order, position, balance: a REST fetch of open orders, positions or the wallet, with the re-sync's event ids,
  once the topic is acknowledged (Bybit gives a private topic no initial state, PROTOCOL.md §9);
- execution, trades and liquidations: nothing, they carry no state.
Nothing here decides when a join happens: the reconciler's plan says so.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import msgspec
from loguru import logger

from shared.backoff import Backoff
from shared.enums import ChannelType, Endpoint
from shared.routing import service_queue
from shared.tasks import wait_set
from shared.topics import bybit_topic
from stream_worker.broker.publisher import Publisher
from stream_worker.envelopes.market import MarketState
from stream_worker.envelopes.normalize import PayloadError
from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.exchange.rest import BybitRestError
from stream_worker.exchange.resync import AccountResync
from stream_worker.exchange.sockets import Sockets

STATEFUL_PRIVATE = frozenset({ChannelType.ORDER, ChannelType.POSITION, ChannelType.BALANCE})
PRIVATE_POLL = 0.2  # how often a waiting private snapshot looks whether its topic has been acknowledged
KLINE_PREFIX = "kline."


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    service: str
    channel_type: ChannelType
    endpoint: Endpoint
    topic: str  # the subscription's topic: `order.linear` fetches linear orders only
    trace_id: str
    reason: str  # "join" or "requested"

    @property
    def queue(self) -> str:
        return service_queue(self.service, self.channel_type)


class Snapshots:
    def __init__(
        self,
        *,
        markets: Mapping[Endpoint, MarketState],
        connections: Mapping[Endpoint, Sockets],
        publisher: Publisher,
        resync: AccountResync | None,
        wall: Callable[[], float],
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.counters: Counter[str] = Counter()
        self._markets = markets
        self._connections = connections
        self._publisher = publisher
        self._resync = resync
        self._wall = wall
        self._sleep = sleep
        self._backoff = Backoff(1.0, 60.0, rng or random.Random())
        self._nonce = itertools.count(1)
        self._klines: dict[tuple[Endpoint, str], Outgoing] = {}
        self._private: dict[tuple[str, str], SnapshotRequest] = {}  # (queue, topic): a repeat waits as one
        self._wake = asyncio.Event()

    @property
    def waiting(self) -> int:
        """Private snapshots not yet sent (waiting for their topic's ack, or retrying)."""
        return len(self._private)

    # -- inputs ---------------------------------------------------------------------------------------------

    def remember_kline(self, endpoint: Endpoint, topic: str, item: Outgoing) -> None:
        """The latest candle of a kline topic (klines are whole candles: the latest is the state)."""
        self._klines[(endpoint, topic)] = item

    def forget(self, endpoint: Endpoint, topics: list[str]) -> None:
        for topic in topics:
            self._klines.pop((endpoint, topic), None)

    def request(self, request: SnapshotRequest) -> None:
        """Publish `request`'s state to its queue now (public), or once its topic is acknowledged (private)."""
        connection = self._connections.get(request.endpoint)
        if connection is None or not connection.protocol.is_wanted(bybit_topic(request.endpoint, request.topic)):
            self.counters["snapshot:not_streamed_here"] += 1  # another worker streams it and answers
            return
        if request.endpoint is Endpoint.PRIVATE:
            if request.channel_type in STATEFUL_PRIVATE and self._resync is not None:
                self._private[(request.queue, request.topic)] = request
                self._wake.set()
            return
        item = self._public(request)
        if item is None:
            # Nothing valid to send: a book waiting for its snapshot, a ticker before its first push. Bybit's
            # next snapshot is routed to this queue too.
            self.counters[f"snapshot:none:{request.channel_type.value}"] += 1
            return
        self._publisher.offer_market(item)
        self.counters[f"snapshot:{request.reason}:{request.channel_type.value}"] += 1
        logger.bind(queue=request.queue, topic=request.topic, reason=request.reason).info("snapshot sent")

    def _public(self, request: SnapshotRequest) -> Outgoing | None:
        received_ms = int(self._wall() * 1000)
        nonce = next(self._nonce)
        if request.channel_type is ChannelType.KLINE:
            latest = self._klines.get((request.endpoint, request.topic))
            if latest is None or _confirmed(latest):
                return None
            envelope = msgspec.structs.replace(
                latest.envelope,
                event_id=f"{latest.envelope.event_id}:snapshot:{nonce}",
                snapshot=True,
                received_ts=received_ms,
                trace_id=request.trace_id,
            )
            return Outgoing(envelope, latest.channel_type, request.queue, False, direct=True)
        market = self._markets.get(request.endpoint)
        if market is None:
            return None
        return market.snapshot_of(
            request.topic, queue=request.queue, received_ms=received_ms, trace_id=request.trace_id, nonce=nonce
        )

    # -- private snapshots over REST ------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve private snapshots once their topic is acknowledged; retry a failed fetch with backoff."""
        while True:
            ready = self._ready()
            if not ready:
                self._wake.clear()
                await wait_set(self._wake, PRIVATE_POLL if self._private else None)
                continue
            for key, request in ready:
                try:
                    await self._fetch_and_publish(request)
                except (BybitRestError, PayloadError, TimeoutError) as error:
                    delay = self._backoff.next_delay()
                    self.counters["snapshot:private_failed"] += 1
                    logger.bind(queue=request.queue, error=str(error), retry_in_s=round(delay, 2)).warning(
                        "private snapshot failed"
                    )
                    await self._sleep(delay)
                    break
                self._backoff.reset()
                if self._private.get(key) is request:
                    del self._private[key]

    def _ready(self) -> list[tuple[tuple[str, str], SnapshotRequest]]:
        connection = self._connections.get(Endpoint.PRIVATE)
        if connection is None:
            self._private.clear()
            return []
        protocol = connection.protocol
        for key, request in list(self._private.items()):
            upstream = bybit_topic(Endpoint.PRIVATE, request.topic)
            if not protocol.is_wanted(upstream) or upstream in protocol.failed:
                del self._private[key]  # cancelled, handed over or refused: nothing to send any more
        if not protocol.authenticated:
            return []
        return [
            (key, request)
            for key, request in list(self._private.items())
            if bybit_topic(Endpoint.PRIVATE, request.topic) in protocol.subscribed
        ]

    async def _fetch_and_publish(self, request: SnapshotRequest) -> None:
        assert self._resync is not None
        result = await self._resync.run(
            [request.topic], since_ms=None, received_ms=int(self._wall() * 1000), trace_id=request.trace_id
        )
        for item in result.events:
            await self._publisher.put_account(
                Outgoing(item.envelope, item.channel_type, request.queue, True, direct=True)
            )
        self.counters[f"snapshot:{request.reason}:{request.channel_type.value}"] += 1
        logger.bind(queue=request.queue, topic=request.topic, events=len(result.events)).info("private snapshot sent")


def _confirmed(item: Outgoing) -> bool:
    payload = item.envelope.payload
    if isinstance(payload, msgspec.Raw):
        payload = msgspec.json.decode(payload)
    return isinstance(payload, dict) and bool(payload.get("confirm"))
