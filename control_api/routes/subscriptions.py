"""`/api/v1/subscriptions`: services declare which Bybit channels they want.

Each write changes the desired set in PostgreSQL, bumps its revision and queues a change notice in the same
transaction; the relay is woken after the commit.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED
from sqlalchemy import Select, func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from control_api.audit import AuditAction, Caller, audited
from control_api.errors import BadRequest, Conflict, NotFound
from control_api.notices import record_change, record_snapshot_request
from control_api.routes.common import MAX_OFFSET, MAX_PAGE, Db, Relay, error_responses, paginate, trace_id_of
from shared.api import CancelledCount, ServiceName, Subscription, SubscriptionCreate, SubscriptionPage
from shared.commands import ChangeAction, SubscriptionChange
from shared.enums import Category, ChannelType, Endpoint, SubscriptionStatus
from shared.schema import SubscriptionRow
from shared.topics import TopicError, topic_for


def subscription_from_row(row: SubscriptionRow) -> Subscription:
    return Subscription(
        id=row.id,
        channel_type=ChannelType(row.channel_type),
        category=Category(row.category) if row.category else None,
        symbol=row.symbol,
        params=dict(row.params),
        topic=row.topic,
        endpoint=Endpoint(row.endpoint),
        requesting_service=row.requesting_service,
        status=SubscriptionStatus(row.status),
        is_active=row.is_active,
        created_at=row.created_at,
        updated_at=row.updated_at,
        cancelled_at=row.cancelled_at,
        last_event_at=row.last_event_at,
        last_error=row.last_error,
        stale_since=row.stale_since,
    )


def change_of(row: SubscriptionRow, action: ChangeAction) -> SubscriptionChange:
    return SubscriptionChange(
        action=action,
        subscription_id=row.id,
        requesting_service=row.requesting_service,
        channel_type=ChannelType(row.channel_type),
        category=Category(row.category) if row.category else None,
        symbol=row.symbol,
        endpoint=Endpoint(row.endpoint),
        topic=row.topic,
    )


def _cancel(*conditions: Any) -> Any:
    return (
        update(SubscriptionRow)
        .where(SubscriptionRow.is_active, *conditions)
        .values(
            is_active=False,
            status=SubscriptionStatus.CANCELLED.value,
            cancelled_at=func.now(),
            updated_at=func.now(),
        )
        .returning(SubscriptionRow)
    )


class SubscriptionController(Controller):
    path = "/subscriptions"
    tags = ["subscriptions"]

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Subscribe a service to a Bybit channel",
        description="201 with the new subscription, or 200 with the live one if the service already has it. "
        "The key must be allowed to write `requesting_service`.",
        responses={
            HTTP_200_OK: ResponseSpec(data_container=Subscription, description="The service already had it."),
            **error_responses(400, 401, 403, 429, 503),
        },
        opt=audited(AuditAction.CREATE),
    )
    async def create(
        self, request: Request[Any, Any, Any], data: JSONBody[SubscriptionCreate], access: Caller, relay: Relay
    ) -> Response[Subscription]:
        async with access.write(service=data.requesting_service) as write:  # 403 before any other answer
            try:
                spec = topic_for(
                    data.channel_type,
                    symbol=data.symbol,
                    category=data.category,
                    depth=data.depth,
                    interval=data.interval,
                )
            except TopicError as error:
                raise BadRequest(
                    f"{error.field}: {error.message}", {"field": error.field, "allowed": error.allowed}
                ) from error
            live_key = (
                SubscriptionRow.requesting_service == data.requesting_service,
                SubscriptionRow.endpoint == spec.endpoint.value,
                SubscriptionRow.topic == spec.topic,
                SubscriptionRow.is_active,
            )
            session = write.session
            # ON CONFLICT against the partial unique index makes 20 concurrent identical POSTs create one row:
            # the losers wait for the winner's commit, then find its row.
            created = (
                await session.scalars(
                    insert(SubscriptionRow)
                    .values(
                        id=uuid.uuid4(),
                        channel_type=spec.channel_type.value,
                        category=spec.category.value if spec.category else None,
                        symbol=spec.symbol,
                        params=spec.params,
                        topic=spec.topic,
                        endpoint=spec.endpoint.value,
                        requesting_service=data.requesting_service,
                    )
                    .on_conflict_do_nothing(
                        index_elements=["requesting_service", "endpoint", "topic"],
                        index_where=text("is_active"),
                    )
                    .returning(SubscriptionRow)
                )
            ).one_or_none()
            target = {"endpoint": spec.endpoint.value, "topic": spec.topic}
            if created is None:
                existing = (await session.scalars(select(SubscriptionRow).where(*live_key))).one()
                write.done("existing", HTTP_200_OK, existing.id, **target)
                return Response(subscription_from_row(existing), status_code=HTTP_200_OK)
            await record_change(session, [change_of(created, ChangeAction.CREATED)], trace_id_of(request))
            write.done("created", HTTP_201_CREATED, created.id, **target)
        relay.wake()
        return Response(subscription_from_row(created), status_code=HTTP_201_CREATED)

    @get(
        "/",
        summary="List subscriptions",
        description="Only the services the key may read are listed; filtering by another service is a 403.",
        responses=error_responses(400, 401, 403, 503),
    )
    async def list_subscriptions(
        self,
        db: Db,
        access: Caller,
        requesting_service: FromQuery[str | None] = None,
        channel_type: FromQuery[ChannelType | None] = None,
        symbol: FromQuery[str | None] = None,
        status: FromQuery[SubscriptionStatus | None] = None,
        is_active: FromQuery[bool | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 100,
        offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
    ) -> SubscriptionPage:
        query: Select[Any] = select(SubscriptionRow)
        visible = access.scope.visible_services
        if requesting_service is not None:
            access.scope.require_read(requesting_service)
            query = query.where(SubscriptionRow.requesting_service == requesting_service)
        elif visible is not None:
            query = query.where(SubscriptionRow.requesting_service.in_(sorted(visible)))
        if channel_type is not None:
            query = query.where(SubscriptionRow.channel_type == channel_type.value)
        if symbol is not None:
            query = query.where(SubscriptionRow.symbol == symbol.strip().upper())
        if status is not None:
            query = query.where(SubscriptionRow.status == status.value)
        if is_active is not None:
            query = query.where(SubscriptionRow.is_active == is_active)
        async with db.transaction() as session:
            order = (SubscriptionRow.created_at, SubscriptionRow.id)
            total, rows = await paginate(session, query, order, limit, offset)
        return SubscriptionPage(
            items=[subscription_from_row(row) for row in rows], total=total, limit=limit, offset=offset
        )

    @get(
        "/{subscription_id:uuid}",
        summary="Get one subscription",
        responses=error_responses(400, 401, 403, 404, 503),
    )
    async def get_subscription(self, subscription_id: FromPath[uuid.UUID], db: Db, access: Caller) -> Subscription:
        async with db.transaction() as session:
            row = await session.get(SubscriptionRow, subscription_id)
        if row is None:
            raise NotFound(f"no subscription {subscription_id}")
        access.scope.require_read(row.requesting_service)
        return subscription_from_row(row)

    @post(
        "/{subscription_id:uuid}/snapshot",
        status_code=HTTP_202_ACCEPTED,
        summary="Send a subscription's current state to its service's queue",
        description=(
            "202 with the subscription: the worker streaming its topic publishes the current state (a whole "
            "order book, the merged ticker, the open candle, or open orders / positions / wallet over REST) to "
            "this service's queue only, flagged `snapshot: true`, before that queue's next delta. Call it when "
            "your copy broke (a `u` gap, a checksum mismatch, a restart). 409 while the subscription is not live. "
            "The key must be allowed to write the subscription's service."
        ),
        responses=error_responses(400, 401, 403, 404, 409, 429, 503),
        opt=audited(AuditAction.SNAPSHOT),
    )
    async def snapshot(
        self, request: Request[Any, Any, Any], subscription_id: FromPath[uuid.UUID], access: Caller, relay: Relay
    ) -> Response[Subscription]:
        async with access.write(subscription_id=subscription_id) as write:  # 404, then 403 before anything else
            row = write.row
            if not row.is_active or row.status != SubscriptionStatus.ACTIVE.value:
                raise Conflict(
                    f"subscription {subscription_id} is {row.status}: only an active subscription has state to send",
                    {"status": row.status},
                )
            await record_snapshot_request(write.session, row, trace_id_of(request))
            write.done("requested", HTTP_202_ACCEPTED)
        relay.wake()
        return Response(subscription_from_row(row), status_code=HTTP_202_ACCEPTED)

    @delete(
        "/{subscription_id:uuid}",
        status_code=HTTP_200_OK,
        summary="Cancel one subscription",
        description="200 with the cancelled row; cancelling it again answers 200 with the same row.",
        responses=error_responses(400, 401, 403, 404, 429, 503),
        opt=audited(AuditAction.CANCEL),
    )
    async def cancel(
        self, request: Request[Any, Any, Any], subscription_id: FromPath[uuid.UUID], access: Caller, relay: Relay
    ) -> Subscription:
        async with access.write(subscription_id=subscription_id) as write:
            if not write.row.is_active:
                write.done("unchanged")
                return subscription_from_row(write.row)
            row = (await write.session.scalars(_cancel(SubscriptionRow.id == subscription_id))).one()
            await record_change(write.session, [change_of(row, ChangeAction.CANCELLED)], trace_id_of(request))
            write.done("cancelled")
        relay.wake()
        return subscription_from_row(row)

    @delete(
        "/by-service/{service:str}",
        status_code=HTTP_200_OK,
        summary="Cancel every live subscription of a service",
        responses=error_responses(400, 401, 403, 429, 503),
        opt=audited(AuditAction.CANCEL_SERVICE),
    )
    async def cancel_service(
        self, request: Request[Any, Any, Any], service: FromPath[ServiceName], access: Caller, relay: Relay
    ) -> CancelledCount:
        async with access.write(service=service) as write:
            rows = (await write.session.scalars(_cancel(SubscriptionRow.requesting_service == service))).all()
            if rows:
                changes = [change_of(row, ChangeAction.CANCELLED) for row in rows]
                await record_change(write.session, changes, trace_id_of(request))
            write.done("cancelled" if rows else "unchanged", cancelled=len(rows))
        if rows:
            relay.wake()
        return CancelledCount(cancelled=len(rows))
