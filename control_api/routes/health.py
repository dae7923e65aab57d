"""`GET /health`: PostgreSQL, RabbitMQ and the worker, for load balancers and people. No key needed.

Shows states, never internals (no URLs, no exception texts).
"""

from __future__ import annotations

from litestar import Response, get
from litestar.openapi import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from control_api.routes.common import Db, Relay
from shared.api import DependencyHealth, Health, WorkerHealth


@get(
    "/health",
    summary="Health of the gateway and its dependencies",
    description="200 when healthy; 503 with the same body when a dependency is down.",
    responses={503: ResponseSpec(data_container=Health, description="A dependency is down.")},
    tags=["health"],
)
async def health(db: Db, relay: Relay) -> Response[Health]:
    database_up = await db.ping()
    rabbitmq_up = relay.connected
    body = Health(
        status="ok" if database_up and rabbitmq_up else "degraded",
        database=DependencyHealth(status="up" if database_up else "down"),
        rabbitmq=DependencyHealth(status="up" if rabbitmq_up else "down"),
        # The worker reports its state through PostgreSQL once the stream worker exists.
        worker=WorkerHealth(status="unknown"),
        outbox_pending=await relay.pending() if database_up else None,
    )
    status = HTTP_200_OK if body.status == "ok" else HTTP_503_SERVICE_UNAVAILABLE
    return Response(body, status_code=status)
