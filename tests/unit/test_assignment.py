"""Rendezvous assignment: every topic has exactly one owner, and membership changes move only what they must."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from shared.enums import Endpoint
from stream_worker.cluster.assignment import Assignment, owner_of

PUBLIC = (Endpoint.SPOT, Endpoint.LINEAR, Endpoint.INVERSE, Endpoint.OPTION)
TOPICS = {endpoint: {f"publicTrade.SYM{i}USDT" for i in range(15)} for endpoint in PUBLIC}  # 60 topics


def owners(members: set[str]) -> dict[tuple[Endpoint, str], str | None]:
    return {(e, t): owner_of(e, t, members) for e, topics in TOPICS.items() for t in topics}


def test_every_topic_is_owned_by_exactly_one_of_the_workers() -> None:
    members = {"w1", "w2", "w3"}
    shares = [Assignment(m, members).mine(TOPICS) for m in sorted(members)]
    flat = Counter((e, t) for share in shares for e, topics in share.items() for t in topics)
    assert set(flat) == {(e, t) for e, topics in TOPICS.items() for t in topics}
    assert set(flat.values()) == {1}


def test_sixty_topics_spread_over_three_workers_without_starving_one() -> None:
    counts = Counter(owners({"w1", "w2", "w3"}).values())
    assert min(counts.values()) >= 10, counts  # an even split is 20 each


def test_a_worker_leaving_moves_only_its_own_topics() -> None:
    before, after = owners({"w1", "w2", "w3"}), owners({"w1", "w3"})
    moved = {key for key in before if before[key] != after[key]}
    assert moved == {key for key, owner in before.items() if owner == "w2"}


def test_a_worker_joining_takes_topics_only_for_itself() -> None:
    before, after = owners({"w1", "w3"}), owners({"w1", "w2", "w3"})
    moved = {key for key in before if before[key] != after[key]}
    assert moved
    assert all(after[key] == "w2" for key in moved)


def test_a_worker_that_restarts_gets_back_the_same_topics() -> None:
    assert owners({"w1", "w2", "w3"}) == owners({"w3", "w1", "w2"})


def test_no_members_means_no_owner() -> None:
    assert owner_of(Endpoint.LINEAR, "tickers.BTCUSDT", []) is None
    assert Assignment("w1").mine(TOPICS) == {}


def test_the_same_topic_name_on_two_sockets_is_two_topics() -> None:
    members = [f"w{i}" for i in range(8)]
    pairs = {
        (owner_of(Endpoint.SPOT, f"publicTrade.S{i}", members), owner_of(Endpoint.LINEAR, f"publicTrade.S{i}", members))
        for i in range(50)
    }
    assert any(spot != linear for spot, linear in pairs)


def test_update_reports_whether_the_view_changed() -> None:
    assignment = Assignment("w1", ["w1", "w2"])
    assert assignment.update(["w2", "w1"]) is False
    assert assignment.update(["w1"]) is True
    assert assignment.mine(TOPICS) == TOPICS


@given(st.sets(st.text("abcdef0123456789", min_size=1, max_size=6), min_size=1, max_size=6), st.text(min_size=1))
def test_the_owner_is_always_a_member_and_independent_of_order(members: set[str], topic: str) -> None:
    forward = owner_of(Endpoint.LINEAR, topic, sorted(members))
    backward = owner_of(Endpoint.LINEAR, topic, sorted(members, reverse=True))
    assert forward == backward
    assert forward in members
