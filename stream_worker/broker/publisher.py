"""The stream worker's RabbitMQ publisher: owns the AMQP connection, its channels and the pumps.

Market data (`buffers.MarketBuffer`, drop-oldest, counted) is published transient on a channel without
confirms, in batches with one drain wait per batch. A batch in hand when the connection fails is counted as
`connection_lost` and not retried. What was written but not yet known to have reached RabbitMQ (after the
market pump's last checkpoint, see pumps.py) is counted as `in_flight` when the link dies: possibly
delivered, but never lost uncounted. Those were handed over too, so `published` includes them.

Account data (`buffers.AccountBuffer`, blocking) is published persistent on a channel with publisher confirms,
through the confirm window (`confirms.ConfirmWindow`): up to `confirm_window` in flight, released in order
once acked, re-published in their original order after a nack or a lost connection. That is at-least-once:
consumers de-duplicate by `message_id`.

Both pumps write a whole batch of publishes at once through a writer: the fast path (`channel_writer`) or
aiormq's public API (`public_writer`), chosen per `publish_path` (`publish_path.PathChooser`). Topology
(queues and bindings) is declared on a third channel and restored after every reconnect.

Logs state changes only (connected, lost, reconnecting in N s); per-message facts are counters in `stats`.

Over 400 lines, with a reason: what remains is one session's lifecycle (connect, channels, restore bindings,
watch, end); buffers, confirms, pumps and encoding already live in their own modules beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection
from loguru import logger

from shared.backoff import Backoff
from shared.config import redact_url
from shared.enums import ChannelType
from shared.events import EVENT_CONTENT_TYPE, EventEnvelope
from shared.routing import DEFAULT_MARKET_MAX_LENGTH, EVENTS_EXCHANGE
from shared.tasks import until_first_ends
from stream_worker.broker.buffers import AccountBuffer, MarketBuffer
from stream_worker.broker.channel_writer import fast_path_problem
from stream_worker.broker.confirms import ConfirmWindow
from stream_worker.broker.publish_path import PathChooser, PublishPath
from stream_worker.broker.pumps import AMQP_FAILURES, AccountPump, MarketPump, translated
from stream_worker.broker.stamping import Stamper
from stream_worker.broker.topology import (
    bind_queue,
    declare_exchange,
    declare_queue,
    queue_spec,
    unbind_queue,
)
from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.errors import BrokerUnavailable, TopologyError

FIRST_BACKOFF = 0.1
# Market events arriving within this many seconds of each other share one write to RabbitMQ (see pumps.py).
# Off by default: the whole-market bench showed no CPU saved per message on our box (BENCHMARKS.md, Scale).
DEFAULT_COALESCE = 0.0
# Opening or closing on a connection aiormq already closed raises a plain RuntimeError.
LIFECYCLE_FAILURES: tuple[type[Exception], ...] = (*AMQP_FAILURES, RuntimeError)

HEALTHY_SESSION_SECONDS = 10.0  # a connection that lasted this long resets the reconnect backoff


@dataclass(frozen=True, slots=True)
class PublisherStats:
    connected: bool
    published: Mapping[str, int]  # handed to RabbitMQ: "market", "account" (re-publishes included)
    confirmed: int  # account messages RabbitMQ acked
    republished: int  # account messages published again after a nack or a lost connection
    nacked: int
    # "market_buffer_full", "connection_lost", "in_flight" (market only: account data is never dropped for any
    # of them), and "unencodable" (either kind: an envelope msgspec cannot encode, a bug upstream). `in_flight`
    # were written (in `published` too) but not known to have reached RabbitMQ when the link died.
    dropped: Mapping[str, int]
    market_depth: int
    account_depth: int  # waiting in the account buffer plus waiting to be re-published
    unconfirmed: int  # account messages published and not yet confirmed
    reconnects: int  # connections established after the first
    last_confirm_latency: float | None  # seconds from publish to ack, of the latest confirmed message


class Publisher:
    """Publishes `Outgoing` events to `ws-gateway.events`; `run()` owns the connection until cancelled."""

    def __init__(
        self,
        rabbitmq_url: str,
        *,
        market_buffer: int = 10_000,
        account_buffer: int = 10_000,
        market_queue_max_length: int = DEFAULT_MARKET_MAX_LENGTH,
        confirm_window: int = 1_000,
        reconnect_cap: float = 5.0,
        timeout: float = 10.0,
        publish_path: PublishPath = "auto",
        coalesce: float = DEFAULT_COALESCE,
        fast_path_check: Callable[[object], str | None] = fast_path_problem,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if min(market_buffer, account_buffer, confirm_window) < 1:
            raise ValueError("market_buffer, account_buffer and confirm_window must be at least 1")
        if not 0 <= coalesce <= 0.1:
            raise ValueError("coalesce must be between 0 and 0.1 s")
        if market_queue_max_length < 1:
            raise ValueError("market_queue_max_length must be at least 1")
        self._url = rabbitmq_url
        self._market_max_length = market_queue_max_length
        self._timeout = timeout
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._backoff = Backoff(FIRST_BACKOFF, reconnect_cap, self._rng)
        self._paths = PathChooser(
            publish_path,
            exchange=EVENTS_EXCHANGE,
            content_type=EVENT_CONTENT_TYPE,
            timeout=timeout,
            check=fast_path_check,
        )
        self._stamper = Stamper(clock)

        self._market = MarketBuffer(market_buffer)
        self._account = AccountBuffer(account_buffer)
        self._window = ConfirmWindow(confirm_window)
        self._drained = asyncio.Event()
        self._connected = asyncio.Event()
        self._down_since: float | None = time.monotonic()  # not connected yet counts as down, from the start

        self._connection: AbstractConnection | None = None
        self._topology: AbstractChannel | None = None
        self._topology_lock = asyncio.Lock()
        self._bindings: dict[tuple[str, ChannelType, str], None] = {}  # insertion-ordered set

        self._market_pump = MarketPump(
            self._market, self._stamper, timeout=timeout, on_idle=self._check_drained, coalesce=coalesce
        )
        self._account_pump = AccountPump(
            self._account,
            self._window,
            self._stamper,
            timeout=timeout,
            # RabbitMQ nacks when a queue refuses (e.g. someone bound a full `reject-publish` queue): retrying at
            # once would spin, so consecutive nacks pause the account pump, capped like reconnects.
            nack_backoff=Backoff(FIRST_BACKOFF, reconnect_cap, self._rng),
            sleep=sleep,
            on_idle=self._check_drained,
        )
        self._dropped_lost = 0
        self._dropped_in_flight = 0
        self._connects = 0

    @property
    def on_handed_over(self) -> Callable[[EventEnvelope], None] | None:
        """Called with each stamped envelope as it is handed to RabbitMQ (the worker's metrics tally)."""
        return self._stamper.on_handed_over

    @on_handed_over.setter
    def on_handed_over(self, callback: Callable[[EventEnvelope], None] | None) -> None:
        self._stamper.on_handed_over = callback

    # -- producers -------------------------------------------------------------------------------------------

    def offer_market(self, item: Outgoing) -> None:
        """Queue a market event; never blocks. A full buffer drops its oldest event (counted)."""
        self._market.offer(item)

    async def put_account(self, item: Outgoing) -> None:
        """Queue an account event; waits while the account buffer is full (back-pressure on the reader)."""
        await self._account.put(item)
        window = self._window
        if len(window) < window.size:  # with the window full, the next confirm wakes the pump
            window.wake.set()

    # -- waiting and reading state ---------------------------------------------------------------------------

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def wait_drained(self) -> None:
        """Both buffers empty, every market message taken by RabbitMQ and every account message confirmed."""
        while not self._is_drained():
            self._drained.clear()
            await self._drained.wait()

    def _is_drained(self) -> bool:
        market_taken = self._market.idle and not self._market_pump.unverified
        return market_taken and self._window.idle and not len(self._account)

    def _check_drained(self) -> None:
        if self._is_drained():
            self._drained.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def down_for(self, now: float) -> float | None:
        """Seconds (monotonic `now`) since the connection was lost or since start; None while connected."""
        return None if self._down_since is None else max(0.0, now - self._down_since)

    @property
    def publish_path(self) -> str | None:
        """ "fast" or "public" once the first connection decided (None before)."""
        return self._paths.chosen

    @property
    def stats(self) -> PublisherStats:
        window = self._window
        return PublisherStats(
            connected=self.connected,
            published={"market": self._market_pump.published, "account": self._account_pump.published},
            confirmed=window.confirmed,
            republished=window.republished,
            nacked=window.nacked,
            dropped={
                "market_buffer_full": self._market.dropped,
                "connection_lost": self._dropped_lost,
                "in_flight": self._dropped_in_flight,
                "unencodable": self._stamper.unencodable,
            },
            market_depth=len(self._market),
            account_depth=len(self._account) + len(window.retry),
            unconfirmed=len(window),
            reconnects=max(0, self._connects - 1),
            last_confirm_latency=window.last_latency,
        )

    def stats_dict(self) -> dict[str, Any]:
        """`stats` as plain JSON-ready values, for the health document."""
        values = asdict(self.stats)
        values["published"], values["dropped"] = dict(values["published"]), dict(values["dropped"])
        return values

    # -- topology --------------------------------------------------------------------------------------------

    async def bind(self, service: str, channel_type: ChannelType, binding_key: str) -> None:
        """Declare the service's queue for this channel type and bind `binding_key` to it; idempotent.

        Raises TopologyError if RabbitMQ refuses (e.g. the queue exists with other arguments) and
        BrokerUnavailable if RabbitMQ cannot be reached within the timeout. Publishing is unaffected by either.
        """
        spec = queue_spec(service, channel_type, market_max_length=self._market_max_length)
        await self._wait_connected_within_timeout()
        async with self._topology_lock:
            channel = await self._topology_channel()
            await declare_queue(channel, spec, timeout=self._timeout)
            await bind_queue(channel, spec.name, binding_key, timeout=self._timeout)
        self._bindings[(service, channel_type, binding_key)] = None

    async def unbind(self, service: str, channel_type: ChannelType, binding_key: str) -> None:
        """Stop routing `binding_key` to the service's queue. The queue stays: its consumer may still read it."""
        self._bindings.pop((service, channel_type, binding_key), None)
        queue = queue_spec(service, channel_type, market_max_length=self._market_max_length).name
        await self._wait_connected_within_timeout()
        async with self._topology_lock:
            channel = await self._topology_channel()
            await unbind_queue(channel, queue, binding_key, timeout=self._timeout)

    async def _wait_connected_within_timeout(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._connected.wait()
        except TimeoutError:
            raise BrokerUnavailable(f"not connected within {self._timeout} s") from None

    async def _topology_channel(self) -> AbstractChannel:
        channel, connection = self._topology, self._connection
        if not self.connected or connection is None:
            raise BrokerUnavailable("the connection was lost")
        if channel is None or channel.is_closed:
            # A refused declare closes the channel it was sent on; the next topology call opens a new one.
            channel = self._topology = await self._open_channel(connection, confirms=False)
        return channel

    async def _restore_bindings(self, channel: AbstractChannel) -> None:
        """After a reconnect, declare and bind again what we bound before (a queue may have been deleted)."""
        declared: set[str] = set()
        self._topology = channel
        for service, channel_type, key in list(self._bindings):
            spec = queue_spec(service, channel_type, market_max_length=self._market_max_length)
            try:
                if spec.name not in declared:
                    await declare_queue(channel, spec, timeout=self._timeout)
                    declared.add(spec.name)
                await bind_queue(channel, spec.name, key, timeout=self._timeout)
            except TopologyError as error:
                self._bindings.pop((service, channel_type, key), None)
                logger.bind(queue=error.queue, reason=error.reason).error("cannot restore a binding")
                channel = self._topology = await self._open_channel(channel.connection, confirms=False)

    # -- the connection --------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, publish from the buffers, and reconnect after any failure; runs until cancelled."""
        try:
            while True:
                event, context = await self._session()
                delay = self._backoff.next_delay()
                logger.bind(**context, retry_in_s=round(delay, 2)).warning(event)
                await self._sleep(delay)
        finally:
            await self._end_session()

    async def _session(self) -> tuple[str, dict[str, object]]:
        """One connection: set it up and publish until it fails; returns what to log about the failure."""
        loop = asyncio.get_running_loop()
        connected_at: float | None = None
        try:
            connection = self._connection = await self._connect()
            async with self._topology_lock:
                topology = await self._open_channel(connection, confirms=False)
                await declare_exchange(topology, timeout=self._timeout)
                await self._restore_bindings(topology)
            market = await self._open_channel(connection, confirms=False)
            account = await self._open_channel(connection, confirms=True)
            with translated("choosing the publish path"):
                market_writer, account_writer = await self._paths.writers(market, account)
            connected_at = loop.time()
            self._connects += 1
            self._connected.set()
            self._down_since = None
            logger.bind(
                url=redact_url(self._url),
                republishing=len(self._window.retry),
                bindings=len(self._bindings),
                publish_path=account_writer.path,
            ).info("connected to RabbitMQ")
            # Not a TaskGroup: its 3.11 version can swallow the stop that ends the worker (shared/tasks.py).
            failure = await until_first_ends(
                {
                    "publish-market": self._market_pump.run(market_writer),
                    "market-checkpoints": self._market_pump.checkpoints(market_writer),
                    "publish-account": self._account_pump.run(account_writer),
                    "watch-rabbitmq": self._watch(connection, market, account),
                    "watch-confirms": self._watch_confirms(),
                }
            )
            raise failure or BrokerUnavailable("publishing stopped")
        except BrokerUnavailable as error:
            requeued, lost, in_flight = await self._end_session()
            if connected_at is None:
                return "cannot reach RabbitMQ; retrying", {"reason": error.reason}
            if loop.time() - connected_at >= HEALTHY_SESSION_SECONDS:
                self._backoff.reset()
            context = {
                "reason": error.reason,
                "unconfirmed_requeued": requeued,
                "market_lost": lost,
                "market_in_flight": in_flight,
            }
            return "RabbitMQ connection lost; reconnecting", context

    async def _connect(self) -> AbstractConnection:
        # aiormq closes what it opened when connect() fails or is cancelled part-way.
        try:
            async with asyncio.timeout(self._timeout):
                return await aiormq.connect(self._url)
        except AMQP_FAILURES as exc:
            raise BrokerUnavailable(f"cannot connect: {type(exc).__name__}: {exc}") from exc

    async def _open_channel(self, connection: AbstractConnection, *, confirms: bool) -> aiormq.Channel:
        try:
            channel = await connection.channel(publisher_confirms=confirms, timeout=self._timeout)
        except LIFECYCLE_FAILURES as exc:
            raise BrokerUnavailable(f"cannot open a channel: {type(exc).__name__}") from exc
        assert isinstance(channel, aiormq.Channel)  # the concrete class: the writers need it
        return channel

    async def _watch(self, connection: AbstractConnection, *channels: AbstractChannel) -> None:
        """End the session as soon as the connection or one of the publishing channels closes."""
        observers = [connection.closing, *(channel.closing for channel in channels)]
        try:
            done, _ = await asyncio.wait(observers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for observer in observers:
                observer.cancel()
        closed = done.pop()
        reason = "closed" if closed.cancelled() else repr(closed.exception() or "closed")
        what = "connection" if closed is observers[0] else "channel"
        raise BrokerUnavailable(f"{what} {reason}")

    async def _watch_confirms(self) -> None:
        """End the session when the oldest unconfirmed publish has waited longer than the timeout.

        One timer for the whole window instead of one per message; a link that hangs without closing (a
        blackholed broker) is found here, and everything unconfirmed is re-published on the next connection.
        """
        loop = asyncio.get_running_loop()
        period = max(self._timeout / 4, 0.01)
        while True:
            await asyncio.sleep(period)
            if self._window.overdue(loop.time(), self._timeout):
                raise BrokerUnavailable(f"no publisher confirm within {self._timeout} s")

    async def _end_session(self) -> tuple[int, int, int]:
        """Forget the connection: unconfirmed account messages go back in order, in-hand market is lost, and
        market written since the last checkpoint counts as lost in flight.

        The books are settled before the first await, so a cancellation arriving here loses nothing.
        Returns (account messages put back for re-publishing, market in hand lost, market lost in flight).
        """
        self._connected.clear()
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._topology = None
        requeued = self._window.forget_unconfirmed()
        lost, self._market.in_hand = self._market.in_hand, 0
        self._dropped_lost += lost
        in_flight = self._market_pump.forget_unverified()
        self._dropped_in_flight += in_flight
        self._check_drained()
        await self._window.reap()
        if self._connection is not None:
            with contextlib.suppress(*LIFECYCLE_FAILURES):
                async with asyncio.timeout(self._timeout):
                    await self._connection.close()
            self._connection = None
        return requeued, lost, in_flight
