"""`GET /health`: PostgreSQL, RabbitMQ and the stream worker, for load balancers and people. No key needed.

The worker's part comes from its heartbeat row. Shows states, never internals (no URLs, no exception texts).
"""

from __future__ import annotations

from datetime import UTC, datetime

from litestar import Response, get
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from sqlalchemy import select

from control_api.db import Database
from control_api.errors import DatabaseUnavailable
from control_api.routes.common import Db, Relay
from control_api.routes.workers import read_workers
from shared.api import DependencyHealth, Health, WorkerHealth
from shared.heartbeat import WorkerHeartbeat
from shared.schema import WorkerHeartbeatRow


async def worker_health(db: Database, stale_after: float) -> WorkerHealth:
    """The freshest worker heartbeat, and every member of the cluster: stale past `stale_after` s; degraded
    if a live worker reports a wanted socket down."""
    try:
        async with db.transaction() as session:
            row = (
                await session.scalars(
                    select(WorkerHeartbeatRow).order_by(WorkerHeartbeatRow.updated_at.desc()).limit(1)
                )
            ).first()
            cluster = await read_workers(session, with_topics=False)
    except DatabaseUnavailable:
        return WorkerHealth(status="unknown", detail="the database is unavailable")
    if row is None:
        return WorkerHealth(status="unknown", detail="no worker has reported yet")
    age = (datetime.now(UTC) - row.updated_at).total_seconds()
    heartbeat = WorkerHeartbeat.from_json(row.state)
    unwell = [m.worker_id for m in cluster.items if m.alive and m.healthy is False]
    if age > stale_after:
        status, detail = "stale", f"no heartbeat for {age:.0f}s"
    elif not heartbeat.healthy or unwell:
        status, detail = "degraded", "a wanted Bybit socket is down"
        if unwell:
            detail += f" (on {', '.join(unwell)})"
    else:
        status, detail = "up", None
    return WorkerHealth(
        status=status,
        detail=detail,
        worker_id=row.worker_id,
        heartbeat_age_s=round(age, 1),
        sockets=heartbeat.sockets,
        publisher=heartbeat.publisher,
        members=cluster.items,
        private_holder=cluster.private_holder,
        unowned_topics=cluster.unowned_count,
    )


@get(
    "/health",
    summary="Health of the gateway and its dependencies",
    description="200 when healthy; 503 with the same body when a dependency is down or the worker is unwell.",
    responses={503: ResponseSpec(data_container=Health, description="A dependency is down.")},
    tags=["health"],
)
async def health(db: Db, relay: Relay, state: State) -> Response[Health]:
    database_up = await db.ping()
    rabbitmq_up = relay.connected
    worker = await worker_health(db, state.worker_stale_after) if database_up else WorkerHealth(status="unknown")
    healthy = database_up and rabbitmq_up and worker.status in ("up", "unknown")
    body = Health(
        status="ok" if healthy else "degraded",
        database=DependencyHealth(status="up" if database_up else "down"),
        rabbitmq=DependencyHealth(status="up" if rabbitmq_up else "down"),
        worker=worker,
        outbox_pending=await relay.pending() if database_up else None,
    )
    return Response(body, status_code=HTTP_200_OK if healthy else HTTP_503_SERVICE_UNAVAILABLE)
