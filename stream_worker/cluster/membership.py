"""Cluster membership and the private-stream lease, kept in PostgreSQL (no coordination service).

Each worker renews a lease row in `worker_members` every renew interval; a row whose lease has expired is a
dead worker. Every lease time is computed by PostgreSQL (`now()`), so the workers' clocks never matter.
The one authenticated Bybit stream of the cluster belongs to whoever holds the `private` row of `leases`:
a holder extends it on every renewal, anyone may take it once it has expired, and a worker that stops
releases it, so a graceful handover waits for no expiry. One renewal is one short transaction.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.schema import PRIVATE_LEASE, member_topics

# A dead member stays visible in /api/v1/workers for a while, then its row is removed.
FORGET_DEAD_AFTER = timedelta(hours=1)

_JOIN = text(
    """
    INSERT INTO worker_members AS m (worker_id, instance_id, joined_at, renewed_at, lease_expires_at, topics)
    VALUES (:worker_id, :instance_id, now(), now(), now() + CAST(:ttl AS interval),
            COALESCE(CAST(CAST(:topics AS text) AS jsonb), '{}'::jsonb))
    ON CONFLICT (worker_id) DO UPDATE SET
        instance_id = excluded.instance_id,
        joined_at = CASE WHEN m.instance_id = excluded.instance_id THEN m.joined_at ELSE now() END,
        renewed_at = now(),
        lease_expires_at = excluded.lease_expires_at,
        topics = CASE WHEN CAST(:topics AS text) IS NULL THEN m.topics ELSE excluded.topics END
    RETURNING (SELECT instance_id FROM worker_members WHERE worker_id = :worker_id) AS previous_instance
    """
)
# Only our own row or an expired one: a live row of another instance is a running twin (cluster/identity.py).
_CLAIM = text(
    """
    INSERT INTO worker_members AS m (worker_id, instance_id, joined_at, renewed_at, lease_expires_at, topics)
    VALUES (:worker_id, :instance_id, now(), now(), now() + CAST(:ttl AS interval), '{}'::jsonb)
    ON CONFLICT (worker_id) DO UPDATE SET
        instance_id = excluded.instance_id,
        joined_at = now(),
        renewed_at = now(),
        lease_expires_at = excluded.lease_expires_at,
        topics = '{}'::jsonb
    WHERE m.instance_id = excluded.instance_id OR m.lease_expires_at <= now()
    RETURNING instance_id
    """
)
_HOLDER = text(
    """
    SELECT worker_id, instance_id,
           EXTRACT(EPOCH FROM (now() - renewed_at))::float8 AS lease_age_s,
           EXTRACT(EPOCH FROM (lease_expires_at - now()))::float8 AS expires_in_s
    FROM worker_members WHERE worker_id = :worker_id
    """
)
_TAKE_PRIVATE = text(
    """
    INSERT INTO leases AS l (name, holder, instance_id, epoch, acquired_at, renewed_at, expires_at, last_frame_ms)
    VALUES (:name, :worker_id, :instance_id, 1, now(), now(), now() + CAST(:ttl AS interval), :last_frame_ms)
    ON CONFLICT (name) DO UPDATE SET
        holder = excluded.holder,
        instance_id = excluded.instance_id,
        epoch = l.epoch + CASE WHEN l.instance_id = excluded.instance_id THEN 0 ELSE 1 END,
        acquired_at = CASE WHEN l.instance_id = excluded.instance_id THEN l.acquired_at ELSE now() END,
        renewed_at = now(),
        expires_at = excluded.expires_at,
        -- a successor keeps its predecessor's last frame time until it has one of its own
        last_frame_ms = CASE WHEN l.instance_id = excluded.instance_id
                             THEN COALESCE(excluded.last_frame_ms, l.last_frame_ms) ELSE l.last_frame_ms END
    WHERE l.instance_id = excluded.instance_id OR l.expires_at <= now()
    """
)
_READ_PRIVATE = text(
    """
    SELECT holder, instance_id, epoch, last_frame_ms,
           EXTRACT(EPOCH FROM (expires_at - now()))::float8 AS expires_in_s
    FROM leases WHERE name = :name
    """
)
_MEMBERS = text(
    """
    SELECT worker_id, instance_id,
           EXTRACT(EPOCH FROM (now() - renewed_at))::float8 AS lease_age_s,
           EXTRACT(EPOCH FROM (lease_expires_at - now()))::float8 AS expires_in_s
    FROM worker_members ORDER BY worker_id
    """
)
_SERVED = text("SELECT worker_id, topics FROM worker_members WHERE lease_expires_at > now()")
_FORGET_DEAD = text("DELETE FROM worker_members WHERE lease_expires_at < now() - CAST(:forget_after AS interval)")
_LEAVE = text("DELETE FROM worker_members WHERE worker_id = :worker_id AND instance_id = :instance_id")
_RELEASE_PRIVATE = text(
    """
    UPDATE leases SET expires_at = now(), last_frame_ms = COALESCE(:last_frame_ms, last_frame_ms)
    WHERE name = :name AND instance_id = :instance_id
    """
)


class Member(msgspec.Struct, frozen=True, kw_only=True):
    worker_id: str
    instance_id: str
    lease_age_s: float  # since its last renewal, by the database's clock
    expires_in_s: float  # negative once expired

    @property
    def alive(self) -> bool:
        return self.expires_in_s > 0


class PrivateLease(msgspec.Struct, frozen=True, kw_only=True):
    holder: str
    instance_id: str
    epoch: int
    expires_in_s: float
    last_frame_ms: int | None


class ClusterView(msgspec.Struct, frozen=True, kw_only=True):
    """What one renewal saw: every member row, and who holds the private stream."""

    members: tuple[Member, ...]
    private: PrivateLease | None
    twin: str | None = None  # another live process's instance id found in our row: a duplicated worker id
    # What each live member reports it serves, as (socket, topic): read only when asked (during a handover).
    served: dict[str, frozenset[tuple[str, str]]] | None = None

    @property
    def live(self) -> frozenset[str]:
        return frozenset(m.worker_id for m in self.members if m.alive)

    def holds_private(self, instance_id: str) -> bool:
        lease = self.private
        return lease is not None and lease.instance_id == instance_id and lease.expires_in_s > 0


class MembershipStore:
    """Renew, read and leave; every call is one bounded transaction and raises DATABASE_ERRORS on an outage."""

    def __init__(self, engine: AsyncEngine, *, worker_id: str, instance_id: str, ttl: float, timeout: float) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.instance_id = instance_id
        self.ttl = timedelta(seconds=ttl)
        self.timeout = timeout

    def _ids(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "instance_id": self.instance_id}

    async def renew(
        self,
        *,
        topics: dict[str, list[str]] | None,
        want_private: bool,
        last_frame_ms: int | None,
        read_served: bool = False,
    ) -> ClusterView:
        """Extend our lease (writing `topics` when given), try to take or extend the private lease when we
        can serve it, and read the cluster as it now stands."""
        topics_json = msgspec.json.encode(topics).decode() if topics is not None else None
        async with asyncio.timeout(self.timeout), self.engine.begin() as connection:
            previous = (
                await connection.execute(_JOIN, {**self._ids(), "ttl": self.ttl, "topics": topics_json})
            ).scalar_one_or_none()
            if want_private:
                parameters = {**self._ids(), "name": PRIVATE_LEASE, "ttl": self.ttl, "last_frame_ms": last_frame_ms}
                await connection.execute(_TAKE_PRIVATE, parameters)
            await connection.execute(_FORGET_DEAD, {"forget_after": FORGET_DEAD_AFTER})
            lease_row = (await connection.execute(_READ_PRIVATE, {"name": PRIVATE_LEASE})).first()
            member_rows = (await connection.execute(_MEMBERS)).all()
            served_rows = (await connection.execute(_SERVED)).all() if read_served else None
        members = tuple(
            Member(
                worker_id=r.worker_id, instance_id=r.instance_id, lease_age_s=r.lease_age_s, expires_in_s=r.expires_in_s
            )
            for r in member_rows
        )
        lease = (
            PrivateLease(
                holder=lease_row.holder,
                instance_id=lease_row.instance_id,
                epoch=lease_row.epoch,
                expires_in_s=lease_row.expires_in_s,
                last_frame_ms=lease_row.last_frame_ms,
            )
            if lease_row is not None
            else None
        )
        twin = previous if previous is not None and previous != self.instance_id else None
        served = None
        if served_rows is not None:
            served = {row.worker_id: _pairs(member_topics(row.topics)) for row in served_rows}
        return ClusterView(members=members, private=lease, twin=twin, served=served)

    async def claim(self) -> Member | None:
        """Make our worker id's member row ours unless another instance holds a live lease on it; that
        holder, or None once the row is ours."""
        async with asyncio.timeout(self.timeout), self.engine.begin() as connection:
            claimed = (await connection.execute(_CLAIM, {**self._ids(), "ttl": self.ttl})).first()
            if claimed is not None:
                return None
            row = (await connection.execute(_HOLDER, {"worker_id": self.worker_id})).first()
        if row is None:
            return None  # deleted between the two statements: the next renewal inserts it
        return Member(
            worker_id=row.worker_id,
            instance_id=row.instance_id,
            lease_age_s=row.lease_age_s,
            expires_in_s=row.expires_in_s,
        )

    async def leave(self, *, last_frame_ms: int | None) -> None:
        """Remove our member row and release the private lease if we hold it: the others take over at their
        next renewal instead of waiting for our lease to expire."""
        async with asyncio.timeout(self.timeout), self.engine.begin() as connection:
            await connection.execute(_LEAVE, self._ids())
            parameters = {**self._ids(), "name": PRIVATE_LEASE, "last_frame_ms": last_frame_ms}
            await connection.execute(_RELEASE_PRIVATE, parameters)


def _pairs(topics: dict[str, list[str]]) -> frozenset[tuple[str, str]]:
    return frozenset((socket, topic) for socket, listed in topics.items() for topic in listed)
