"""`GET /api/v1/audit`: the audit trail of write requests, newest first, for admin keys only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, get
from litestar.params import FromQuery, QueryParameter
from sqlalchemy import Select, select

from control_api.audit import AuditAction, Caller
from control_api.routes.common import MAX_OFFSET, MAX_PAGE, Db, error_responses, paginate
from shared.api import AuditEntry, AuditPage
from shared.schema import AuditRow

MAX_FILTER = 64
MAX_AUDIT_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the last instant a datetime can hold


def entry_from_row(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        at=row.at,
        key_id=row.key_id,
        role=row.role,
        action=row.action,
        service=row.service,
        subscription_id=row.subscription_id,
        trace_id=row.trace_id,
        result=row.result,
        status=row.status,
        detail=dict(row.detail),
    )


def _at(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)


Text = Annotated[str | None, QueryParameter(max_length=MAX_FILTER)]


class AuditController(Controller):
    path = "/audit"
    tags = ["audit"]

    @get(
        "/",
        summary="The audit trail of write requests (admin keys only), newest first",
        description="One entry per create, cancel and cancel-by-service request, whatever its result "
        "(including refused, invalid and rate-limited ones). `start_ts` / `end_ts` are UTC epoch ms.",
        responses=error_responses(400, 401, 403, 503),
    )
    async def list_audit(
        self,
        db: Db,
        access: Caller,
        key_id: Text = None,
        service: Text = None,
        action: FromQuery[AuditAction | None] = None,
        result: Text = None,
        subscription_id: FromQuery[uuid.UUID | None] = None,
        trace_id: Text = None,
        start_ts: Annotated[
            int | None, QueryParameter(ge=0, le=MAX_AUDIT_MS, description="inclusive, UTC epoch ms")
        ] = None,
        end_ts: Annotated[
            int | None, QueryParameter(ge=0, le=MAX_AUDIT_MS, description="exclusive, UTC epoch ms")
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 100,
        offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
    ) -> AuditPage:
        access.scope.require_admin()
        query: Select[Any] = select(AuditRow)
        for column, value in (
            (AuditRow.key_id, key_id),
            (AuditRow.service, service),
            (AuditRow.result, result),
            (AuditRow.trace_id, trace_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if action is not None:
            query = query.where(AuditRow.action == action.value)
        if subscription_id is not None:
            query = query.where(AuditRow.subscription_id == subscription_id)
        if start_ts is not None:
            query = query.where(AuditRow.at >= _at(start_ts))
        if end_ts is not None:
            query = query.where(AuditRow.at < _at(end_ts))
        async with db.transaction() as session:
            total, rows = await paginate(session, query, (AuditRow.id.desc(),), limit, offset)
        return AuditPage(items=[entry_from_row(row) for row in rows], total=total, limit=limit, offset=offset)
