"""The audit trail and the one call every write route makes.

A write route is marked `opt=audited(AuditAction.X)` and does its work inside `access.write(...)`, which checks
the caller's scope, opens the transaction and records the outcome in that same transaction, so a change and
its audit row commit together or not at all. A request refused anywhere else (rate limit, a body that does not
parse, 403, 404, 400) is recorded by `record_failed_write`, an after-exception hook, in a transaction of its
own: there is no change to share one with. A request without a valid key is not a write by anyone: it is
answered 401 and logged, not recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Any

from litestar import Request
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE
from litestar.types import Scope as AsgiScope
from loguru import logger
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from control_api.db import Database
from control_api.errors import ApiError, DatabaseUnavailable, NotFound
from control_api.security import SCOPE_STATE, Scope, scope_of_request
from control_api.tracing import new_trace_id
from shared.schema import AuditRow, SubscriptionRow

AUDIT_OPT = "audit_action"
TARGET_STATE = "audit_target"  # (service, subscription id) of the write, once known, for the failure record
_RESULTS_BY_STATUS = {
    400: "invalid",
    403: "forbidden",
    404: "not_found",
    429: "rate_limited",
    503: "unavailable",
}


class AuditAction(StrEnum):
    CREATE = "create"
    CANCEL = "cancel"
    CANCEL_SERVICE = "cancel_service"
    SNAPSHOT = "snapshot"


def audited(action: AuditAction) -> dict[str, Any]:
    """The route option that makes a handler a write: every request to it leaves one audit row."""
    return {AUDIT_OPT: action}


def _trace_id(state: MutableMapping[str, Any]) -> str:
    trace_id = state.get("trace_id")
    return trace_id if isinstance(trace_id, str) else new_trace_id()


class AuditedWrite:
    """One write in progress: its transaction, its target and the result to record when it commits."""

    def __init__(self, session: AsyncSession, scope: Scope, state: MutableMapping[str, Any]) -> None:
        self.session = session
        self.scope = scope
        self._state = state
        self.service: str | None = None
        self.subscription_id: uuid.UUID | None = None
        self._row: SubscriptionRow | None = None
        self.result = "ok"
        self.status = 200
        self.detail: dict[str, Any] = {}

    @property
    def row(self) -> SubscriptionRow:
        """The subscription named by `write(subscription_id=...)`, locked for this transaction."""
        if self._row is None:
            raise TypeError("write() was not given a subscription_id")
        return self._row

    def _target(self) -> None:
        self._state[TARGET_STATE] = (self.service, self.subscription_id)

    def allow(self, service: str) -> None:
        """The write touches `service`'s subscriptions: Forbidden (recorded) unless the key may change them."""
        self.service = service
        self._target()
        self.scope.require_write(service)

    async def load(self, subscription_id: uuid.UUID) -> None:
        self.subscription_id = subscription_id
        self._target()
        self._row = (
            await self.session.scalars(
                select(SubscriptionRow).where(SubscriptionRow.id == subscription_id).with_for_update()
            )
        ).one_or_none()
        if self._row is None:
            raise NotFound(f"no subscription {subscription_id}")
        self.allow(self._row.requesting_service)

    def done(self, result: str, status: int = 200, subscription_id: uuid.UUID | None = None, **detail: Any) -> None:
        """What to record when the transaction commits."""
        self.result, self.status = result, status
        if subscription_id is not None:
            self.subscription_id = subscription_id
        self.detail |= detail


class Access:
    """Per request: the caller's scope, and `write()`, the one call for a change."""

    def __init__(self, scope: Scope, db: Database, request: Request[Any, Any, Any]) -> None:
        self.scope = scope
        self._db = db
        self._request = request

    @asynccontextmanager
    async def write(
        self, *, service: str | None = None, subscription_id: uuid.UUID | None = None
    ) -> AsyncIterator[AuditedWrite]:
        """One transaction for a change to `service`'s subscriptions, or to the subscription `subscription_id`
        (loaded and locked as `write.row`: 404 if missing), refused with a 403 unless the key may write that
        service; the audit row is added to the same transaction on success, and a failure is recorded by the
        after-exception hook. The route must be marked `opt=audited(...)`, which names the action:

            @post("/{subscription_id:uuid}/snapshot", opt=audited(AuditAction.SNAPSHOT))
            async def snapshot(self, subscription_id: FromPath[uuid.UUID], access: Caller) -> ...:
                async with access.write(subscription_id=subscription_id) as write:
                    ...  # write.row, write.session
                    write.done("requested")
        """
        action = self._request.route_handler.opt.get(AUDIT_OPT)
        if not isinstance(action, AuditAction):
            raise TypeError(f"{self._request.route_handler} writes without opt=audited(...)")
        state = self._request.scope.setdefault("state", {})
        async with self._db.transaction() as session:
            write = AuditedWrite(session, self.scope, state)
            if service is not None:
                write.allow(service)
            if subscription_id is not None:
                await write.load(subscription_id)
            yield write
            session.add(
                AuditRow(
                    key_id=self.scope.key_id,
                    role=self.scope.role.value,
                    action=action.value,
                    # The column holds 64 characters; a path can carry a longer name (found by schemathesis).
                    service=write.service[:64] if write.service else None,
                    subscription_id=write.subscription_id,
                    trace_id=_trace_id(state),
                    result=write.result,
                    status=write.status,
                    detail=write.detail,
                )
            )
        logger.bind(
            key_id=self.scope.key_id,
            action=action.value,
            service=write.service,
            subscription_id=str(write.subscription_id) if write.subscription_id else None,
            result=write.result,
        ).info("write")


Caller = NamedDependency[Access]  # injected by name as `access` (see create_app)


def provide_access(request: Request[Any, Any, Any]) -> Access:
    return Access(scope_of_request(request), request.app.state.database, request)


def _outcome(exc: Exception) -> tuple[int, str]:
    """The status the caller gets (as the error handlers answer it) and the error code."""
    if isinstance(exc, ApiError):
        return exc.status_code, exc.code
    if isinstance(exc, ValidationException):
        return 400, "validation_error"
    if isinstance(exc, HTTPException):
        if exc.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
            return 400, "body_too_large"
        return exc.status_code, "malformed_request" if exc.status_code == 400 else "http_error"
    return 500, "internal_error"


async def record_failed_write(exc: Exception, scope: AsgiScope) -> None:
    """After-exception hook: a write request that failed leaves an audit row of its own."""
    handler = scope.get("route_handler")
    action = getattr(handler, "opt", {}).get(AUDIT_OPT)
    state: MutableMapping[str, Any] = scope.get("state", {})
    caller = state.get(SCOPE_STATE)
    if not isinstance(action, AuditAction) or not isinstance(caller, Scope):
        return
    status, code = _outcome(exc)
    service, subscription_id = state.get(TARGET_STATE) or (None, None)
    path_params = scope.get("path_params") or {}
    if service is None and isinstance(path_params.get("service"), str):
        service = path_params["service"]
    if subscription_id is None and isinstance(path_params.get("subscription_id"), uuid.UUID):
        subscription_id = path_params["subscription_id"]
    result = _RESULTS_BY_STATUS.get(status, "error")
    row = AuditRow(
        key_id=caller.key_id,
        role=caller.role.value,
        action=action.value,
        service=service[:64] if service else None,
        subscription_id=subscription_id,
        trace_id=_trace_id(state),
        result=result,
        status=status,
        detail={"code": code},
    )
    log = logger.bind(key_id=caller.key_id, action=action.value, service=service, result=result, status=status)
    if isinstance(exc, DatabaseUnavailable):
        log.warning("write failed; not recorded: the database is unavailable")
        return
    db: Database = scope["litestar_app"].state.database
    try:
        async with db.transaction() as session:
            session.add(row)
    except DatabaseUnavailable:
        log.warning("write refused; its audit row could not be written: the database is unavailable")
        return
    log.info("write refused")
