"""The stream worker's RabbitMQ publisher: owns the AMQP connection, the two hand-off buffers and the confirms.

Market data waits in a bounded deque; when it is full the oldest message is dropped and counted
(`market_buffer_full`). It is published transient on a channel without confirms, in batches with one drain
wait per batch. A batch in hand when the connection fails is counted as `connection_lost` and not retried;
bytes already in the kernel's or a proxy's buffers can vanish without being counted (no confirms, no way to
know).

Account data waits in a bounded queue whose `put` blocks when full, so the private socket reader stops reading.
It is published persistent on a channel with publisher confirms, with up to `confirm_window` publishes in
flight (one future per message for its delivery tag's confirmation, resolved by aiormq; the pump never awaits
a single confirm). Both pumps write a whole batch of pre-encoded publishes at once (`channel_writer`).
A message leaves memory only when RabbitMQ acks it. A nack puts it back for a retry; a
connection failure puts every unconfirmed message back, and after reconnect they are re-published in their
original order before anything newer. That is at-least-once: consumers de-duplicate by `message_id`.

Logs state changes only (connected, lost, reconnecting in N s); per-message facts are counters in `stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import aiormq
import msgspec
from aiormq.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError
from loguru import logger

from shared.backoff import Backoff
from shared.config import redact_url
from shared.enums import ChannelType
from shared.events import EVENT_CONTENT_TYPE, EventEnvelope
from shared.routing import DEFAULT_MARKET_MAX_LENGTH, EVENTS_EXCHANGE
from stream_worker.broker.channel_writer import ChannelWriter, Confirmation
from stream_worker.broker.topology import (
    bind_queue,
    declare_exchange,
    declare_queue,
    queue_spec,
    unbind_queue,
)
from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.errors import BrokerUnavailable, TopologyError

MARKET_BATCH = 256  # market messages per write burst; the pump waits for the socket once per burst
FIRST_BACKOFF = 0.1
TRANSIENT, PERSISTENT = 1, 2
# What aiormq raises when the link, the connection or a channel is gone (ChannelInvalidStateError is a
# RuntimeError, raised by calls on a closed channel).
AMQP_FAILURES: tuple[type[Exception], ...] = (
    AMQPError,
    ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
)
# Opening or closing on a connection aiormq already closed raises a plain RuntimeError.
LIFECYCLE_FAILURES: tuple[type[Exception], ...] = (*AMQP_FAILURES, RuntimeError)

HEALTHY_SESSION_SECONDS = 10.0  # a connection that lasted this long resets the reconnect backoff
# One account message on its way: (seq, item, the task awaiting its confirmation, loop time it was sent).
_InFlight = tuple[int, Outgoing, Confirmation, float]


@dataclass(frozen=True, slots=True)
class PublisherStats:
    connected: bool
    published: Mapping[str, int]  # handed to RabbitMQ: "market", "account" (re-publishes included)
    confirmed: int  # account messages RabbitMQ acked
    republished: int  # account messages published again after a nack or a lost connection
    nacked: int
    # "market_buffer_full", "connection_lost" (market only: account data is never dropped for either), and
    # "unencodable" (either kind: an envelope msgspec cannot encode, a bug upstream).
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
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if min(market_buffer, account_buffer, confirm_window) < 1:
            raise ValueError("market_buffer, account_buffer and confirm_window must be at least 1")
        if market_queue_max_length < 1:
            raise ValueError("market_queue_max_length must be at least 1")
        self._url = rabbitmq_url
        self._market_max_length = market_queue_max_length
        self._window = confirm_window
        # Refill the window in bursts of at least a quarter: publishing many at once lets aiormq's writer and
        # RabbitMQ's multiple-acks batch, measurably faster (~10 %) than topping up one slot per confirm.
        self._refill_at = max(1, confirm_window // 4)
        self._timeout = timeout
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._backoff = Backoff(FIRST_BACKOFF, reconnect_cap, self._rng)
        # RabbitMQ nacks when a queue refuses (e.g. someone bound a full `reject-publish` queue): retrying at
        # once would spin, so consecutive nacks pause the account pump, capped like reconnects.
        self._nack_backoff = Backoff(FIRST_BACKOFF, reconnect_cap, self._rng)
        self._encoder = msgspec.json.Encoder()

        self._market: deque[Outgoing] = deque(maxlen=market_buffer)
        self._market_wake = asyncio.Event()
        self._market_in_hand = 0  # taken from the buffer, not yet known to be written to the socket
        self._account: asyncio.Queue[Outgoing] = asyncio.Queue(maxsize=account_buffer)
        self._account_wake = asyncio.Event()
        self._retry: deque[tuple[int, Outgoing]] = deque()  # (seq, item), in original order
        self._inflight: deque[_InFlight] = deque()
        self._reaping: list[Confirmation] = []  # cancelled, not yet awaited
        self._seq = 0  # order in which account messages left the buffer; re-publishes keep theirs
        self._drained = asyncio.Event()
        self._connected = asyncio.Event()

        self._connection: AbstractConnection | None = None
        self._topology: AbstractChannel | None = None
        self._topology_lock = asyncio.Lock()
        self._bindings: dict[tuple[str, ChannelType, str], None] = {}  # insertion-ordered set

        self._published_market = 0
        self._published_account = 0
        self._confirmed = 0
        self._republished = 0
        self._nacked = 0
        self._dropped_full = 0
        self._dropped_lost = 0
        self._dropped_unencodable = 0
        self._connects = 0
        self._last_latency: float | None = None
        # Called with each stamped envelope as it is handed to RabbitMQ (the worker's metrics tally); keep cheap.
        self.on_handed_over: Callable[[EventEnvelope], None] | None = None

    # -- producers -------------------------------------------------------------------------------------------

    def offer_market(self, item: Outgoing) -> None:
        """Queue a market event; never blocks. A full buffer drops its oldest event (counted)."""
        market = self._market
        if len(market) == market.maxlen:
            self._dropped_full += 1  # the append below pushes the oldest out
        market.append(item)
        self._market_wake.set()

    async def put_account(self, item: Outgoing) -> None:
        """Queue an account event; waits while the account buffer is full (back-pressure on the reader)."""
        await self._account.put(item)
        if len(self._inflight) < self._window:  # with the window full, the next confirm wakes the pump
            self._account_wake.set()

    # -- waiting and reading state ---------------------------------------------------------------------------

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def wait_drained(self) -> None:
        """Both buffers empty, every market message written and every account message confirmed."""
        while not self._is_drained():
            self._drained.clear()
            await self._drained.wait()

    def _is_drained(self) -> bool:
        return not (self._market or self._market_in_hand or self._inflight or self._retry or self._account.qsize())

    def _check_drained(self) -> None:
        if self._is_drained():
            self._drained.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def stats(self) -> PublisherStats:
        return PublisherStats(
            connected=self.connected,
            published={"market": self._published_market, "account": self._published_account},
            confirmed=self._confirmed,
            republished=self._republished,
            nacked=self._nacked,
            dropped={
                "market_buffer_full": self._dropped_full,
                "connection_lost": self._dropped_lost,
                "unencodable": self._dropped_unencodable,
            },
            market_depth=len(self._market),
            account_depth=self._account.qsize() + len(self._retry),
            unconfirmed=len(self._inflight),
            reconnects=max(0, self._connects - 1),
            last_confirm_latency=self._last_latency,
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
            connected_at = loop.time()
            self._connects += 1
            self._connected.set()
            logger.bind(url=redact_url(self._url), republishing=len(self._retry), bindings=len(self._bindings)).info(
                "connected to RabbitMQ"
            )
            failure: BrokerUnavailable | None = None
            try:
                async with asyncio.TaskGroup() as pumps:
                    market_writer = ChannelWriter(market, EVENTS_EXCHANGE, EVENT_CONTENT_TYPE)
                    account_writer = ChannelWriter(account, EVENTS_EXCHANGE, EVENT_CONTENT_TYPE)
                    pumps.create_task(self._pump_market(market_writer), name="publish-market")
                    pumps.create_task(self._pump_account(account_writer), name="publish-account")
                    pumps.create_task(self._watch(connection, market, account), name="watch-rabbitmq")
                    pumps.create_task(self._watch_confirms(), name="watch-confirms")
            except* BrokerUnavailable as group:
                failure = _first(group)
            raise failure or BrokerUnavailable("publishing stopped")
        except BrokerUnavailable as error:
            requeued, lost = await self._end_session()
            if connected_at is None:
                return "cannot reach RabbitMQ; retrying", {"reason": error.reason}
            if loop.time() - connected_at >= HEALTHY_SESSION_SECONDS:
                self._backoff.reset()
            context = {"reason": error.reason, "unconfirmed_requeued": requeued, "market_lost": lost}
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
        assert isinstance(channel, aiormq.Channel)  # the concrete class: its basic_publish takes `wait`
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
            inflight = self._inflight
            if inflight and not inflight[0][2].done() and loop.time() - inflight[0][3] > self._timeout:
                raise BrokerUnavailable(f"no publisher confirm within {self._timeout} s")

    async def _end_session(self) -> tuple[int, int]:
        """Forget the connection: unconfirmed account messages go back in order, in-hand market is lost.

        The books are settled before the first await, so a cancellation arriving here loses nothing.
        Returns (account messages put back for re-publishing, market messages counted as lost).
        """
        self._connected.clear()
        self._topology = None
        inflight = list(self._inflight)
        self._inflight.clear()
        unconfirmed = [(seq, item) for seq, item, task, _ in inflight if not _acked(task)]
        self._confirmed += len(inflight) - len(unconfirmed)
        if unconfirmed:
            self._retry = deque(sorted([*self._retry, *unconfirmed], key=_by_seq))
        lost, self._market_in_hand = self._market_in_hand, 0
        self._dropped_lost += lost
        self._check_drained()
        for _, _, task, _ in inflight:
            task.cancel()
        self._reaping.extend(task for _, _, task, _ in inflight)
        if self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)
            self._reaping.clear()
        if self._connection is not None:
            with contextlib.suppress(*LIFECYCLE_FAILURES):
                async with asyncio.timeout(self._timeout):
                    await self._connection.close()
            self._connection = None
        return len(unconfirmed), lost

    # -- the pumps -------------------------------------------------------------------------------------------

    async def _pump_market(self, writer: ChannelWriter) -> None:
        market, wake, encoded = self._market, self._market_wake, self._encoded
        while True:
            if not market:
                self._check_drained()
                wake.clear()
                await wake.wait()
                continue
            batch: list[bytes] = []
            while market and len(batch) < MARKET_BATCH:
                data = encoded(market.popleft(), TRANSIENT, writer)
                if data is not None:
                    batch.append(data)
            if not batch:
                continue
            self._market_in_hand = len(batch)
            with _translated("publishing market data"):
                async with asyncio.timeout(self._timeout):
                    # One write and one drain wait per burst.
                    await writer.write(b"".join(batch), drain=True)
            self._published_market += self._market_in_hand
            self._market_in_hand = 0

    async def _pump_account(self, writer: ChannelWriter) -> None:
        wake = self._account_wake
        while True:
            wake.clear()
            if self._retire():
                await self._sleep(self._nack_backoff.next_delay())
            with _translated("publishing account data"):
                await self._fill(writer)
            self._check_drained()
            await wake.wait()  # set by put_account, and when the oldest publish in flight finishes

    async def _fill(self, writer: ChannelWriter) -> None:
        """Publish until `confirm_window` are in flight: re-publishes first, then the buffer; one write."""
        inflight, retry, buffer = self._inflight, self._retry, self._account
        room = self._window - len(inflight)
        if room <= 0 or (inflight and room < self._refill_at):
            return
        sent_at = asyncio.get_running_loop().time()
        on_done, encoded = self._on_account_done, self._encoded
        batch: list[bytes] = []
        republished = 0
        while len(batch) < room:
            if retry:
                seq, item = retry.popleft()
                republished += 1
            else:
                try:
                    item = buffer.get_nowait()
                except asyncio.QueueEmpty:
                    break
                self._seq += 1
                seq = self._seq
            data = encoded(item, PERSISTENT, writer)
            if data is None:
                continue
            # The future is resolved by aiormq with this publish's confirm; it is kept in `_inflight`,
            # retired in order by `_retire`, and cancelled by `_end_session`.
            confirmation = writer.expect_confirm()
            confirmation.add_done_callback(on_done)
            inflight.append((seq, item, confirmation, sent_at))
            batch.append(data)
        self._published_account += len(batch)
        self._republished += republished
        if batch:
            async with asyncio.timeout(self._timeout):
                await writer.write(b"".join(batch), drain=False)

    def _on_account_done(self, task: Confirmation) -> None:
        # Messages are released from the head of the window only, so only the head's end is news.
        inflight = self._inflight
        if inflight and inflight[0][2] is task:
            self._account_wake.set()

    def _retire(self) -> bool:
        """Release confirmed messages from the head of the window; a nack goes back for a retry.

        Returns whether anything was nacked."""
        inflight = self._inflight
        now = asyncio.get_running_loop().time()
        nacked: list[tuple[int, Outgoing]] = []
        while inflight and inflight[0][2].done():
            seq, item, task, sent_at = inflight[0]
            error = None if task.cancelled() else task.exception()
            if task.cancelled() or (error is not None and not isinstance(error, DeliveryError)):
                # The channel or the connection went away: end the session; `_end_session` puts this and
                # everything behind it back for re-publishing.
                raise BrokerUnavailable(f"account publish failed: {error!r}")
            inflight.popleft()
            if error is None:
                self._confirmed += 1
                self._last_latency = now - sent_at
                if not nacked:
                    self._nack_backoff.reset()
            else:
                self._nacked += 1
                nacked.append((seq, item))
        if nacked:
            self._retry = deque(sorted([*self._retry, *nacked], key=_by_seq))
        return bool(nacked)

    def _encoded(self, item: Outgoing, delivery_mode: int, writer: ChannelWriter) -> bytes | None:
        """The stamped envelope as the frames of one publish; None (dropped, counted) if it cannot be encoded,
        because no retry would ever make it publishable."""
        now = self._clock()
        envelope = msgspec.structs.replace(item.envelope, published_ts=int(now * 1000))
        try:
            body = self._encoder.encode(envelope)
            data = writer.frames.encode(
                item.routing_key,
                body,
                message_id=envelope.event_id,
                trace_id=envelope.trace_id,
                timestamp=int(now),  # AMQP timestamps are whole seconds
                delivery_mode=delivery_mode,
            )
        except (msgspec.EncodeError, TypeError, ValueError) as error:  # FrameError is a ValueError
            self._dropped_unencodable += 1
            if self._dropped_unencodable == 1:  # logged once; the counter keeps the total
                logger.bind(event_id=envelope.event_id, error=str(error)).error("cannot encode an event: dropped")
            return None
        if self.on_handed_over is not None:
            self.on_handed_over(envelope)
        return data


def _acked(task: Confirmation) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


def _by_seq(entry: tuple[int, Outgoing]) -> int:
    return entry[0]


def _first(group: BaseExceptionGroup[BrokerUnavailable]) -> BrokerUnavailable:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first(error)
        return error
    return BrokerUnavailable("publishing stopped")


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """aiormq failures become BrokerUnavailable. aiormq may also fail a pending call with CancelledError when
    it closes a channel itself; that is a closed link, unless this task really is being cancelled."""
    try:
        yield
    except AMQP_FAILURES as exc:
        raise BrokerUnavailable(f"{action}: {type(exc).__name__}: {exc}") from exc
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        raise BrokerUnavailable(f"{action}: the channel was closed") from None
