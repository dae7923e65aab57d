"""Membership leases and the private-stream lease in a real PostgreSQL, timed by the database's clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from stream_worker.cluster.membership import MembershipStore
from stream_worker.state.persistence import create_engine
from tests.support.waiting import wait_until


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, 5.0)
    yield engine
    await engine.dispose()


def store(engine: AsyncEngine, worker_id: str, instance_id: str | None = None, ttl: float = 5.0) -> MembershipStore:
    return MembershipStore(engine, worker_id=worker_id, instance_id=instance_id or f"{worker_id}-i", ttl=ttl, timeout=5)


async def test_renewing_workers_see_each_other_live(engine: AsyncEngine) -> None:
    first, second = store(engine, "w1"), store(engine, "w2")
    await first.renew(topics=None, want_private=False, last_frame_ms=None)
    view = await second.renew(topics=None, want_private=False, last_frame_ms=None)
    assert view.live == {"w1", "w2"}
    assert all(0 <= m.lease_age_s < 5 and m.expires_in_s > 0 for m in view.members)


async def test_a_worker_that_stops_renewing_is_dead_once_its_lease_expires(engine: AsyncEngine) -> None:
    silent, watcher = store(engine, "w1", ttl=1.0), store(engine, "w2")
    await silent.renew(topics=None, want_private=False, last_frame_ms=None)

    async def dead() -> bool:
        view = await watcher.renew(topics=None, want_private=False, last_frame_ms=None)
        return view.live == {"w2"} and any(m.worker_id == "w1" and not m.alive for m in view.members)

    await wait_until(dead, timeout=10, interval=0.1, what="w1's lease to expire")


async def test_only_one_worker_holds_the_private_lease(engine: AsyncEngine) -> None:
    first, second = store(engine, "w1"), store(engine, "w2")
    view1 = await first.renew(topics=None, want_private=True, last_frame_ms=None)
    view2 = await second.renew(topics=None, want_private=True, last_frame_ms=None)
    view1 = await first.renew(topics=None, want_private=True, last_frame_ms=1000)
    assert view1.holds_private(first.instance_id)
    assert not view1.holds_private(second.instance_id)
    assert not view2.holds_private(second.instance_id)
    assert view2.private is not None
    assert view2.private.holder == "w1"
    assert view2.private.epoch == 1


async def test_the_private_lease_moves_at_once_when_its_holder_leaves_with_its_last_frame_time(
    engine: AsyncEngine,
) -> None:
    first, second = store(engine, "w1"), store(engine, "w2")
    await first.renew(topics=None, want_private=True, last_frame_ms=None)
    await first.leave(last_frame_ms=1_700_000_000_123)
    view = await second.renew(topics=None, want_private=True, last_frame_ms=None)
    assert view.holds_private(second.instance_id)
    assert view.private is not None
    assert view.private.epoch == 2
    assert view.private.last_frame_ms == 1_700_000_000_123  # the successor re-syncs from here
    assert view.live == {"w2"}


async def test_an_expired_private_lease_is_taken_over(engine: AsyncEngine) -> None:
    holder, standby = store(engine, "w1", ttl=1.0), store(engine, "w2")
    await holder.renew(topics=None, want_private=True, last_frame_ms=42)

    async def taken() -> bool:
        return (await standby.renew(topics=None, want_private=True, last_frame_ms=None)).holds_private("w2-i")

    await wait_until(taken, timeout=10, interval=0.1, what="the standby to take the expired lease")
    view = await holder.renew(topics=None, want_private=True, last_frame_ms=43)
    assert not view.holds_private(holder.instance_id)  # the old holder does not take it back
    assert view.private is not None
    assert view.private.holder == "w2"
    assert view.private.last_frame_ms == 42


async def test_a_restarted_worker_waits_for_its_old_instance_lease(engine: AsyncEngine) -> None:
    old, new = store(engine, "w1", "old"), store(engine, "w1", "new")
    await old.renew(topics=None, want_private=True, last_frame_ms=None)
    view = await new.renew(topics=None, want_private=True, last_frame_ms=None)
    assert view.twin == "old"  # our row was another process's: a restart, or two workers sharing an id
    assert not view.holds_private("new")
    assert [m.instance_id for m in view.members] == ["new"]


async def test_topics_are_written_when_given_and_kept_otherwise(engine: AsyncEngine) -> None:
    member = store(engine, "w1")
    await member.renew(topics={"linear": ["tickers.BTCUSDT"]}, want_private=False, last_frame_ms=None)
    await member.renew(topics=None, want_private=False, last_frame_ms=None)
    async with engine.connect() as connection:
        stored = (await connection.execute(text("SELECT topics FROM worker_members"))).scalar_one()
    assert stored == {"linear": ["tickers.BTCUSDT"]}


async def test_dead_members_are_forgotten_after_an_hour(engine: AsyncEngine) -> None:
    member = store(engine, "w1")
    await member.renew(topics=None, want_private=False, last_frame_ms=None)
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE worker_members SET lease_expires_at = now() - interval '2 hours'"))
    view = await store(engine, "w2").renew(topics=None, want_private=False, last_frame_ms=None)
    assert [m.worker_id for m in view.members] == ["w2"]


async def test_a_worker_id_held_by_a_live_instance_cannot_be_claimed_until_its_lease_expires(
    engine: AsyncEngine,
) -> None:
    running, starting = store(engine, "w1", "running", ttl=1.0), store(engine, "w1", "starting")
    await running.renew(topics={"linear": ["publicTrade.BTCUSDT"]}, want_private=False, last_frame_ms=None)
    holder = await starting.claim()
    assert holder is not None
    assert (holder.instance_id, holder.alive) == ("running", True)
    assert await running.claim() is None  # its own row, live: still its own

    async def claimed() -> bool:
        return await starting.claim() is None

    await wait_until(claimed, timeout=10, interval=0.1, what="the running instance's lease to expire")
    view = await starting.renew(topics=None, want_private=False, last_frame_ms=None)
    assert view.twin is None  # the row is the new instance's, with none of the old one's topics
    assert view.live == {"w1"}
