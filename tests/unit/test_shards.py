"""Which socket carries which topic: the plan below Bybit's per-connection caps, and the sockets that follow it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.enums import Endpoint
from stream_worker.bybit.events import Event, Push, Subscribed, SubscribeRejected
from stream_worker.bybit.protocol import BybitProtocol
from stream_worker.bybit.shards import ShardLimits, ShardPlan, args_chars
from stream_worker.exchange.connection import Connection
from stream_worker.exchange.sockets import Sockets
from tests.support.waiting import wait_until

TOPIC = "tickers.SYM{:04d}USDT"  # 19 characters, 22 in args


def topic(i: int) -> str:
    return TOPIC.format(i)


def test_topics_fill_the_first_socket_then_open_another() -> None:
    plan = ShardPlan(ShardLimits(max_chars=3 * args_chars(topic(0))))
    assert [plan.place(topic(i)) for i in range(7)] == [0, 0, 0, 1, 1, 1, 2]


def test_option_sockets_are_capped_by_topic_count() -> None:
    plan = ShardPlan(ShardLimits(max_chars=20_000, max_topics=2))
    assert [plan.place(topic(i)) for i in range(5)] == [0, 0, 1, 1, 2]


def test_a_freed_slot_on_an_early_socket_takes_the_next_topic() -> None:
    plan = ShardPlan(ShardLimits(max_topics=2))
    for i in range(4):
        plan.place(topic(i))
    plan.remove(topic(0))
    assert plan.place(topic(9)) == 0


def test_when_the_last_socket_fits_in_the_others_its_topics_move_and_it_closes() -> None:
    plan = ShardPlan(ShardLimits(max_topics=2))
    for i in range(4):
        plan.place(topic(i))
    plan.remove(topic(0))
    assert plan.consolidate() == []  # socket 1's two topics do not fit in socket 0's one free slot
    plan.remove(topic(1))
    moves = plan.consolidate()
    assert sorted((m.topic, m.source, m.target) for m in moves) == [(topic(2), 1, 0), (topic(3), 1, 0)]
    assert plan.count == 1


def test_a_capacity_refusal_caps_that_socket_at_what_it_carries_and_moves_the_topic() -> None:
    plan = ShardPlan(ShardLimits(max_chars=20_000))
    for i in range(5):
        plan.place(topic(i))
    assert plan.refused_for_capacity(topic(4)) == 1
    assert plan.place(topic(5)) == 1  # socket 0 is full at four topics now


def test_a_topic_refused_alone_on_its_socket_is_not_moved_again() -> None:
    plan = ShardPlan(ShardLimits(max_chars=20_000))
    plan.place(topic(0))
    assert plan.refused_for_capacity(topic(0)) is None


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        ShardLimits(max_chars=0)


@given(
    ops=st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=40)), max_size=120),
    cap=st.integers(min_value=1, max_value=6),
)
@settings(max_examples=200, deadline=None)
def test_any_churn_keeps_every_socket_within_its_cap_and_each_topic_on_one_socket(
    ops: list[tuple[bool, int]], cap: int
) -> None:
    plan = ShardPlan(ShardLimits(max_chars=cap * args_chars(topic(0)), max_topics=cap))
    wanted: set[str] = set()
    for add, i in ops:
        name = topic(i)
        if add and name not in wanted:
            plan.place(name)
            wanted.add(name)
        elif not add and name in wanted:
            plan.remove(name)
            wanted.discard(name)
            plan.consolidate()
        placed = [t for index in range(plan.count) for t in plan.topics(index)]
        assert sorted(placed) == sorted(wanted)
        assert all(len(plan.topics(index)) <= cap for index in range(plan.count))
    # Never more sockets than the topics need, plus the one that may be draining.
    assert plan.count <= max(1, -(-len(wanted) // cap)) + 1


# -- the sockets of one category ------------------------------------------------------------------------------


class Built:
    """The connections a `Sockets` asked for, with the handlers it gave each."""

    def __init__(self) -> None:
        self.events: list[Callable[[Endpoint, Event], Awaitable[None]]] = []
        self.forwarded: list[Event] = []

    def make(
        self,
        index: int,
        on_event: Callable[[Endpoint, Event], Awaitable[None]],
        on_connected: Callable[[Endpoint], None],
    ) -> Connection:
        self.events.append(on_event)
        return Connection(BybitProtocol(endpoint=Endpoint.LINEAR), "ws://unused", on_event, on_connected=on_connected)

    async def forward(self, endpoint: Endpoint, event: Event) -> None:
        self.forwarded.append(event)


def sockets(limits: ShardLimits) -> tuple[Sockets, Built]:
    built = Built()
    return Sockets(Endpoint.LINEAR, built.make, limits=limits, on_event=built.forward), built


def test_each_socket_is_asked_for_only_its_own_topics() -> None:
    pool, _ = sockets(ShardLimits(max_topics=2))
    for i in range(5):
        pool.want(topic(i))
    assert [sorted(c.protocol.wanted) for c in pool.connections] == [
        [topic(0), topic(1)],
        [topic(2), topic(3)],
        [topic(4)],
    ]
    assert pool.protocol.wanted == {topic(i) for i in range(5)}
    assert pool.protocol.is_wanted(topic(4))


async def test_a_capacity_refusal_moves_the_topic_to_another_socket_instead_of_failing_it() -> None:
    pool, built = sockets(ShardLimits(max_chars=20_000))
    for i in range(3):
        pool.want(topic(i))
    await built.events[0](Endpoint.LINEAR, SubscribeRejected(topic=topic(2), reason="error:args length >21000"))
    assert built.forwarded == []  # not a failure anyone hears of
    assert topic(2) in pool.connections[1].protocol.wanted
    assert topic(2) not in pool.connections[0].protocol.wanted
    assert pool.protocol.failed == {}
    assert pool.moved == 1


async def test_an_unknown_symbol_refusal_is_a_failure_not_a_move() -> None:
    pool, built = sockets(ShardLimits(max_chars=20_000))
    pool.want(topic(0))
    pool.want("tickers.NOPE")
    refusal = SubscribeRejected(topic="tickers.NOPE", reason="error:handler not found,topic:tickers.NOPE")
    await built.events[0](Endpoint.LINEAR, refusal)
    assert built.forwarded == [refusal]
    assert len(pool.connections) == 1


async def test_a_push_from_a_socket_that_no_longer_carries_its_topic_is_dropped() -> None:
    pool, built = sockets(ShardLimits(max_chars=20_000))
    for i in range(3):
        pool.want(topic(i))
    await built.events[0](Endpoint.LINEAR, SubscribeRejected(topic=topic(2), reason="error:args length >21000"))
    stale = Push(
        topic=topic(2),
        type="snapshot",
        ts=1,
        cts=None,
        cs=None,
        id=None,
        creation_time=None,
        data=msgspec.Raw(b"{}"),
        received_at=0.0,
    )
    await built.events[0](Endpoint.LINEAR, stale)
    await built.events[0](Endpoint.LINEAR, Subscribed(topic=topic(2)))
    assert built.forwarded == []
    await built.events[1](Endpoint.LINEAR, stale)
    assert built.forwarded == [stale]


async def test_sockets_opened_later_are_run_by_the_category_task() -> None:
    pool, _ = sockets(ShardLimits(max_topics=1))
    runs: list[int] = []

    async def fake_run(index: int) -> None:
        runs.append(index)
        await asyncio.Event().wait()

    pool.want(topic(0))
    for index, connection in enumerate(pool.connections):
        connection.run = lambda index=index: fake_run(index)  # type: ignore[method-assign]
    task = asyncio.create_task(pool.run())
    await wait_until(lambda: runs == [0], what="socket 0 running")
    pool.want(topic(1))
    pool.connections[1].run = lambda: fake_run(1)  # type: ignore[method-assign]
    await wait_until(lambda: len(runs) == 2, what="both sockets running")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(runs) == [0, 1]
