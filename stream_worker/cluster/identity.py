"""A worker id belongs to one running process: the second one started with it refuses to start.

Two workers with one `WS_GATEWAY_WORKER_ID` (its default is the host name, so two on one host) would both
serve everything the id owns: every topic subscribed twice against Bybit's limits. A live process is one whose
lease in `worker_members` has not expired, and only a live process renews its lease, so a starting worker
that finds another instance's unexpired row waits for that lease to run out. A predecessor that crashed
renews nothing: its lease expires within one TTL and the restart takes the row over. A twin that is running
renews it: still held once the lease it showed has passed, and this worker refuses to start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from loguru import logger

from stream_worker.cluster.membership import MembershipStore
from stream_worker.errors import WorkerError
from stream_worker.state.persistence import DATABASE_ERRORS


class DuplicateWorkerId(WorkerError):
    """Another running worker holds this worker id: the person starting this one must give it its own."""

    def __init__(self, worker_id: str, holder: str) -> None:
        super().__init__(
            f"worker id {worker_id!r} is in use by another running worker (instance {holder}): "
            "give each worker its own WS_GATEWAY_WORKER_ID"
        )
        self.worker_id, self.holder = worker_id, holder


async def claim_worker_id(
    store: MembershipStore,
    stop: asyncio.Event,
    *,
    poll: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Take our member row, waiting out a crashed predecessor's lease. False if `stop` was set meanwhile;
    raises DuplicateWorkerId if another instance keeps renewing it. Waits for PostgreSQL while it is away:
    a worker that cannot read its desired set has nothing to serve anyway."""
    deadline: float | None = None
    database_away = False
    while not stop.is_set():
        try:
            holder = await store.claim()
        except DATABASE_ERRORS as error:
            if not database_away:
                database_away = True
                logger.bind(error=type(error).__name__).warning("cannot reach PostgreSQL to claim the worker id")
            await sleep(poll)
            continue
        if holder is None:
            if deadline is not None:
                logger.bind(worker_id=store.worker_id).info("the previous instance's lease expired; worker id claimed")
            return True
        now = clock()
        if deadline is None:
            # One renewal interval past the lease it showed: a live holder has renewed by then, a dead one has not.
            deadline = now + max(holder.expires_in_s, 0.0) + poll
            logger.bind(
                worker_id=store.worker_id, holder=holder.instance_id, expires_in_s=round(holder.expires_in_s, 1)
            ).info("worker id held by another instance; waiting to see whether its lease runs out")
        elif now >= deadline:
            raise DuplicateWorkerId(store.worker_id, holder.instance_id)
        await sleep(poll)
    return False
