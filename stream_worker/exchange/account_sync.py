"""When to re-sync account state over REST, and the loop that does it (PROTOCOL.md §9.8).

Bybit replays nothing to a private stream that was away, so the gap is fetched over REST: after every
(re)authentication, and when this worker takes the private stream over from another (from just before the
predecessor's last frame). The fetch waits until every wanted private topic has been answered: fetching
before the subscriptions are live would leave a window in which a push is neither fetched nor received.

A push Bybit drops while the socket stays up (a stall shorter than `dead_after`) causes neither, so while
authenticated and settled the state is also fetched every `interval` seconds (0: never), executions from the
start of the previous completed re-sync. What it re-publishes carries the same event ids as before (orders,
executions, positions: from Bybit's own ids), so consumers drop what they already have; a balance is a new
observation named by Bybit's server time.

A re-sync that cannot complete is never silent: each shortfall (a failed fetch, Bybit's rate limit, an IP ban,
the pagination cap, a gap past the 7-day window, an order whose final state Bybit no longer keeps) is counted
per reason in `state["incomplete"]` (a metric) and published as one `resync_incomplete` event per wanted
channel and category. A failed fetch is announced once per gap and reason, then retried: with backoff, and
after HTTP 403 no sooner than `ban_pause` (rate-limit.mdx: "wait for at least 10 minutes").
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger

from shared.backoff import Backoff
from shared.enums import Category, ChannelType
from stream_worker.bybit.events import Authenticated, Event, Subscribed, SubscribeRejected
from stream_worker.bybit.protocol import BybitProtocol
from stream_worker.cluster.membership import PrivateLease
from stream_worker.envelopes.normalize import PayloadError
from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.exchange.rest import BybitRestError
from stream_worker.exchange.resync import AccountResync, ResyncResult, Shortfall, wanted_categories
from stream_worker.exchange.resync_report import incomplete_event
from stream_worker.state.balances import BalanceWriter
from stream_worker.state.persistence import DATABASE_ERRORS

RESYNC_ERRORS: tuple[type[Exception], ...] = (BybitRestError, PayloadError, TimeoutError, *DATABASE_ERRORS)
BAN_PAUSE = 600.0  # rate-limit.mdx: on "403, access too frequent" "wait for at least 10 minutes"


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
        account_type: str = "UNIFIED",
        ban_pause: float = BAN_PAUSE,
        interval: float,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._resync = resync
        self._protocol = protocol
        self._put_account = put_account
        self._balances = balances
        self._wall = wall
        self._trace_id = trace_id
        self._account_type = account_type
        self._ban_pause = ban_pause
        self._interval = interval
        self._backoff = Backoff(1.0, 60.0, rng or random.Random())
        self._sleep = sleep
        self._requested = asyncio.Event()
        self._due = False
        self._since_ms: int | None = None  # where the gap to fetch began; None: Bybit's default window
        self._last_started_ms: int | None = None  # when the last completed re-sync began fetching
        self._status_ids = itertools.count(1)
        self.last_frame_ms: int | None = None  # the last private frame this worker received (epoch ms)
        self.incomplete: Counter[str] = Counter()  # shortfalls per reason, ever (a metric)
        self.state: dict[str, Any] = {
            "runs": 0,
            "periodic_runs": 0,
            "failures": 0,
            "last_ok_ms": None,
            "last_error": None,
            "incomplete": self.incomplete,
            "resolved": Counter(),
        }

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
        """Re-sync whenever asked or due; retry a failed fetch until it lands."""
        while True:
            periodic = await self._wait_due()
            since_ms = self._since_ms
            started_ms = int(self._wall() * 1000)
            result = await self._fetch(since_ms, periodic=periodic)
            for item in result.events:
                await self._put_account(item)
            for wallet in result.wallets:
                await self._balances.put(wallet)
            await self._report(result.shortfalls, since_ms=since_ms, retry_in_s=None)
            self._last_started_ms = started_ms
            self.state["resolved"].update(result.resolved)
            self.state.update(runs=self.state["runs"] + 1, last_ok_ms=int(self._wall() * 1000))
            if periodic:
                self.state["periodic_runs"] += 1
            logger.bind(
                fetched=result.fetched, events=len(result.events), resolved=result.resolved, periodic=periodic
            ).info("account re-synced over REST")

    async def _wait_due(self) -> bool:
        """Until a re-sync is asked for (False) or the periodic one is due (True)."""
        while True:
            if self._interval <= 0:
                await self._requested.wait()
                break
            try:
                async with asyncio.timeout(self._interval):
                    await self._requested.wait()
                break
            except TimeoutError:
                if self._periodic_due():
                    # Executions from where the previous completed fetch began (everything before it was
                    # fetched then); the window opens EXECUTION_MARGIN_MS earlier still, for clock skew.
                    self._since_ms = self._last_started_ms
                    return True
        self._requested.clear()
        return False

    def _periodic_due(self) -> bool:
        protocol = self._protocol
        if self._due or self._last_started_ms is None or not protocol.authenticated or not protocol.wanted:
            return False  # a gap is pending (its own re-sync comes when settled), or there is nothing to fetch
        return protocol.wanted <= protocol.subscribed | set(protocol.failed)

    async def _fetch(self, since_ms: int | None, *, periodic: bool) -> ResyncResult:
        announced: set[str] = set()  # reasons already published for this gap
        while True:
            try:
                # Stored balances must include every wallet push published so far: they say which coins we hold.
                async with asyncio.timeout(30):
                    await self._balances.wait_drained()
                result = await self._resync.run(
                    sorted(self._protocol.wanted),
                    since_ms=since_ms,
                    received_ms=int(self._wall() * 1000),
                    trace_id=self._trace_id(),
                    # This worker recorded every order it published as open while its stream stayed up.
                    closed_in_gap=not periodic,
                )
            except RESYNC_ERRORS as error:
                reason, delay = self._verdict(error)
                self.state["failures"] += 1
                self.state["last_error"] = str(error)
                logger.bind(error=str(error), reason=reason, retry_in_s=round(delay, 2)).warning(
                    "account re-sync failed"
                )
                if reason is not None and reason not in announced:
                    announced.add(reason)
                    shortfalls = self._everything(reason, str(error))
                    await self._report(shortfalls, since_ms=since_ms, retry_in_s=round(delay, 2))
                await self._sleep(delay)
                continue
            self._backoff.reset()
            return result

    def _verdict(self, error: Exception) -> tuple[str | None, float]:
        """The reason to publish (None: our own database, not Bybit) and how long to wait."""
        delay = self._backoff.next_delay()
        if isinstance(error, BybitRestError):
            if error.banned:
                return "banned", max(self._ban_pause, delay)
            return ("rate_limited" if error.rate_limited else "failed"), delay
        if isinstance(error, PayloadError):
            return "failed", delay
        return None, delay

    def _everything(self, reason: str, detail: str) -> list[Shortfall]:
        """One shortfall per wanted channel and category: a failed fetch leaves all of them unknown."""
        shortfalls = []
        for channel, categories in wanted_categories(self._protocol.wanted).items():
            if channel is ChannelType.BALANCE:
                shortfalls.append(Shortfall(channel, self._account_type.lower(), reason, detail))
            else:
                for category in sorted(categories, key=lambda c: c.value):
                    shortfalls.append(Shortfall(channel, Category(category).value, reason, detail))
        return shortfalls

    async def _report(self, shortfalls: list[Shortfall], *, since_ms: int | None, retry_in_s: float | None) -> None:
        received_ms = int(self._wall() * 1000)
        trace_id = self._trace_id()
        for shortfall in shortfalls:
            self.incomplete[shortfall.reason] += 1
            logger.bind(channel=shortfall.channel.value, category=shortfall.category, reason=shortfall.reason).warning(
                "account re-sync incomplete: " + shortfall.detail
            )
            item = incomplete_event(
                shortfall,
                since_ms=since_ms,
                retry_in_s=retry_in_s,
                received_ms=received_ms,
                trace_id=trace_id,
                sequence=next(self._status_ids),
            )
            await self._put_account(item)
