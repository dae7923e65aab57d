"""Events from the Bybit sockets, the hot path: pushes become envelopes for the publisher, acks become statuses.

Every socket's read loop calls `on_event` for each event its protocol core returns. Nothing here awaits RabbitMQ
or PostgreSQL directly: market events are offered to a bounded buffer, account events wait for room in theirs,
statuses and `last_message_at` go to the state writer.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping

from loguru import logger

from shared.enums import Endpoint, SubscriptionStatus
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
from stream_worker.convergence import Convergence
from stream_worker.envelopes.market import MarketResult, MarketState
from stream_worker.envelopes.normalize import Normalizer, PayloadError
from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.exchange.account_sync import AccountSync
from stream_worker.exchange.sockets import Sockets
from stream_worker.op_traces import OpTraces
from stream_worker.silence import CHANNEL_OF_ROOT, SilenceWatch
from stream_worker.snapshots import KLINE_PREFIX, Snapshots
from stream_worker.state.balances import BalanceWriter
from stream_worker.state.persistence import StateWriter

PUBLIC_ROOTS = frozenset(CHANNEL_OF_ROOT)
_RECEIVED_KEYS = {endpoint: f"received:{endpoint.value}" for endpoint in Endpoint}  # made once, not per push


class TraceIds:
    """Trace ids for frames and timer events: unique per process, cheap to make."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:8]
        self._next = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}-{next(self._next)}"


class Dispatcher:
    def __init__(
        self,
        *,
        connections: Mapping[Endpoint, Sockets],
        markets: Mapping[Endpoint, MarketState],
        normalizers: Mapping[Endpoint, Normalizer],
        publisher: Publisher,
        balances: BalanceWriter,
        put_account: Callable[[Outgoing], Awaitable[None]] | None = None,  # default: publisher.put_account
        state: StateWriter,
        convergence: Convergence,
        op_traces: OpTraces,
        trace_id: Callable[[], str],
        account_sync: Callable[[], AccountSync | None],
        snapshots: Snapshots,
        silence: SilenceWatch,
        wall: Callable[[], float] = time.time,
        book_top_interval: float = 1.0,
    ) -> None:
        self.counters: Counter[str] = Counter()
        self.received: Counter[tuple[Endpoint, str]] = Counter()  # pushes per (socket, topic root), for metrics
        self._connections = connections
        self._markets = markets
        self._normalizers = normalizers
        self._publisher = publisher
        self._balances = balances
        self._put_account = put_account or publisher.put_account
        self._state = state
        self._convergence = convergence
        self._op_traces = op_traces
        self._trace_id = trace_id
        self._account_sync = account_sync
        self._snapshots = snapshots
        self.silence = silence
        self._wall = wall
        self._book_top_interval = book_top_interval
        self._logged_kinds: set[str] = set()

    async def on_event(self, endpoint: Endpoint, event: Event) -> None:
        if endpoint is Endpoint.PRIVATE and (account_sync := self._account_sync()) is not None:
            account_sync.observe(event)
        match event:
            case Push():
                await self._on_push(endpoint, event)
            case Subscribed(topic=topic):
                self._op_traces.log(endpoint, topic).info("subscribe acked")
                self._convergence.settled(endpoint, topic, SubscriptionStatus.ACTIVE)
                if endpoint is not Endpoint.PRIVATE:
                    key = (endpoint, topic)
                    self.silence.acked(key, time.monotonic())
                    if key not in self.silence.stale:  # rows a previous silence (or process) left stale
                        self._state.set_stale(endpoint, topic, None)
            case SubscribeRejected(topic=topic, reason=reason, conn_id=conn_id):
                log = self._op_traces.log(endpoint, topic).bind(reason=reason, conn_id=conn_id)
                log.warning("bybit rejected a topic")
                self._convergence.settled(endpoint, topic, SubscriptionStatus.FAILED, reason)
            case Authenticated():
                logger.bind(endpoint=endpoint.value).info("bybit private stream authenticated")
            case AuthRejected(reason=reason, conn_id=conn_id):
                logger.bind(reason=reason, conn_id=conn_id).error(
                    "bybit rejected our API key: check clock skew, key, secret and BYBIT_ENVIRONMENT"
                )
            case Malformed(kind=kind, topic=topic):
                self._count_once(f"frames:malformed:{kind}", endpoint)
                market = self._markets.get(endpoint)
                if topic is not None and market is not None and market.handles(topic):
                    received_ms = int(self._wall() * 1000)
                    result = market.on_unreadable(
                        topic, now=time.monotonic(), received_ms=received_ms, trace_id=self._trace_id()
                    )
                    self._publish_market(endpoint, result)
            case Unknown(kind=kind):
                self._count_once(f"frames:unknown:{kind}", endpoint)
            case _:
                pass

    def on_connected(self, endpoint: Endpoint, topics: Collection[str] | None = None) -> None:
        """A socket (re)connected: its books start over, and anything missed meanwhile is re-read.

        `topics`: the ones that socket carries (a category may have several sockets); None: all of them.
        """
        self._convergence.request_reload()
        market = self._markets.get(endpoint)
        if market is not None:
            result = market.reset(
                now=time.monotonic(), received_ms=int(self._wall() * 1000), trace_id=self._trace_id(), topics=topics
            )
            self._publish_market(endpoint, result)

    async def run_market_timers(self) -> None:
        """Resubscribe books whose fresh snapshot is overdue; emit throttled top-N snapshots if configured."""
        interval = min(1.0, self._book_top_interval)
        next_overdue_check = 0.0
        while True:
            now = time.monotonic()
            received_ms = int(self._wall() * 1000)
            for endpoint, market in self._markets.items():
                for item in market.top_snapshots(received_ms=received_ms, trace_id=self._trace_id()):
                    self._publisher.offer_market(item)
                if now >= next_overdue_check:
                    self._publish_market(endpoint, MarketResult(resubscribe=market.overdue(now)))
            if now >= next_overdue_check:
                next_overdue_check = now + 1.0
                self._report_silent(now, received_ms)
            await asyncio.sleep(interval)

    def _report_silent(self, now: float, received_ms: int) -> None:
        """Acknowledged topics that stopped pushing: report them stale and resubscribe each once."""
        subscribed: dict[Endpoint, frozenset[str]] = {
            e: c.protocol.subscribed for e, c in self._connections.items() if e is not Endpoint.PRIVATE
        }
        for endpoint, topic in self.silence.check(subscribed, now):
            self.counters["stale:detected"] += 1
            self._state.set_stale(endpoint, topic, received_ms)
            logger.bind(endpoint=endpoint.value, topic=topic, threshold_s=self.silence.threshold(topic)).warning(
                "acknowledged topic is silent: reported stale, resubscribing once"
            )
            self._connections[endpoint].resubscribe(topic)

    def _publish_market(self, endpoint: Endpoint, result: MarketResult) -> None:
        for item in result.events:
            self._publisher.offer_market(item)
        for topic in result.resubscribe:
            connection = self._connections[endpoint]
            if topic in connection.protocol.wanted:
                logger.bind(endpoint=endpoint.value, topic=topic).info("resubscribing to resync")
                connection.resubscribe(topic)

    async def _on_push(self, endpoint: Endpoint, push: Push) -> None:
        self.received[(endpoint, push.topic.partition(".")[0])] += 1
        if endpoint is not Endpoint.PRIVATE:
            topic = push.topic
            if not self._connections[endpoint].protocol.is_wanted(topic) and topic[: topic.find(".")] in PUBLIC_ROOTS:
                # In flight when we unsubscribed (books push every 10-20 ms): nobody wants it, and letting it in
                # would rebuild the topic's state, say book_invalid and ask to resubscribe (AUDIT C1). A topic we do
                # not know at all goes on to the normalizer, which counts it as unknown.
                self.counters["dropped:unwanted"] += 1
                return
            if self.silence.heard((endpoint, push.topic), push.received_at):
                self._state.set_stale(endpoint, push.topic, None)
                logger.bind(endpoint=endpoint.value, topic=push.topic).info("silent topic delivers again: active")
        received_ms = int(self._wall() * 1000)
        trace_id = self._trace_id()
        market = self._markets.get(endpoint)
        if market is not None and market.handles(push.topic):
            self._publish_market(
                endpoint, market.on_push(push, now=time.monotonic(), received_ms=received_ms, trace_id=trace_id)
            )
            self._state.touch(endpoint, push.topic, received_ms)
            self.counters[_RECEIVED_KEYS[endpoint]] += 1
            return
        try:
            normalized = self._normalizers[endpoint].normalize(push, received_ms=received_ms, trace_id=trace_id)
        except PayloadError as error:
            self._count_once(f"payload:{error.kind}", endpoint)
            return
        if normalized.events and push.topic.startswith(KLINE_PREFIX):
            self._snapshots.remember_kline(endpoint, push.topic, normalized.events[-1])
        for item in normalized.events:
            if item.account:
                await self._put_account(item)
            else:
                self._publisher.offer_market(item)
        for wallet in normalized.wallets:
            await self._balances.put(wallet)
        self._state.touch(endpoint, push.topic, received_ms)
        self.counters[_RECEIVED_KEYS[endpoint]] += 1

    def _count_once(self, key: str, endpoint: Endpoint) -> None:
        self.counters[key] += 1
        if key not in self._logged_kinds:  # log once per kind; the counter keeps the total
            self._logged_kinds.add(key)
            logger.bind(endpoint=endpoint.value, kind=key).warning("unreadable frame from bybit (counted)")
