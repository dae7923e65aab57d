"""The system under test, started as it runs in production: the API and K workers as processes, the fake
Bybit, PostgreSQL and RabbitMQ, with a fault proxy on every link a worker has (Bybit, RabbitMQ, PostgreSQL).

Each worker id gets its own three proxies, so a fault can hit one worker's link while the others keep theirs;
the API and the checkers talk to PostgreSQL and RabbitMQ directly (they observe, they are not under test).
Every worker serves Prometheus metrics on a port of its own, scraped here while it lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from tests.fake_bybit import FakeBybit
from tests.support.fault_proxy import FaultProxy
from tests.support.processes import catches_sigterm, worker_env
from tests.support.services import REPO_ROOT
from tests.support.waiting import wait_until

BYBIT_KEY, BYBIT_SECRET, API_KEY = "chaos-key", "chaos-secret", "chaos-api-key"
_DROPPED = re.compile(r'^ws_gateway_worker_dropped_events_total\{cause="([a-z_]+)"\} ([0-9.e+]+)$', re.MULTILINE)

# Worker settings for the run, each shorter than production so a fault costs seconds, not minutes:
WORKER_TUNING = {
    # A stalled Bybit socket is declared dead after 2 pings (6 s) instead of 40 s.
    "BYBIT_PING_INTERVAL": "3",
    "BYBIT_ACK_TIMEOUT": "5",
    "BYBIT_RECONNECT_CAP": "1",
    # The production lease (5 s TTL, 1 s renewal) is kept: failover under chaos is what is being judged.
    "WS_GATEWAY_RECONCILE_INTERVAL": "5",
    "WS_GATEWAY_SHUTDOWN_GRACE": "5",
    # A push the fake drops on a stalled but live private socket comes back by the periodic re-sync: every 10 s,
    # so it lands well within ACCOUNT_SETTLE instead of a minute later.
    "WS_GATEWAY_ACCOUNT_RESYNC_INTERVAL": "10",
}


def free_port() -> int:
    """A port nobody listens on now (a worker binds it a moment later; a collision fails loudly at start)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{port}"))


@dataclass
class Links:
    """One worker id's three proxies."""

    bybit: FaultProxy
    rabbitmq: FaultProxy
    postgres: FaultProxy

    def all(self) -> tuple[FaultProxy, FaultProxy, FaultProxy]:
        return self.bybit, self.rabbitmq, self.postgres


@dataclass
class WorkerProcess:
    worker_id: str
    generation: int
    process: asyncio.subprocess.Process
    metrics_port: int
    started_at: float
    dropped: dict[str, float] = field(default_factory=dict)  # the last scrape of dropped_events_total

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


@dataclass
class DropRecord:
    """A worker's counted market drops rose (between two scrapes ending at `at`)."""

    at: float
    worker_id: str
    increase: float


class System:
    def __init__(self, database_url: str, rabbitmq_url: str, log_dir: Path, fake: FakeBybit) -> None:
        self.database_url = database_url  # direct, for the API
        self.rabbitmq_url = rabbitmq_url
        self.log_dir = log_dir
        self.fake = fake
        self.links: dict[str, Links] = {}
        self.workers: dict[str, WorkerProcess] = {}
        self.retired: list[WorkerProcess] = []  # exited workers, with their last scrape
        self.drops: list[DropRecord] = []
        self.kills: list[tuple[float, str]] = []  # SIGKILLs: whatever a killed worker held is lost uncounted
        self.exit_codes: list[tuple[str, str, int]] = []  # (worker id, how it was stopped, exit code)
        self.log: list[tuple[float, str]] = []  # (wall clock, what happened to which worker)
        self.api_url = ""
        self._api: asyncio.subprocess.Process | None = None
        self._stack = AsyncExitStack()
        self._generation = 0

    # ---- lifecycle --------------------------------------------------------------------------------
    async def __aenter__(self) -> System:
        await self._stack.__aenter__()
        await self._start_api()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for worker in list(self.workers.values()):
            await self.stop_worker(worker.worker_id, signal.SIGTERM, how="end")
        if self._api is not None and self._api.returncode is None:
            self._api.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._api.wait(), 15)
            except TimeoutError:
                self._api.kill()
                await self._api.wait()
        await self._stack.__aexit__(None, None, None)

    async def _spawn(self, module: str, env: dict[str, str], name: str) -> asyncio.subprocess.Process:
        with (self.log_dir / f"{name}.stdout").open("wb") as out, (self.log_dir / f"{name}.stderr").open("wb") as err:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", module, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=out, stderr=err
            )

    async def _start_api(self) -> None:
        port = free_port()
        env = {
            "DATABASE_URL": self.database_url,
            "RABBITMQ_URL": self.rabbitmq_url,
            "WS_GATEWAY_API_KEY": API_KEY,
            "WS_GATEWAY_PORT": str(port),
            "WS_GATEWAY_WRITE_RATE": "1000",  # the churn is not throttled: the rate limit is not under test
            "WS_GATEWAY_WRITE_BURST": "1000",
            "LOG_FORMAT": "json",
        }
        self._api = await self._spawn("control_api", env, "api")
        self.api_url = f"http://127.0.0.1:{port}"

        async def answering() -> bool:
            assert self._api is not None
            if self._api.returncode is not None:
                raise RuntimeError(f"the API exited with {self._api.returncode}; see {self.log_dir}/api.stderr")
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient(timeout=2) as client:
                    return (await client.get(f"{self.api_url}/schema/openapi.json")).status_code == 200
            return False

        await wait_until(answering, timeout=60, interval=0.2, what="the API answering")  # type: ignore[arg-type]

    async def _links_for(self, worker_id: str) -> Links:
        if worker_id not in self.links:
            fake_port = self.fake.port
            rmq, pg = urlsplit(self.rabbitmq_url), urlsplit(self.database_url)
            proxies = [
                FaultProxy("127.0.0.1", fake_port),
                FaultProxy(rmq.hostname or "127.0.0.1", rmq.port or 5672),
                FaultProxy(pg.hostname or "127.0.0.1", pg.port or 5432),
            ]
            for proxy in proxies:
                await self._stack.enter_async_context(proxy)
            self.links[worker_id] = Links(*proxies)
        return self.links[worker_id]

    # ---- workers ----------------------------------------------------------------------------------
    async def start_worker(self, worker_id: str) -> WorkerProcess:
        links = await self._links_for(worker_id)
        self._generation += 1
        port = free_port()
        env = worker_env(
            f"ws://127.0.0.1:{links.bybit.port}",
            _with_port(self.database_url, links.postgres.port),
            _with_port(self.rabbitmq_url, links.rabbitmq.port),
            api_key=BYBIT_KEY,
            api_secret=BYBIT_SECRET,
            **WORKER_TUNING,
            WS_GATEWAY_WORKER_ID=worker_id,
            WS_GATEWAY_WORKER_METRICS_PORT=str(port),  # scraped by the loss check; each worker its own port
        )
        process = await self._spawn("stream_worker", env, f"{worker_id}-{self._generation}")
        worker = WorkerProcess(worker_id, self._generation, process, port, time.monotonic())
        self.log.append((time.time(), f"start {worker_id}-{self._generation}"))
        self.workers[worker_id] = worker
        return worker

    async def stop_worker(self, worker_id: str, signum: signal.Signals, *, how: str) -> None:
        worker = self.workers.pop(worker_id)
        self.log.append((time.time(), f"{signum.name} {worker_id}-{worker.generation} ({how})"))
        if signum is signal.SIGTERM:
            await self.scrape(worker)  # its final counts, before it goes
        else:
            self.kills.append((time.monotonic(), worker_id))
        handled = catches_sigterm(worker.process.pid)
        if worker.alive:
            worker.process.send_signal(signum)
        try:
            code = await asyncio.wait_for(worker.process.wait(), 30)
        except TimeoutError:
            worker.process.kill()
            code = await worker.process.wait()
        # Signalled while the interpreter itself was still starting, before any of our code ran: no program can
        # exit cleanly then (the worker catches SIGTERM on its first line, see its __main__).
        self.exit_codes.append((worker_id, how if handled else f"{how} (before any handler)", code))
        self.retired.append(worker)

    # ---- metrics ----------------------------------------------------------------------------------
    async def scrape(self, worker: WorkerProcess) -> None:
        """Read the worker's dropped_events_total; record any rise as a counted drop."""
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                text = (await client.get(f"http://127.0.0.1:{worker.metrics_port}/metrics")).text
        except httpx.HTTPError:
            return  # starting, stopping, or its event loop is busy: the next scrape catches up
        current = {cause: float(value) for cause, value in _DROPPED.findall(text)}
        increase = sum(current.values()) - sum(worker.dropped.values())
        if increase > 0:
            self.drops.append(DropRecord(time.monotonic(), worker.worker_id, increase))
        worker.dropped = current

    async def scrape_all(self) -> None:
        await asyncio.gather(*(self.scrape(w) for w in list(self.workers.values()) if w.alive))

    async def scrape_forever(self, interval: float = 1.0) -> None:
        while True:
            await self.scrape_all()
            await asyncio.sleep(interval)

    def counted_drops(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for worker in [*self.retired, *self.workers.values()]:
            for cause, value in worker.dropped.items():
                totals[cause] = totals.get(cause, 0.0) + value
        return totals

    # ---- the API ----------------------------------------------------------------------------------
    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.api_url, headers={"X-API-Key": API_KEY}, timeout=10)


def worker_summary(system: System) -> dict[str, Any]:
    return {
        "exits": [{"worker": w, "how": how, "code": code} for w, how, code in system.exit_codes],
        "counted_drops": system.counted_drops(),
    }
