"""The seeded fault schedule and the injectors: Bybit misbehaving, links to RabbitMQ and PostgreSQL cut or
stalled, workers killed, stopped, restarted and added.

Faults overlap: each one that lasts is started, and its repair is a task of the schedule's TaskGroup, so a
RabbitMQ stall can begin while a worker is dead and a Bybit socket is refused. Every fault is repaired before
`run` returns; the number of each kind is counted for the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from bench.chaos.system import System
from tests.fake_bybit import FakeBybit
from tests.support.fault_proxy import FaultProxy, Mode

Repair = Coroutine[Any, Any, None]  # what undoes a fault, run as a task of the schedule
ENDPOINTS = ("linear", "spot", "inverse", "private")

# Relative weights of the fault kinds: link and socket faults are frequent, process faults rarer (each one
# costs a Python start-up on a shared two-core machine).
WEIGHTS: dict[str, int] = {
    "bybit_drop": 3,
    "bybit_stall": 1,
    "bybit_refuse": 1,
    "bybit_link_stall": 1,
    "bybit_malformed": 2,
    "bybit_typeless": 2,
    "book_gap": 2,
    "book_restart": 1,
    "book_crossed": 1,
    "book_stale": 1,
    "slow_acks": 1,
    "capacity_rejection": 1,
    "rabbitmq_cut": 2,
    "rabbitmq_outage": 1,
    "rabbitmq_stall": 1,
    "postgres_cut": 1,
    "postgres_outage": 1,
    "postgres_stall": 1,
    "worker_sigkill": 1,
    "worker_sigterm": 1,
    "worker_restart": 1,
    "worker_join": 1,
}


class Faults:
    def __init__(
        self,
        system: System,
        fake: FakeBybit,
        rng: random.Random,
        *,
        workers: int,
        max_outage: float,
        capacity_rejection: Callable[[], Repair],
    ) -> None:
        self.system = system
        self.fake = fake
        self.rng = rng
        self.workers = workers
        self.max_outage = max_outage
        self.counts: Counter[str] = Counter()
        self.log: list[tuple[float, str]] = []  # (wall clock, kind) of every fault, for reading logs beside
        self._capacity_rejection = capacity_rejection
        self._busy: set[str] = set()  # a link or worker with a fault in progress is left alone until repaired
        self._next_id = workers + 1

    def _duration(self) -> float:
        return self.rng.uniform(1.0, self.max_outage)

    async def run(self, seconds: float, mean_interval: float) -> None:
        """Inject faults for `seconds`, one every `mean_interval` s on average (Poisson), then repair all."""
        end = time.monotonic() + seconds
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        async with asyncio.TaskGroup() as repairs:
            while (now := time.monotonic()) < end:
                await asyncio.sleep(min(self.rng.expovariate(1 / mean_interval), end - now))
                if time.monotonic() >= end:
                    break
                kind = self.rng.choices(kinds, weights)[0]
                repair = await self.inject(kind)
                if repair is not None:
                    self.counts[kind] += 1
                    self.log.append((time.time(), kind))
                    repairs.create_task(repair)

    async def inject(self, kind: str) -> Repair | None:
        """Start one fault; returns what repairs it (a coroutine to await), or None if it was skipped."""
        rng, fake = self.rng, self.fake
        if kind == "bybit_drop":
            await fake.drop_connections(close_frame=rng.random() < 0.5, category=rng.choice((*ENDPOINTS, None)))  # type: ignore[arg-type]
            return _nothing()
        if kind == "bybit_stall":
            endpoint = rng.choice(ENDPOINTS)
            return self._hold(f"stall:{endpoint}", lambda: fake.stall(endpoint), lambda: fake.unstall(endpoint))  # type: ignore[arg-type]
        if kind == "bybit_link_stall":
            # The TCP link of one worker freezes (no bytes either way): only its ping timer can notice.
            worker_id = rng.choice(sorted(self.system.links))
            proxy = self.system.links[worker_id].bybit
            return await self._proxy_fault(f"bybit:{worker_id}", proxy, Mode.STALL)
        if kind == "bybit_refuse":
            duration = self._duration()
            fake.refuse_connections(duration)
            await fake.drop_connections(close_frame=False, category=rng.choice(ENDPOINTS))  # type: ignore[arg-type]
            return asyncio.sleep(duration)
        if kind in ("bybit_malformed", "bybit_typeless"):
            return await self._bad_frames(kind)
        if kind.startswith("book_"):
            return self._book_fault(kind.removeprefix("book_"))
        if kind == "slow_acks":
            delay = rng.uniform(0.2, 1.0)
            return self._hold("acks", lambda: fake.delay_acks(delay), lambda: fake.delay_acks(0.0))
        if kind == "capacity_rejection":
            if "capacity" in self._busy:
                return None
            self._busy.add("capacity")
            return self._guard("capacity", self._capacity_rejection())
        if kind.startswith(("rabbitmq_", "postgres_")):
            return await self._link_fault(kind)
        return await self._worker_fault(kind)

    def _hold(self, name: str, start: Callable[[], object], stop: Callable[[], object]) -> Repair | None:
        if name in self._busy:
            return None
        self._busy.add(name)
        return self._held(name, start, stop)

    async def _held(self, name: str, start: Callable[[], object], stop: Callable[[], object]) -> None:
        start()
        try:
            await asyncio.sleep(self._duration())
        finally:
            stop()
            self._busy.discard(name)

    async def _guard(self, name: str, work: Repair) -> None:
        try:
            await work
        finally:
            self._busy.discard(name)

    async def _bad_frames(self, kind: str) -> Repair:
        endpoint = self.rng.choice(ENDPOINTS)
        if kind == "bybit_malformed":
            for text in ('{"topic": "orderbook.50.BTCUSDT", "data"', "[1, 2, 3]", '{"topic": 7, "data": []}', "\x00"):
                await self.fake.push(text, category=endpoint)  # type: ignore[arg-type]
        else:
            # A push with no `type`: the book cannot say whether it is a snapshot or a delta.
            for category, topic in (("linear", "orderbook.50.BTCUSDT"), ("spot", "orderbook.50.BTCUSDT")):
                frame = {
                    "topic": topic,
                    "ts": self.fake.now_ms(),
                    "data": {"s": "BTCUSDT", "b": [["1", "1"]], "a": [], "u": 5},
                }
                await self.fake.push(frame, category=category)  # type: ignore[arg-type]
            await self.fake.push({"topic": "order", "data": [{"orderId": "x"}]}, category="private")
        return _nothing()

    async def _book_fault(self, fault: str) -> None:
        category, topic = self.rng.choice(
            (
                ("linear", "orderbook.50.BTCUSDT"),
                ("linear", "orderbook.50.ETHUSDT"),
                ("spot", "orderbook.50.BTCUSDT"),
                ("inverse", "orderbook.50.BTCUSD"),
            )
        )
        with contextlib.suppress(LookupError):  # nobody has subscribed that book yet
            await self.fake.inject_book_fault(topic, fault, category=category)  # type: ignore[arg-type]

    async def _link_fault(self, kind: str) -> Repair | None:
        target, fault = kind.split("_")
        worker_id = self.rng.choice(sorted(self.system.links))
        name = f"{target}:{worker_id}"
        links = self.system.links[worker_id]
        proxy = links.rabbitmq if target == "rabbitmq" else links.postgres
        if fault == "cut":
            await proxy.cut()  # the client reconnects at once through the same port
            return _nothing()
        return await self._proxy_fault(name, proxy, Mode.REFUSE if fault == "outage" else Mode.STALL)

    async def _proxy_fault(self, name: str, proxy: FaultProxy, mode: Mode) -> Repair | None:
        if name in self._busy:
            return None
        self._busy.add(name)
        await proxy.set_mode(mode)

        async def repair() -> None:
            try:
                await asyncio.sleep(self._duration())
            finally:
                await proxy.set_mode(Mode.FORWARD)
                self._busy.discard(name)

        return repair()

    async def _worker_fault(self, kind: str) -> Repair | None:
        system = self.system
        alive = sorted(w for w in system.workers if w not in self._busy)
        if kind == "worker_join":
            if len(system.workers) > self.workers:
                return None  # at most one extra member at a time
            worker_id = f"w{self._next_id}"
            self._next_id += 1
            await system.start_worker(worker_id)
            return _nothing()
        if not alive:
            return None
        worker_id = self.rng.choice(alive)
        if kind == "worker_restart":
            await system.stop_worker(worker_id, signal.SIGTERM, how="restart")
            await system.start_worker(worker_id)
            return _nothing()
        signum = signal.SIGKILL if kind == "worker_sigkill" else signal.SIGTERM
        await system.stop_worker(worker_id, signum, how=kind)
        self._busy.add(worker_id)

        async def come_back() -> None:
            try:
                await asyncio.sleep(self._duration())
                # A joiner that was stopped stays away; the configured workers come back.
                if int(worker_id[1:]) <= self.workers:
                    await system.start_worker(worker_id)
            finally:
                self._busy.discard(worker_id)

        return come_back()


async def _nothing() -> None:
    return None
