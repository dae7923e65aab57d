"""What the route modules share: error responses for the OpenAPI document and request plumbing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Request
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from control_api.db import Database
from control_api.notices import OutboxRelay
from control_api.tracing import new_trace_id
from shared.api import ErrorBody

MAX_PAGE = 500
# Query integers end up as PostgreSQL bigints: bound them so no input can overflow into a 500.
MAX_OFFSET = 1_000_000_000
MAX_EPOCH_MS = 10**15

# Injected by name from the app's dependencies (see create_app).
Db = NamedDependency[Database]
Relay = NamedDependency[OutboxRelay]


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    descriptions = {
        400: "The request is invalid; `error.message` names the field.",
        401: "The X-API-Key header is missing or wrong.",
        403: "The key's scope does not cover this service or route (see README, Security).",
        404: "No such resource.",
        409: "The resource is not in a state that allows this (e.g. a snapshot of a subscription not yet live).",
        429: "Too many writes for this API key; retry after the Retry-After header's seconds.",
        503: "PostgreSQL is unreachable or did not answer in time.",
    }
    return {
        code: ResponseSpec(data_container=ErrorBody, description=descriptions[code], generate_examples=False)
        for code in codes
    }


def trace_id_of(request: Request[Any, Any, Any]) -> str:
    trace_id = request.scope.get("state", {}).get("trace_id")
    return trace_id if isinstance(trace_id, str) else new_trace_id()


async def paginate(
    session: AsyncSession,
    query: Select[Any],
    order_by: Sequence[InstrumentedAttribute[Any] | ColumnElement[Any]],
    limit: int,
    offset: int,
) -> tuple[int, Sequence[Any]]:
    """The total number of rows `query` matches, and one page of them in a stable order."""
    total: int = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = (await session.scalars(query.order_by(*order_by).limit(limit).offset(offset))).all()
    return total, rows
