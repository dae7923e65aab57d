"""Make before break: a topic moving to another worker is kept until that worker has it, within bounds; and
reading the cluster's ownership changes nothing."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import create_async_engine

from shared.enums import Endpoint
from stream_worker.cluster.assignment import owner_of
from stream_worker.cluster.handover import hand_over
from stream_worker.cluster.membership import ClusterView, Member, MembershipStore
from stream_worker.cluster.ownership import Cluster

L = Endpoint.LINEAR


def keep(now: float, *, taken: bool, since: float | None = 0.0, served: bool = True) -> bool:
    result = hand_over(
        public={L: {"t"}},
        share={},
        served={(L, "t")} if served else set(),
        releasing={(L, "t"): since} if since is not None else {},
        now=now,
        grace=2.0,
        cap=30.0,
        taken=lambda _e, _t: taken,
    )
    return "t" in result.owned.get(L, set())


def test_a_moving_topic_is_kept_through_the_grace_even_when_the_new_owner_has_it() -> None:
    assert keep(1.0, taken=True)


def test_a_moving_topic_is_released_once_the_new_owner_reports_it_after_the_grace() -> None:
    assert not keep(2.5, taken=True)


def test_a_moving_topic_is_kept_past_the_grace_while_the_new_owner_lacks_it() -> None:
    assert keep(10.0, taken=False)


def test_a_moving_topic_is_released_at_the_cap_even_if_the_new_owner_never_takes_it() -> None:
    assert not keep(30.0, taken=False)


def test_a_topic_we_never_served_is_not_kept() -> None:
    assert not keep(0.0, taken=False, served=False, since=None)


def test_our_own_share_is_always_owned_and_never_counted_as_releasing() -> None:
    result = hand_over(
        public={L: {"a", "b"}},
        share={L: {"a"}},
        served=set(),
        releasing={},
        now=0.0,
        grace=2.0,
        cap=30.0,
        taken=lambda _e, _t: False,
    )
    assert (result.owned, result.releasing) == ({L: {"a"}}, {})


def view(*members: str) -> ClusterView:
    return ClusterView(
        members=tuple(Member(worker_id=m, instance_id=m, lease_age_s=0.0, expires_in_s=5.0) for m in members),
        private=None,
    )


def cluster(clock: list[float]) -> Cluster:
    # The engine is never used: these tests feed views in directly, as a renewal would.
    store = MembershipStore(
        create_async_engine("postgresql+asyncpg://unused@127.0.0.1/unused"),
        worker_id="w1",
        instance_id="i1",
        ttl=5.0,
        timeout=1.0,
    )
    return Cluster(
        store,
        renew_interval=1.0,
        can_serve_private=False,
        on_change=lambda: None,
        on_private_acquired=lambda _lease: None,
        last_private_frame_ms=lambda: None,
        subscribed=dict,
        hold_first_view=False,
        clock=lambda: clock[0],
    )


def test_reading_ownership_changes_nothing_and_a_claim_starts_the_handover_clock() -> None:
    clock = [0.0]
    node = cluster(clock)
    topics = {L: {f"publicTrade.S{i}USDT" for i in range(40)}}
    node.renewals = 1
    node._adopt(view("w1"))
    assert node.owned(topics) == topics
    node.claim(topics)
    node._adopt(view("w1", "w2"))  # a newcomer takes about half
    moving = {t for t in topics[L] if owner_of(L, t, {"w1", "w2"}) == "w2"}
    assert moving
    clock[0] = 100.0  # reads far apart in time must agree: nothing is remembered by a read
    first = node.owned(topics)
    assert node.owned(topics) == first
    assert node.health().handing_over == 0
    node.claim(topics)
    assert node.health().handing_over == len(moving)
    clock[0] = 101.0
    assert node.owned(topics)[L] >= moving, "still kept: within the grace"
    clock[0] = 200.0
    assert not node.owned(topics)[L] & moving, "past the cap: released"
