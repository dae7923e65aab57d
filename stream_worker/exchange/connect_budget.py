"""A budget of new Bybit connections shared by every worker behind one IP, kept in PostgreSQL.

rate-limit.mdx: "Do not establish more than 500 connections within a 5-minute window", counted per IP and
WebSocket domain (PROTOCOL.md §1.4). Each socket reconnects with its own backoff, so during an outage the
sockets of every worker on a host would knock on their own; this is the one count they all draw on. Every
connect attempt first takes a slot in the sliding window of its (scope, domain) row of `connect_budgets`: one
transaction that locks the row (SELECT ... FOR UPDATE), drops what left the window and appends now, all by
PostgreSQL's clock. When the window is full, the attempt waits until the oldest connect leaves it.

When PostgreSQL cannot be reached the budget fails open to a limiter of this process alone (logged once per
outage): a worker that cannot reach its database still serves, and still never exceeds the limit by itself.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from loguru import logger
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from stream_worker.state.persistence import DATABASE_ERRORS

# A waiting socket looks again at least this often: another worker's slots may have been dropped with it.
LONGEST_WAIT_STEP = 30.0

_ENSURE_ROW = text(
    "INSERT INTO connect_budgets (scope, domain) VALUES (:scope, :domain) ON CONFLICT (scope, domain) DO NOTHING"
)
_LOCK_ROW = text("SELECT connects FROM connect_budgets WHERE scope = :scope AND domain = :domain FOR UPDATE")
# Read after the lock is held: a clock read before it could be older than what the previous holder appended.
_NOW = text("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8")
_STORE = text(
    "UPDATE connect_budgets SET connects = CAST(:connects AS double precision[]) "
    "WHERE scope = :scope AND domain = :domain"
)


def take_slot(recent: Sequence[float], now: float, *, limit: int, window: float) -> tuple[list[float], float]:
    """The sliding window's arithmetic. Pure.

    Returns the connects still inside the window (`now` appended when a slot was free) and how long to wait:
    0.0 when a slot was taken, else the seconds until enough of the oldest leave for one to be free.
    """
    kept = sorted(t for t in recent if t > now - window)
    if len(kept) < limit:
        kept.append(now)
        return kept, 0.0
    # len(kept) - limit + 1 connects must leave; the last of them to leave is kept[len(kept) - limit].
    return kept, max(kept[len(kept) - limit] + window - now, 0.0)


def ws_domain(url: str) -> str:
    """The domain Bybit counts connections per (host and port), from a socket's URL."""
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2].lower() or url


class ConnectBudget:
    """Slots for new connections per WebSocket domain, shared through PostgreSQL by every worker of `scope`."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        scope: str,
        limit: int,
        window: float,
        timeout: float,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self.scope = scope
        self.limit = limit
        self.window = window
        self._timeout = timeout
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock
        self._local: dict[str, list[float]] = {}  # this process's own connects, for when PostgreSQL is away
        self._shared = True
        self._admissions: dict[str, Callable[[], Awaitable[None]]] = {}
        self.taken = 0
        self.waits = 0  # attempts that found the budget spent and waited

    @property
    def shared(self) -> bool:
        """False while PostgreSQL is away and this worker counts its connects alone."""
        return self._shared

    def admission(self, url: str) -> Callable[[], Awaitable[None]]:
        """The `admit` hook for a `Connection` to `url`: one per domain, so its sockets share it."""
        domain = ws_domain(url)
        if domain not in self._admissions:

            async def admit() -> None:
                await self.acquire(domain)

            self._admissions[domain] = admit
        return self._admissions[domain]

    async def acquire(self, domain: str) -> None:
        """Return once a new connection to `domain` fits the budget; the slot is taken."""
        waited = False
        while True:
            wait = await self._try(domain)
            if wait <= 0:
                self.taken += 1
                return
            if not waited:
                waited = True
                self.waits += 1
                logger.bind(
                    domain=domain, scope=self.scope, limit=self.limit, window_s=self.window, retry_in_s=round(wait, 1)
                ).warning("bybit connection budget spent; waiting before connecting")
            # A little jitter: sockets that found the budget spent together must not all return at one instant.
            await self._sleep(min(wait, LONGEST_WAIT_STEP) + self._rng.uniform(0, 0.05 * self.window / self.limit))

    async def _try(self, domain: str) -> float:
        if self.limit <= 0:
            return 0.0  # no budget configured
        try:
            wait = await self._try_shared(domain)
        except DATABASE_ERRORS as error:
            if self._shared:
                self._shared = False
                logger.bind(error=type(error).__name__, domain=domain).warning(
                    "cannot reach PostgreSQL for the shared connection budget; limiting this worker's connects alone"
                )
            return self._try_local(domain)
        if not self._shared:
            self._shared = True
            logger.bind(domain=domain).info("connection budget shared through PostgreSQL again")
        if wait <= 0:
            self._remember(domain, self._clock())
        return wait

    async def _try_shared(self, domain: str) -> float:
        key = {"scope": self.scope, "domain": domain}
        async with asyncio.timeout(self._timeout), self._engine.begin() as connection:
            await connection.execute(_ENSURE_ROW, key)
            recent = (await connection.execute(_LOCK_ROW, key)).scalar_one()
            now = float((await connection.execute(_NOW)).scalar_one())
            kept, wait = take_slot(recent or [], now, limit=self.limit, window=self.window)
            await connection.execute(_STORE, {**key, "connects": kept})
        return wait

    def _try_local(self, domain: str) -> float:
        kept, wait = take_slot(self._local.get(domain, []), self._clock(), limit=self.limit, window=self.window)
        self._local[domain] = kept
        return wait

    def _remember(self, domain: str, now: float) -> None:
        kept = [t for t in self._local.get(domain, []) if t > now - self.window]
        kept.append(now)
        self._local[domain] = kept[-self.limit :]
