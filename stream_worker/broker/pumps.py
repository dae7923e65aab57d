"""The two pumps that move events from the buffers to RabbitMQ, one task each per connection.

The market pump takes up to `MARKET_BATCH` events (`OVERLOAD_BATCH` while the buffer is at least half full),
stamps them into one write and waits once for the socket to take it. Waking from idle, it first lets `coalesce`
seconds pass, so pushes that arrive on the sockets within that window share one write: profiled under
Bybit-shaped load (one event per push, many topics), the worker spent a third of its CPU in the socket write to
RabbitMQ, one write per wake-up; each write costs about the same whatever it carries. Under sustained load the
pump never idles and batches follow each other directly. Off by default (0): in the whole-market bench a 0.5 ms
window saved no CPU per message, because events that arrive in one loop iteration already share a write.

Market data goes without publisher confirms, so a write that left our socket is not known to have reached
RabbitMQ: when the link dies, bytes in the kernel's or a proxy's buffers vanish. The market pump's checkpoints
make that loss countable at no cost per message: after new writes (at most every `CHECKPOINT_INTERVAL`) a
synchronous no-op (`basic.qos`) goes on the market channel (`Writer.checkpoint`); RabbitMQ's channel handles
methods in order, so its reply says every publish written before it was routed. Whatever was written after
the last reply is `unverified`, and the publisher counts it as lost in flight (possibly delivered, never
silently lost) when the link dies. Confirms would tell message by message, but cost a future per message
and, on the public path, a task per message.

The account pump keeps the confirm window full: it retires what the broker confirmed (pausing, with backoff,
after a nack so a refusing queue is not hammered), then publishes re-publishes first and then new events in
one write. Both end the session by raising BrokerUnavailable when the link fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

from aiormq.exceptions import AMQPError, ChannelInvalidStateError

from shared.backoff import Backoff
from stream_worker.broker.buffers import AccountBuffer, MarketBuffer
from stream_worker.broker.confirms import ConfirmWindow, Taken
from stream_worker.broker.stamping import PERSISTENT, TRANSIENT, Stamper, Writer
from stream_worker.errors import BrokerUnavailable

MARKET_BATCH = 256  # market messages per write burst; the pump waits for the socket once per burst
# Per burst while the buffer is at least half full: the backlog already costs far more latency than a longer
# burst adds, and fewer, larger bursts let the pump keep up with readers that hand over a whole socket read
# at once (in a burst of one-trade frames beyond capacity, 21-22k of 40k trades dropped instead of 27-28k).
OVERLOAD_BATCH = 2048
# At most one checkpoint per interval: on the public path each holds the channel's lock for a round trip.
CHECKPOINT_INTERVAL = 0.05
# What aiormq raises when the link, the connection or a channel is gone (ChannelInvalidStateError is a
# RuntimeError, raised by calls on a closed channel).
AMQP_FAILURES: tuple[type[Exception], ...] = (
    AMQPError,
    ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
)


class MarketPump:
    def __init__(
        self,
        buffer: MarketBuffer,
        stamper: Stamper,
        *,
        timeout: float,
        on_idle: Callable[[], None],
        coalesce: float = 0.0,
    ) -> None:
        self._buffer = buffer
        self._stamper = stamper
        self._timeout = timeout
        self._on_idle = on_idle
        self._coalesce = coalesce
        self._written = asyncio.Event()
        self.published = 0  # written to the socket, ever
        self.checkpointed = 0  # of those, how many RabbitMQ is known to have taken (or already counted lost)

    @property
    def unverified(self) -> int:
        """Written since the last checkpoint: lost if the link dies now, or maybe delivered."""
        return self.published - self.checkpointed

    def forget_unverified(self) -> int:
        """The link is gone: the unverified writes are counted lost by the caller; returns how many."""
        lost, self.checkpointed = self.unverified, self.published
        return lost

    async def run(self, writer: Writer) -> None:
        market = self._buffer
        events, wake, add, coalesce = market.events, market.wake, self._stamper.add, self._coalesce
        backlog = (events.maxlen or 0) // 2  # from here on, bursts of OVERLOAD_BATCH
        while True:
            if not events:
                self._on_idle()
                wake.clear()
                await wake.wait()
                if coalesce > 0 and len(events) < MARKET_BATCH:
                    await asyncio.sleep(coalesce)  # what else arrives within the window joins this write
                continue
            taken = 0
            limit = OVERLOAD_BATCH if backlog and len(events) >= backlog else MARKET_BATCH
            while events and taken < limit:
                taken += add(events.popleft(), TRANSIENT, writer)
            if not taken:
                continue
            market.in_hand = taken
            with translated("publishing market data"):
                async with asyncio.timeout(self._timeout):
                    await writer.flush(drain=True)  # one write and one drain wait per burst
            self.published += market.in_hand
            market.in_hand = 0
            self._written.set()

    async def checkpoints(self, writer: Writer) -> None:
        """Move `checkpointed` up to what RabbitMQ has taken, after every burst of writes (module docstring)."""
        written = self._written
        while True:
            if not self.unverified:
                written.clear()
                await written.wait()
            mark = self.published
            with translated("checking that RabbitMQ took the market data"):
                await writer.checkpoint(self._timeout)
            self.checkpointed = max(self.checkpointed, mark)
            self._on_idle()
            await asyncio.sleep(CHECKPOINT_INTERVAL)


class AccountPump:
    def __init__(
        self,
        buffer: AccountBuffer,
        window: ConfirmWindow,
        stamper: Stamper,
        *,
        timeout: float,
        nack_backoff: Backoff,
        sleep: Callable[[float], Awaitable[None]],
        on_idle: Callable[[], None],
    ) -> None:
        self._buffer = buffer
        self._window = window
        self._stamper = stamper
        self._timeout = timeout
        self._nack_backoff = nack_backoff
        self._sleep = sleep
        self._on_idle = on_idle
        self.published = 0

    async def run(self, writer: Writer) -> None:
        window, loop = self._window, asyncio.get_running_loop()
        while True:
            window.wake.clear()
            clean_ack, nacked = window.retire(loop.time())
            if clean_ack:
                self._nack_backoff.reset()
            if nacked:
                await self._sleep(self._nack_backoff.next_delay())
            with translated("publishing account data"):
                await self._fill(writer)
            self._on_idle()
            await window.wake.wait()  # set by put_account, and when the oldest publish in flight finishes

    async def _fill(self, writer: Writer) -> None:
        """Publish until the confirm window is full: re-publishes first, then the buffer; one write."""
        window, buffer, add = self._window, self._buffer, self._stamper.add
        room = window.room()
        if not room:
            return
        sent_at = asyncio.get_running_loop().time()
        taken: list[Taken] = []
        while len(taken) < room:
            entry = window.next_retry()
            if entry is None:
                item = buffer.get_nowait()
                if item is None:
                    break
                entry = window.number(item)
            if add(entry[1], PERSISTENT, writer):
                taken.append(entry)
        if not taken:
            return
        try:
            async with asyncio.timeout(self._timeout):
                confirmations = await writer.flush_confirmed()
        except BaseException:
            window.give_back(taken)  # never written: re-published first on the next connection
            raise
        window.sent(taken, confirmations, sent_at)
        self.published += len(taken)


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
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
