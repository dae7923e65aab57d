"""The account channel's confirm window: what is in flight, what goes back, and in which order.

Every account message leaving the buffer gets a sequence number (its original order). Up to `size` of them
are published and unconfirmed at once, each with one future for its publisher confirm (resolved by aiormq).
Messages leave memory only from the head of the window and only once acked; a nack puts the message back for
a retry, and a lost connection puts every unconfirmed one back. Whatever goes back is re-published before
anything newer and in sequence order, so after de-duplication by `message_id` a consumer sees the original
order. The window owns the confirmation futures (and, on aiormq's public path, the tasks behind them):
`forget_unconfirmed` cancels them and `reap` awaits them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from aiormq.abc import ConfirmationFrameType
from aiormq.exceptions import DeliveryError

from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.errors import BrokerUnavailable

Confirmation = asyncio.Future[ConfirmationFrameType | None]
Taken = tuple[int, Outgoing]  # (sequence number, item)
# One account message on its way: (seq, item, its confirmation, loop time it was sent).
_InFlight = tuple[int, Outgoing, Confirmation, float]


class ConfirmWindow:
    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("the confirm window must hold at least 1")
        self.size = size
        # Refill in bursts of at least a quarter: publishing many at once lets the writer and RabbitMQ's
        # multiple-acks batch, measurably faster (~10 %) than topping up one slot per confirm.
        self._refill_at = max(1, size // 4)
        self.inflight: deque[_InFlight] = deque()
        self.retry: deque[Taken] = deque()  # in original order
        self._seq = 0  # order in which account messages left the buffer; re-publishes keep theirs
        self._reaping: list[Confirmation] = []  # cancelled, not yet awaited
        self.wake = asyncio.Event()  # set when the head of the window finishes
        self.confirmed = 0
        self.republished = 0
        self.nacked = 0
        self.last_latency: float | None = None  # seconds from publish to ack of the latest confirmed message

    def __len__(self) -> int:
        return len(self.inflight)

    @property
    def idle(self) -> bool:
        return not (self.inflight or self.retry)

    def room(self) -> int:
        """How many to publish now: 0 while the window is too full to be worth a refill."""
        room = self.size - len(self.inflight)
        if room <= 0 or (self.inflight and room < self._refill_at):
            return 0
        return room

    def next_retry(self) -> Taken | None:
        if not self.retry:
            return None
        self.republished += 1
        return self.retry.popleft()

    def number(self, item: Outgoing) -> Taken:
        """Give a message fresh from the buffer its place in the original order."""
        self._seq += 1
        return self._seq, item

    def sent(self, taken: list[Taken], confirmations: list[Confirmation], sent_at: float) -> None:
        """Record publishes just written, with their confirmations in the same order."""
        on_done, inflight = self._on_done, self.inflight
        for (seq, item), confirmation in zip(taken, confirmations, strict=True):
            confirmation.add_done_callback(on_done)
            inflight.append((seq, item, confirmation, sent_at))

    def give_back(self, taken: Iterable[Taken]) -> None:
        """Messages taken for a write that did not happen: back in front, in order."""
        self._requeue(list(taken))

    def _on_done(self, confirmation: Confirmation) -> None:
        # Messages are released from the head of the window only, so only the head's end is news.
        inflight = self.inflight
        if inflight and inflight[0][2] is confirmation:
            self.wake.set()

    def retire(self, now: float) -> tuple[bool, bool]:
        """Release confirmed messages from the head of the window; a nack goes back for a retry.

        Raises BrokerUnavailable when a publish failed for another reason (the channel or connection went
        away). Returns (whether an ack came before any nack, whether anything was nacked)."""
        inflight = self.inflight
        nacked: list[Taken] = []
        clean_ack = False
        while inflight and inflight[0][2].done():
            seq, item, confirmation, sent_at = inflight[0]
            error = None if confirmation.cancelled() else confirmation.exception()
            if confirmation.cancelled() or (error is not None and not isinstance(error, DeliveryError)):
                # `forget_unconfirmed` puts this and everything behind it back for re-publishing.
                raise BrokerUnavailable(f"account publish failed: {error!r}")
            inflight.popleft()
            if error is None:
                self.confirmed += 1
                self.last_latency = now - sent_at
                clean_ack = clean_ack or not nacked
            else:
                self.nacked += 1
                nacked.append((seq, item))
        self._requeue(nacked)
        return clean_ack, bool(nacked)

    def overdue(self, now: float, timeout: float) -> bool:
        """The oldest unconfirmed publish has waited longer than `timeout` (a link that hangs without closing)."""
        inflight = self.inflight
        return bool(inflight) and not inflight[0][2].done() and now - inflight[0][3] > timeout

    def forget_unconfirmed(self) -> int:
        """The connection is gone: acked messages count as confirmed, the rest go back in order, and every
        confirmation is cancelled (awaited by `reap`). Synchronous, so a cancellation loses nothing.

        Returns how many went back."""
        inflight = list(self.inflight)
        self.inflight.clear()
        unconfirmed = [(seq, item) for seq, item, confirmation, _ in inflight if not _acked(confirmation)]
        self.confirmed += len(inflight) - len(unconfirmed)
        self._requeue(unconfirmed)
        for _, _, confirmation, _ in inflight:
            confirmation.cancel()
        self._reaping.extend(confirmation for _, _, confirmation, _ in inflight)
        return len(unconfirmed)

    async def reap(self) -> None:
        if self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)
            self._reaping.clear()

    def _requeue(self, taken: list[Taken]) -> None:
        if taken:
            self.retry = deque(sorted([*self.retry, *taken], key=_by_seq))


def _acked(confirmation: Confirmation) -> bool:
    return confirmation.done() and not confirmation.cancelled() and confirmation.exception() is None


def _by_seq(entry: Taken) -> int:
    return entry[0]
