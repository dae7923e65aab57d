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
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy import Select, func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from control_api.errors import BadRequest, NotFound
from control_api.notices import record_change
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
        description="201 with the new subscription, or 200 with the live one if the service already has it.",
        responses={
            HTTP_200_OK: ResponseSpec(data_container=Subscription, description="The service already had it."),
            **error_responses(400, 401, 429, 503),
        },
    )
    async def create(
        self, request: Request[Any, Any, Any], data: JSONBody[SubscriptionCreate], db: Db, relay: Relay
    ) -> Response[Subscription]:
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
        async with db.transaction() as session:
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
            if created is None:
                existing = (await session.scalars(select(SubscriptionRow).where(*live_key))).one()
                return Response(subscription_from_row(existing), status_code=HTTP_200_OK)
            await record_change(session, [change_of(created, ChangeAction.CREATED)], trace_id_of(request))
        relay.wake()
        return Response(subscription_from_row(created), status_code=HTTP_201_CREATED)

    @get(
        "/",
        summary="List subscriptions",
        responses=error_responses(400, 401, 503),
    )
    async def list_subscriptions(
        self,
        db: Db,
        requesting_service: FromQuery[str | None] = None,
        channel_type: FromQuery[ChannelType | None] = None,
        symbol: FromQuery[str | None] = None,
        status: FromQuery[SubscriptionStatus | None] = None,
        is_active: FromQuery[bool | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 100,
        offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
    ) -> SubscriptionPage:
        query: Select[Any] = select(SubscriptionRow)
        if requesting_service is not None:
            query = query.where(SubscriptionRow.requesting_service == requesting_service)
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
        responses=error_responses(400, 401, 404, 503),
    )
    async def get_subscription(self, subscription_id: FromPath[uuid.UUID], db: Db) -> Subscription:
        async with db.transaction() as session:
            row = await session.get(SubscriptionRow, subscription_id)
        if row is None:
            raise NotFound(f"no subscription {subscription_id}")
        return subscription_from_row(row)

    @delete(
        "/{subscription_id:uuid}",
        status_code=HTTP_200_OK,
        summary="Cancel one subscription",
        description="200 with the cancelled row; cancelling it again answers 200 with the same row.",
        responses=error_responses(400, 401, 404, 429, 503),
    )
    async def cancel(
        self, request: Request[Any, Any, Any], subscription_id: FromPath[uuid.UUID], db: Db, relay: Relay
    ) -> Subscription:
        async with db.transaction() as session:
            row = (await session.scalars(_cancel(SubscriptionRow.id == subscription_id))).one_or_none()
            if row is None:
                existing = await session.get(SubscriptionRow, subscription_id)
                if existing is None:
                    raise NotFound(f"no subscription {subscription_id}")
                return subscription_from_row(existing)
            await record_change(session, [change_of(row, ChangeAction.CANCELLED)], trace_id_of(request))
        relay.wake()
        return subscription_from_row(row)

    @delete(
        "/by-service/{service:str}",
        status_code=HTTP_200_OK,
        summary="Cancel every live subscription of a service",
        responses=error_responses(400, 401, 429, 503),
    )
    async def cancel_service(
        self, request: Request[Any, Any, Any], service: FromPath[ServiceName], db: Db, relay: Relay
    ) -> CancelledCount:
        async with db.transaction() as session:
            rows = (await session.scalars(_cancel(SubscriptionRow.requesting_service == service))).all()
            if rows:
                await record_change(
                    session, [change_of(row, ChangeAction.CANCELLED) for row in rows], trace_id_of(request)
                )
        if rows:
            relay.wake()
        return CancelledCount(cancelled=len(rows))
