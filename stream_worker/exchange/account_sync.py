"""When to re-sync account state over REST, and the loop that does it (PROTOCOL.md §9.8).

Bybit replays nothing to a private stream that was away, so the gap is fetched over REST: after every
(re)authentication, and when this worker takes the private stream over from another (from just before the
predecessor's last frame). The fetch waits until every wanted private topic has been answered: fetching
before the subscriptions are live would leave a window in which a push is neither fetched nor received.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger

from shared.backoff import Backoff
from stream_worker.bybit.events import Authenticated, Event, Subscribed, SubscribeRejected
from stream_worker.bybit.protocol import BybitProtocol
from stream_worker.cluster.membership import PrivateLease
from stream_worker.envelopes.normalize import PayloadError
from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.exchange.rest import BybitRestError
from stream_worker.exchange.resync import AccountResync
from stream_worker.state.balances import BalanceWriter


class AccountSync:
    def __init__(
        self,
        resync: AccountResync,
        protocol: BybitProtocol,
        *,
        put_account: Callable[[Outgoing], Awaitable[None]],
        balances: BalanceWriter,
        wall: Callable[[], float],
        trace_id: Callable[[], str],
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._resync = resync
        self._protocol = protocol
        self._put_account = put_account
        self._balances = balances
        self._wall = wall
        self._trace_id = trace_id
        self._backoff = Backoff(1.0, 60.0, rng or random.Random())
        self._sleep = sleep
        self._requested = asyncio.Event()
        self._due = False
        self._since_ms: int | None = None  # where the gap to fetch began; None: Bybit's default window
        self.last_frame_ms: int | None = None  # the last private frame this worker received (epoch ms)
        self.state: dict[str, Any] = {"runs": 0, "failures": 0, "last_ok_ms": None, "last_error": None}

    def observe(self, event: Event) -> None:
        """Every event of the private socket, before the worker handles it."""
        if isinstance(event, Authenticated):
            # The gap began after the previous session's last frame (None on first start).
            self._since_ms = self.last_frame_ms
            self._due = True
        self.last_frame_ms = int(self._wall() * 1000)
        if isinstance(event, Subscribed | SubscribeRejected):
            self._request_when_settled()

    def took_over(self, lease: PrivateLease) -> None:
        """We took the private stream over: the gap began at our predecessor's last frame."""
        if lease.last_frame_ms is not None:
            self.last_frame_ms = lease.last_frame_ms
        self._since_ms = lease.last_frame_ms
        self._due = True
        self._request_when_settled()

    def _request_when_settled(self) -> None:
        protocol = self._protocol
        if not self._due or not protocol.authenticated or not protocol.wanted:
            return
        if protocol.wanted <= protocol.subscribed | set(protocol.failed):
            self._due = False
            self._requested.set()

    async def run(self) -> None:
        """Re-sync whenever asked; retry a failed fetch with backoff until it lands."""
        while True:
            await self._requested.wait()
            self._requested.clear()
            since_ms = self._since_ms
            while True:
                try:
                    result = await self._resync.run(
                        sorted(self._protocol.wanted),
                        since_ms=since_ms,
                        received_ms=int(self._wall() * 1000),
                        trace_id=self._trace_id(),
                    )
                except (BybitRestError, PayloadError) as error:
                    self.state["failures"] += 1
                    self.state["last_error"] = str(error)
                    delay = self._backoff.next_delay()
                    logger.bind(error=str(error), retry_in_s=round(delay, 2)).warning("account re-sync failed")
                    await self._sleep(delay)
                    continue
                break
            self._backoff.reset()
            for item in result.events:
                await self._put_account(item)
            for wallet in result.wallets:
                await self._balances.put(wallet)
            self.state.update(runs=self.state["runs"] + 1, last_ok_ms=int(self._wall() * 1000))
            logger.bind(fetched=result.fetched, events=len(result.events)).info("account re-synced over REST")
