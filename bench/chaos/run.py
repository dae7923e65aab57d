"""One chaos run: start the system, inject faults while services churn and the account trades, then stop the
faults and judge. Returns the report; `__main__` prints it.

Bounds, and why each is what it is (all generous for a shared two-core machine, none generous enough to hide a
topic that is never served or an event that never arrives):
- MAX_OUTAGE 6 s: the longest a link stays stalled or refused, a worker stays dead, or Bybit refuses. Longer
  than a lease (5 s), so a stalled worker's topics really move, and than the dead-socket verdict (2 pings, 6 s).
- CANCEL_GRACE 25 s: a cancellation reaches the broker through the API's outbox, RabbitMQ and a worker's
  command queue; every worker may have its RabbitMQ link down for MAX_OUTAGE, then reconnects with backoff
  (capped at 10 s by the publisher) before it can unbind. Anything published later than that is a leak.
- CONVERGE_BOUND 60 s: after the last repair, a dead member's lease expires (5 s), the survivors renew (1 s), a
  joiner's make-before-break handover may wait up to 30 s, and a resubscribe may meet a recycled socket.
- ACCOUNT_SETTLE 60 s: the REST re-sync after a takeover or reconnect backs off up to 60 s after failures; a
  push lost on a live socket waits for the periodic re-sync (10 s in the run, system.WORKER_TUNING).
- DROP_WINDOW (10 s before, 3 s after): a counted drop is scraped once a second; a hole is seen when the
  consumer reads the next delta, which may sit behind a RabbitMQ outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from bench.chaos.activity import ACCOUNT_SERVICES, PRIVATE_TOPICS, SERVICES, Account, Churn
from bench.chaos.consumers import AccountView, Hole, ServiceConsumer
from bench.chaos.faults import Faults
from bench.chaos.model import Subscriptions, Violations
from bench.chaos.system import BYBIT_KEY, BYBIT_SECRET, System
from tests.fake_bybit import FakeBybit
from tests.fake_bybit.ledger import OPEN_STATUSES
from tests.support.cluster import TopicKey, live_subscriptions
from tests.support.fault_proxy import Mode

MAX_OUTAGE = 6.0
CANCEL_GRACE_S = 25.0
CONVERGE_BOUND = 60.0
ACCOUNT_SETTLE = 60.0
DROP_WINDOW = (10.0, 3.0)
START_BOUND = 90.0  # K Python workers starting on two cores, then meeting, then subscribing


def wanted_topics(subscriptions: Subscriptions) -> set[TopicKey]:
    market = {(key[1], key[2]) for service in SERVICES for key, _ in subscriptions.live(service)}
    return market | {("private", topic) for topic in PRIVATE_TOPICS}


async def cluster_view(api: httpx.AsyncClient) -> Counter[TopicKey]:
    """How many live workers report each (socket, topic), per GET /api/v1/workers."""
    body = (await api.get("/api/v1/workers")).json()
    return Counter(
        (socket, topic)
        for member in body["items"]
        if member["alive"]
        for socket, topics in member["topics"].items()
        for topic in topics
    )


async def converged(api: httpx.AsyncClient, fake: FakeBybit, wanted: set[TopicKey]) -> bool:
    """Every wanted topic live exactly once cluster-wide, by the API's view and by Bybit's (the fake's)."""
    try:
        reported = await cluster_view(api)
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    on_bybit = live_subscriptions(fake)
    return all(set(counts) == wanted and set(counts.values()) <= {1} for counts in (reported, on_bybit))


def _wall(ms: int | None = None) -> str:
    """UTC wall-clock time, to line a report up with the processes' logs."""
    stamp = time.time() if ms is None else ms / 1000
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds")


def account_mismatches(fake: FakeBybit, view: AccountView) -> list[dict[str, Any]]:
    """Where a consumer's final account view differs from the fake's ledger (empty: equal). A mismatch that
    matches a known bug (model.KNOWN) says which in `known`."""
    ledger, found = fake.ledger, list[dict[str, Any]]()
    for row in ledger.executions:
        if f"execution:{row['execId']}" not in view.event_ids:
            at = _wall(int(row["execTime"]))
            found.append({"subject": f"execution:{row['execId']}", "at": at, "missing": True})
    for order_id, row in ledger.orders.items():
        seen = view.orders.get(order_id)
        theirs = (row["orderStatus"], Decimal(row["cumExecQty"]))
        ours = None if seen is None else (seen[1].get("orderStatus"), Decimal(seen[1].get("cumExecQty") or 0))
        if ours is None and theirs[0] not in OPEN_STATUSES:
            # Placed and closed within one gap: the re-sync lists what is open now and resolves what it believed
            # open, so the consumer never hears of it; "nothing open" is the same final view. Its fills are
            # checked above, by execution id.
            continue
        if ours != theirs:
            consumer = None if ours is None else list(map(str, ours))
            mismatch = {"subject": f"order:{order_id}", "fake": list(map(str, theirs)), "consumer": consumer}
            found.append(mismatch)
    for key, row in ledger.positions.items():
        seen_position = view.positions.get(key)
        ours_size = None if seen_position is None else Decimal(seen_position[1].get("size") or 0)
        # By value: Bybit writes a flat position's size as "0" in one message and "0.00" in another.
        if ours_size != Decimal(row["size"]):
            consumer_size = None if ours_size is None else str(ours_size)
            found.append({"subject": f"position:{key[1]}", "fake": row["size"], "consumer": consumer_size})
    for account_type, wallet in ledger.wallets.items():
        for coin in wallet["coin"]:
            balance = view.balances.get((account_type.lower(), coin["coin"]))
            ours_balance = None if balance is None else Decimal(balance[1])
            if ours_balance != Decimal(coin["walletBalance"]):
                found.append(
                    {
                        "subject": "balance",
                        "coin": coin["coin"],
                        "fake": coin["walletBalance"],
                        "consumer": None if ours_balance is None else str(ours_balance),
                    }
                )
    return found


def unexplained_holes(holes: list[Hole], system: System) -> tuple[list[Hole], int]:
    """Holes no counted drop explains, and how many fell right after a SIGKILL (a killed worker counts nothing).
    A hole after a RabbitMQ fault needs a counted drop like any other: what was written but never known to
    have arrived when the link died counts as `in_flight`."""
    before, after = DROP_WINDOW
    unexplained, after_kill = [], 0
    for hole in holes:
        if any(hole.at - before <= drop.at <= hole.at + after for drop in system.drops):
            continue
        if any(hole.at - before <= at <= hole.at + 1.0 for at, _ in system.kills):
            after_kill += 1
            continue
        unexplained.append(hole)
    return unexplained, after_kill


async def repeat(step: Any, interval: tuple[float, float], rng: random.Random, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await step()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(*interval))


async def chaos(
    seconds: float,
    seed: int,
    workers: int,
    database_url: str,
    rabbitmq_url: str,
    log_dir: Path,
    *,
    fault_interval: float,
) -> dict[str, Any]:
    rng = random.Random(seed)
    violations, subscriptions = Violations(), Subscriptions()
    started = time.monotonic()
    timeline: dict[str, str] = {"started": _wall()}
    async with FakeBybit(accounts={BYBIT_KEY: BYBIT_SECRET}, push_interval=0.1, seed=seed) as fake:
        async with System(database_url, rabbitmq_url, log_dir, fake) as system, system.client() as api:
            consumers = {
                service: ServiceConsumer(
                    service, rabbitmq_url, fake, subscriptions, violations, cancel_grace_ms=int(CANCEL_GRACE_S * 1000)
                )
                for service in SERVICES
            }
            churn = Churn(api, subscriptions, consumers, violations, random.Random(f"{seed}/churn"))
            account = Account(fake, random.Random(f"{seed}/account"))
            faults = Faults(
                system,
                fake,
                random.Random(f"{seed}/faults"),
                workers=workers,
                max_outage=MAX_OUTAGE,
                capacity_rejection=lambda: churn.capacity_rejection(fake, CONVERGE_BOUND),
            )
            async with asyncio.TaskGroup() as observers:
                watching = [observers.create_task(consumer.run()) for consumer in consumers.values()]
                watching.append(observers.create_task(system.scrape_forever()))
                await churn.setup()
                for number in range(1, workers + 1):
                    await system.start_worker(f"w{number}")
                start_deadline = time.monotonic() + START_BOUND
                while not await converged(api, fake, wanted_topics(subscriptions)):
                    if time.monotonic() > start_deadline:
                        raise RuntimeError(f"the system did not start within {START_BOUND} s; logs in {log_dir}")
                    await asyncio.sleep(0.5)
                setup_s = time.monotonic() - started
                timeline["faults_started"] = _wall()

                stop = asyncio.Event()
                async with asyncio.TaskGroup() as load:
                    load.create_task(repeat(churn.step, (0.5, 2.0), rng, stop))
                    load.create_task(repeat(account.step, (0.2, 0.8), rng, stop))
                    await faults.run(seconds, fault_interval)
                    stop.set()

                await repair_everything(system, fake, workers)
                repaired = time.monotonic()
                timeline["repaired"] = _wall()
                wanted = wanted_topics(subscriptions)
                convergence_s: float | None = None
                while time.monotonic() - repaired < CONVERGE_BOUND:
                    if await converged(api, fake, wanted):
                        convergence_s = time.monotonic() - repaired
                        break
                    await asyncio.sleep(0.25)
                if convergence_s is None:
                    violations.add(
                        "converged",
                        {
                            "bound_s": CONVERGE_BOUND,
                            "api": sorted(map(list, (await cluster_view(api)).items())),
                            "bybit": sorted(map(list, live_subscriptions(fake).items())),
                            "wanted": sorted(wanted),
                        },
                    )

                # Account views: eventually equal to the fake's ledger (re-syncs may still be running).
                settle_deadline = time.monotonic() + ACCOUNT_SETTLE
                mismatches: dict[str, list[dict[str, Any]]] = {}
                while True:
                    mismatches = {s: account_mismatches(fake, consumers[s].account) for s in ACCOUNT_SERVICES}
                    unknown = [m for found in mismatches.values() for m in found if "known" not in m]
                    if not unknown or time.monotonic() > settle_deadline:
                        break
                    await asyncio.sleep(0.5)
                for service, found in mismatches.items():
                    for mismatch in found:
                        if "known" in mismatch:
                            violations.add_known(str(mismatch["known"]), {"service": service, **mismatch})
                            continue
                        invariant = "account_event_delivered" if mismatch.get("missing") else "account_view_equals_fake"
                        violations.add(invariant, {"service": service, **mismatch})
                await system.scrape_all()
                observers_done = time.monotonic()
                timeline["judged"] = _wall()
                for task in watching:
                    task.cancel()
            holes = [hole for consumer in consumers.values() for hole in consumer.holes]
            unexplained, after_kill = unexplained_holes(holes, system)
            for hole in unexplained:
                sample = {**hole.__dict__, "wall": _wall(int(hole.wall * 1000)), "counted": system.counted_drops()}
                violations.add("market_loss_counted", sample)
        for worker_id, how, code in system.exit_codes:
            if how.split(" ")[0] in ("worker_sigterm", "restart", "end") and code != 0:
                sample = {"worker": worker_id, "how": how, "exit_code": code}
                if not how.endswith("(before any handler)"):
                    violations.add("workers_exit_cleanly", sample)

    events = sorted([*faults.log, *system.log])
    (log_dir / "faults.log").write_text("".join(f"{_wall(int(at * 1000))} {what}\n" for at, what in events))
    checked: Counter[str] = Counter()
    for consumer in consumers.values():
        checked.update(consumer.counts)
    checked["account:executions_expected"] = len(fake.ledger.executions) * len(ACCOUNT_SERVICES)
    return {
        "duration_s": round(time.monotonic() - started, 1),
        "fault_seconds": seconds,
        "seed": seed,
        "workers": workers,
        "setup_s": round(setup_s, 1),
        "faults": dict(sorted(faults.counts.items())),
        "activity": {
            "churn": dict(churn.counts),
            "account": dict(account.counts),
            "snapshot_endpoint": churn.snapshot_supported,
            "latest_push_lost_on_live_socket": len(account.lost_on_live_socket),
        },
        "events_checked": dict(sorted(checked.items())),
        "book_holes": {
            "total": len(holes),
            "explained_by_counted_drops": len(holes) - len(unexplained) - after_kill,
            "right_after_sigkill": after_kill,
        },
        "counted_drops": system.counted_drops(),
        "violations": violations.report(),
        "violations_total": violations.total,
        "known_bugs": violations.known_report(),
        "convergence_s": None if convergence_s is None else round(convergence_s, 2),
        "bounds_s": {
            "max_outage": MAX_OUTAGE,
            "cancel_grace": CANCEL_GRACE_S,
            "converge": CONVERGE_BOUND,
            "account_settle": ACCOUNT_SETTLE,
        },
        "after_faults_s": round(observers_done - repaired, 1),
        "timeline_utc": timeline,
    }


async def repair_everything(system: System, fake: FakeBybit, workers: int) -> None:
    """Undo every fault still in force and bring the configured workers back: the start of convergence."""
    fake.accept_connections()
    fake.unstall()
    fake.delay_acks(0.0)
    fake.clear_rejections()
    for links in system.links.values():
        for proxy in links.all():
            if proxy.mode is not Mode.FORWARD:
                await proxy.set_mode(Mode.FORWARD)
    for number in range(1, workers + 1):
        if f"w{number}" not in system.workers:
            await system.start_worker(f"w{number}")
