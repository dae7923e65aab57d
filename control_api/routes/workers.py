"""`/api/v1/workers`: the stream workers of the cluster, their leases and the topics each one serves.

Read from the membership rows the workers renew (PostgreSQL's clock) and their heartbeats. The topics are
what each worker reports it is assigned, so a topic nobody reports is visible while a handover is running.
"""

from __future__ import annotations

from datetime import datetime

from litestar import Controller, get
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from control_api.routes.common import Db, error_responses
from shared.api import WorkerMember, Workers
from shared.heartbeat import WorkerHeartbeat
from shared.schema import (
    PRIVATE_LEASE,
    LeaseRow,
    SubscriptionRow,
    WorkerHeartbeatRow,
    WorkerMemberRow,
    member_topics,
)

UNOWNED_LISTED = 100


async def read_workers(session: AsyncSession, *, with_topics: bool) -> Workers:
    """Every member row with its lease and heartbeat, the private holder and the unowned wanted topics."""
    now: datetime = (await session.execute(select(func.now()))).scalar_one()
    rows = (
        await session.execute(
            select(WorkerMemberRow, WorkerHeartbeatRow.updated_at, WorkerHeartbeatRow.state)
            .outerjoin(WorkerHeartbeatRow, WorkerHeartbeatRow.worker_id == WorkerMemberRow.worker_id)
            .order_by(WorkerMemberRow.worker_id)
        )
    ).all()
    lease = await session.get(LeaseRow, PRIVATE_LEASE)
    holder = lease.holder if lease is not None and lease.expires_at > now else None
    wanted = (
        await session.execute(
            select(SubscriptionRow.endpoint, SubscriptionRow.topic).where(SubscriptionRow.is_active).distinct()
        )
    ).all()
    members: list[WorkerMember] = []
    owned: set[str] = set()
    for member, heartbeat_at, heartbeat in rows:
        alive = member.lease_expires_at > now
        topics = member_topics(member.topics)
        if alive:
            owned.update(f"{socket}:{topic}" for socket, listed in topics.items() for topic in listed)
        members.append(
            WorkerMember(
                worker_id=member.worker_id,
                alive=alive,
                lease_age_s=round((now - member.renewed_at).total_seconds(), 3),
                lease_expires_in_s=round((member.lease_expires_at - now).total_seconds(), 3),
                joined_at=member.joined_at,
                holds_private=alive and holder == member.worker_id,
                topic_count=sum(len(listed) for listed in topics.values()),
                topics=topics if with_topics else None,
                heartbeat_age_s=round((now - heartbeat_at).total_seconds(), 3) if heartbeat_at else None,
                healthy=WorkerHeartbeat.from_json(heartbeat).healthy if heartbeat is not None else None,
            )
        )
    unowned = sorted({f"{endpoint}:{topic}" for endpoint, topic in wanted} - owned)
    return Workers(
        items=members,
        live=sum(m.alive for m in members),
        private_holder=holder,
        unowned_topics=unowned[:UNOWNED_LISTED],
        unowned_count=len(unowned),
    )


class WorkerController(Controller):
    path = "/workers"
    tags = ["workers"]

    @get(
        "/",
        summary="The stream workers, their leases and the topics each serves",
        description="Members come from the leases the workers renew in PostgreSQL; a worker whose lease "
        "expired is dead (`alive: false`) and its topics have moved to the live ones.",
        responses=error_responses(401, 503),
    )
    async def list_workers(self, db: Db) -> Workers:
        async with db.transaction() as session:
            return await read_workers(session, with_topics=True)
