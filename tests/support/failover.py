"""One failover round with real worker processes, shared by the failover test and `bench/failover.py`.

Three workers share 60 public topics over four categories plus the private stream. The round SIGKILLs the
private stream's holder and another worker that serves market data, pushes account events all through the
handover, measures how long the survivor takes to subscribe the orphaned topics and until consumers see their
events again, then restarts the two and counts the subscribes the rebalance costs. It measures and records;
the caller asserts.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aio_pika.abc import AbstractIncomingMessage

from shared.enums import ChannelType, Endpoint
from shared.events import ENVELOPE_DECODER
from shared.routing import service_queue
from stream_worker.cluster.assignment import owner_of
from tests.fake_bybit import FakeBybit
from tests.support.cluster import TopicKey, exactly_once, live_subscriptions, subscribe_frames
from tests.support.processes import Service, running
from tests.support.queues import consuming_with
from tests.support.waiting import wait_until

WORKERS = ("w1", "w2", "w3")
LINEAR_SPOT = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT")
INVERSE = ("BTCUSD", "ETHUSD", "SOLUSD", "XRPUSD", "DOTUSD")
OPTION_COINS = ("BTC", "ETH", "SOL", "XRP", "DOGE")
OPTIONS = (
    "BTC-27DEC26-100000-C",
    "ETH-27DEC26-4000-P",
    "SOL-27DEC26-200-C",
    "BTC-27DEC26-90000-P",
    "ETH-27DEC26-5000-C",
)
PRIVATE = ("execution", "order")
ACCOUNT_PUSH_INTERVAL = 0.25  # one execution every this often from the kill until the private stream is back


def market_requests() -> list[dict[str, Any]]:
    """Sixty public subscriptions: 15 per category (trades, tickers and books of five symbols)."""
    requests: list[dict[str, Any]] = []
    for category, symbols in (("linear", LINEAR_SPOT), ("spot", LINEAR_SPOT), ("inverse", INVERSE)):
        for channel in ("trades", "ticker", "orderbook"):
            requests += [{"channel_type": channel, "category": category, "symbol": s} for s in symbols]
    requests += [{"channel_type": "trades", "category": "option", "symbol": c} for c in OPTION_COINS]
    for channel in ("ticker", "orderbook"):
        requests += [{"channel_type": channel, "category": "option", "symbol": s} for s in OPTIONS]
    return requests


def topic_key(request: Mapping[str, Any]) -> TopicKey:
    category, symbol, channel = request["category"], request["symbol"], request["channel_type"]
    if channel == "trades":
        return category, f"publicTrade.{symbol}"
    if channel == "ticker":
        return category, f"tickers.{symbol}"
    return category, f"orderbook.{25 if category == 'option' else 50}.{symbol}"


@dataclass
class Arrivals:
    """When each topic's events reached the consumer, and every event id seen."""

    last: dict[TopicKey, float] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)
    first_seen: dict[str, float] = field(default_factory=dict)
    count: int = 0

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        async with message.process():
            envelope = ENVELOPE_DECODER.decode(message.body)
            self.count += 1
            self.ids.add(envelope.event_id)
            self.first_seen.setdefault(envelope.event_id, time.monotonic())
            self.last[(envelope.category or "private", envelope.topic)] = time.monotonic()

    def seen_since(self, keys: set[TopicKey], since: float) -> bool:
        return all(self.last.get(key, 0.0) > since for key in keys)


@dataclass
class Round:
    market_resubscribed_s: float = 0.0  # kill -> every orphaned public topic subscribed again, once
    market_events_s: float = 0.0  # kill -> the consumer has a new event of every orphaned trades topic
    private_resubscribed_s: float = 0.0  # kill -> the private topics subscribed again by the survivor
    account_events_s: float = 0.0  # kill -> the consumer has the first execution pushed after the kill
    account_events_pushed: int = 0
    account_events_lost: int = 0
    resync_failures: int = 0  # REST re-sync attempts that failed and were retried, from the workers' logs
    orphaned_topics: int = 0
    rebalance_settled_s: float = 0.0  # restart -> the assignment is the three-member one again
    rebalance_subscribes: int = 0  # subscribe frames the rebalance sent
    rebalance_moved: int = 0  # topics whose owner the rebalance changed
    # Topics that some sample during the rebalance found subscribed nowhere (make-before-break: none).
    unserved_in_rebalance: list[TopicKey] = field(default_factory=list)
    # The most subscribe frames one topic got in the rebalance: 1 when it moved straight to its final owner, 2
    # when a worker that restarted first claimed it and handed it to one that joined a moment later.
    max_subscribes_per_topic: int = 0
    kept_but_resubscribed: list[TopicKey] = field(default_factory=list)  # the survivor's own, yet subscribed


async def create(api: httpx.AsyncClient, body: dict[str, Any]) -> None:
    """POST a subscription as a polite client does: waiting out the write rate limit when told to."""
    while True:
        response = await api.post("/api/v1/subscriptions", json=body)
        if response.status_code != 429:
            assert response.status_code == 201, response.text
            return
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))


async def cluster(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.get("/api/v1/workers")
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def reported_owners(body: Mapping[str, Any]) -> dict[TopicKey, str]:
    return {
        (socket, topic): member["worker_id"]
        for member in body["items"]
        if member["alive"]
        for socket, topics in member["topics"].items()
        for topic in topics
    }


async def wait_assigned(
    api: httpx.AsyncClient, wanted: set[TopicKey], members: tuple[str, ...], timeout: float
) -> None:
    """Until every live worker reports exactly its rendezvous share of the public topics over `members`."""
    expected = {key: owner_of(Endpoint(key[0]), key[1], members) for key in wanted if key[0] != "private"}

    async def assigned() -> bool:
        body = await cluster(api)
        owners = reported_owners(body)
        public = {key: owner for key, owner in owners.items() if key[0] != "private"}
        private_owners = {owner for key, owner in owners.items() if key[0] == "private"}
        return public == expected and len(private_owners) == 1 and body["live"] == len(members)

    await wait_until(assigned, timeout=timeout, interval=0.1, what=f"the rendezvous assignment over {members}")


async def run_round(
    api: httpx.AsyncClient,
    fake: FakeBybit,
    rabbitmq_url: str,
    env_for: Callable[[str], dict[str, str]],
    log_dir: Path,
    *,
    timeout: float = 60.0,
) -> Round:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    requests = market_requests()
    for fields in [*requests, *({"channel_type": c} for c in PRIVATE)]:
        await create(api, {"requesting_service": svc, **fields})
    public = {topic_key(r) for r in requests}
    wanted = public | {("private", topic) for topic in PRIVATE}
    trades_topics = {topic_key(r) for r in requests if r["channel_type"] == "trades"}
    result = Round()
    trades, executions = Arrivals(), Arrivals()
    async with AsyncExitStack() as stack:
        processes: dict[str, Service] = {}
        for worker_id in WORKERS:
            processes[worker_id] = await stack.enter_async_context(
                running("stream_worker", env_for(worker_id), log_dir, f"{worker_id}-first")
            )
        for arrivals, channel_type in ((trades, ChannelType.TRADES), (executions, ChannelType.EXECUTION)):
            queue = service_queue(svc, channel_type)
            await stack.enter_async_context(consuming_with(rabbitmq_url, queue, arrivals.on_message, timeout=30))
        await wait_until(lambda: exactly_once(fake, wanted), timeout=timeout, what="each topic subscribed once")
        await wait_assigned(api, wanted, WORKERS, timeout)

        body = await cluster(api)
        holder = body["private_holder"]
        owners = reported_owners(body)
        market_owner = next(w for w in WORKERS if w != holder and any(o == w for o in owners.values()))
        survivor = next(w for w in WORKERS if w not in (holder, market_owner))
        orphaned = {key for key, owner in owners.items() if owner in (holder, market_owner) and key[0] != "private"}
        result.orphaned_topics = len(orphaned)

        killed_at = time.monotonic()
        for worker_id in (holder, market_owner):
            processes[worker_id].kill()
        for worker_id in (holder, market_owner):
            assert await processes[worker_id].wait(10) == -signal.SIGKILL

        pushed: list[str] = []
        private_back = asyncio.Event()

        async def push_account_events() -> None:
            # Before, during and just after the handover: every one must reach the consumer.
            extra = 2
            while extra > 0:
                fill = await fake.push_account("execution", category="linear", symbol="BTCUSDT")
                pushed.append(f"execution:{fill['data'][0]['execId']}")
                if private_back.is_set():
                    extra -= 1
                await asyncio.sleep(ACCOUNT_PUSH_INTERVAL)

        pushing = asyncio.create_task(push_account_events(), name="account-pushes")
        try:
            market_back = private_done = events_back = False
            deadline = killed_at + timeout
            while not (market_back and private_done and events_back):
                now = time.monotonic()
                assert now < deadline, f"no failover within {timeout} s: {live_subscriptions(fake)}"
                counts = live_subscriptions(fake)
                if not market_back and all(counts[key] == 1 for key in orphaned):
                    market_back, result.market_resubscribed_s = True, now - killed_at
                if not private_done and all(counts[("private", t)] == 1 for t in PRIVATE):
                    private_done, result.private_resubscribed_s = True, now - killed_at
                    private_back.set()
                if not events_back and trades.seen_since(orphaned & trades_topics, killed_at):
                    events_back, result.market_events_s = True, now - killed_at
                await asyncio.sleep(0.01)
            await asyncio.wait_for(pushing, timeout)
        finally:
            pushing.cancel()
        result.account_events_pushed = len(pushed)
        await wait_until(lambda: set(pushed) <= executions.ids, timeout=20, what="every execution pushed in handover")
        result.account_events_lost = len(set(pushed) - executions.ids)
        result.account_events_s = executions.first_seen[pushed[0]] - killed_at
        assert exactly_once(fake, wanted), live_subscriptions(fake)

        before = subscribe_frames(fake)
        restarted_at = time.monotonic()
        unserved: set[TopicKey] = set()

        async def sample_coverage() -> None:
            while True:
                counts = live_subscriptions(fake)
                unserved.update(key for key in wanted if counts[key] == 0)
                await asyncio.sleep(0.01)

        sampling = asyncio.create_task(sample_coverage(), name="coverage-sampler")
        try:
            for worker_id in (holder, market_owner):
                processes[worker_id] = await stack.enter_async_context(
                    running("stream_worker", env_for(worker_id), log_dir, f"{worker_id}-second")
                )
            await wait_assigned(api, wanted, WORKERS, timeout)
            await wait_until(lambda: exactly_once(fake, wanted), timeout=timeout, what="each topic once again")
        finally:
            sampling.cancel()
        result.rebalance_settled_s = time.monotonic() - restarted_at
        result.unserved_in_rebalance = sorted(unserved)
        after = subscribe_frames(fake)
        new = after - before
        final = reported_owners(await cluster(api))
        result.rebalance_subscribes = sum(n for key, n in new.items() if key[0] != "private")
        result.rebalance_moved = sum(1 for key in public if final[key] != survivor)
        result.max_subscribes_per_topic = max(new.values(), default=0)
        result.kept_but_resubscribed = sorted(key for key in public if final[key] == survivor and new[key] > 0)
        for service in processes.values():
            service.terminate()
        for service in processes.values():
            await service.wait(30)
    result.resync_failures = count_in_logs(log_dir, "account re-sync failed")
    return result


def count_in_logs(log_dir: Path, text: str) -> int:
    """How often `text` occurs in the workers' logs (stderr files) of a round: a handful of small files."""
    return sum(path.read_text(errors="replace").count(text) for path in log_dir.glob("*.stderr"))
