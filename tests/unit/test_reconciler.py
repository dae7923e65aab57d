"""The reconciler's plans, checked one by one and as a state machine against a naive model of what must hold."""

from __future__ import annotations

import uuid

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shared.enums import Category, ChannelType, Endpoint
from stream_worker.state.desired import Binding, DesiredSet, Want
from stream_worker.state.reconciler import plan

SERVICES = ("a", "b", "c")
TOPICS = ("publicTrade.BTCUSDT", "publicTrade.ETHUSDT", "tickers.BTCUSDT")


PLACES = [(e, t) for e in (Endpoint.LINEAR, Endpoint.SPOT) for t in TOPICS] + [
    (Endpoint.PRIVATE, "order"),
    (Endpoint.PRIVATE, "execution"),
]


def want(service: str, endpoint: Endpoint, topic: str) -> Want:
    if endpoint is Endpoint.PRIVATE:
        private = ChannelType.ORDER if topic == "order" else ChannelType.EXECUTION
        return Want(
            subscription_id=uuid.uuid4(),
            service=service,
            channel_type=private,
            endpoint=endpoint,
            topic=topic,
            category=None,
            symbol=None,
        )
    channel = ChannelType.TICKER if topic.startswith("tickers") else ChannelType.TRADES
    return Want(
        subscription_id=uuid.uuid4(),
        service=service,
        channel_type=channel,
        endpoint=endpoint,
        topic=topic,
        category=Category(endpoint.value) if endpoint is not Endpoint.PRIVATE else None,
        symbol=topic.rsplit(".", 1)[1],
    )


def test_binds_come_first_and_a_topic_shared_by_two_services_is_subscribed_once() -> None:
    desired = DesiredSet([want("a", Endpoint.LINEAR, TOPICS[0]), want("b", Endpoint.LINEAR, TOPICS[0])])
    steps = plan(
        desired_bindings=desired.bindings(),
        bound=set(),
        owned=desired.topics(),
        wanted={Endpoint.LINEAR: frozenset()},
    )
    assert [b.service for b in steps.bind] == ["a", "b"]
    assert steps.subscribe == {Endpoint.LINEAR: [TOPICS[0]]}
    assert (steps.unsubscribe, steps.unbind) == ({}, [])


def test_a_topic_no_longer_owned_is_unsubscribed_but_its_binding_stays_for_the_new_owner_to_fill() -> None:
    desired = DesiredSet([want("a", Endpoint.LINEAR, TOPICS[0])])
    steps = plan(
        desired_bindings=desired.bindings(),
        bound=desired.bindings(),
        owned={},
        wanted={Endpoint.LINEAR: frozenset({TOPICS[0]})},
    )
    assert steps.unsubscribe == {Endpoint.LINEAR: [TOPICS[0]]}
    assert (steps.bind, steps.unbind) == ([], [])


def test_a_socket_this_worker_lacks_is_never_planned_for() -> None:
    desired = DesiredSet([want("a", Endpoint.PRIVATE, "order")])
    steps = plan(desired_bindings=desired.bindings(), bound=set(), owned=desired.topics(), wanted={})
    assert steps.subscribe == {}
    assert len(steps.bind) == 1


class ReconcilerMachine(RuleBasedStateMachine):
    """Wants come and go, ownership moves, RabbitMQ refuses some binds: after every round the worker's sockets
    hold exactly the owned wanted topics, and a round with no failures leaves nothing to do."""

    def __init__(self) -> None:
        super().__init__()
        self.wants: dict[uuid.UUID, Want] = {}
        self.not_owned: set[tuple[Endpoint, str]] = set()
        self.sockets: set[Endpoint] = {Endpoint.LINEAR, Endpoint.SPOT}
        self.wanted: dict[Endpoint, set[str]] = {endpoint: set() for endpoint in self.sockets}
        self.bound: set[Binding] = set()

    def desired(self) -> DesiredSet:
        return DesiredSet(self.wants.values())

    def owned(self) -> dict[Endpoint, set[str]]:
        return {
            endpoint: {t for t in topics if (endpoint, t) not in self.not_owned}
            for endpoint, topics in self.desired().topics().items()
        }

    @rule(service=st.sampled_from(SERVICES), place=st.sampled_from(PLACES))
    def subscribe(self, service: str, place: tuple[Endpoint, str]) -> None:
        item = want(service, *place)
        self.wants[item.subscription_id] = item

    @precondition(lambda self: bool(self.wants))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        del self.wants[data.draw(st.sampled_from(sorted(self.wants)))]

    @rule(place=st.sampled_from(PLACES))
    def ownership_moves(self, place: tuple[Endpoint, str]) -> None:
        self.not_owned ^= {place}

    @rule(fail=st.sets(st.integers(0, 20)))
    def converge(self, fail: set[int]) -> None:
        desired = self.desired()
        steps = plan(
            desired_bindings=desired.bindings(),
            bound=self.bound,
            owned=self.owned(),
            wanted={endpoint: frozenset(topics) for endpoint, topics in self.wanted.items()},
        )
        owned = self.owned()
        for endpoint, added in steps.subscribe.items():
            assert endpoint in self.sockets
            assert set(added) <= owned.get(endpoint, set()), "never subscribes a topic it does not own"
            assert not set(added) & self.wanted[endpoint], "never subscribes twice"
            self.wanted[endpoint] |= set(added)
        for endpoint, removed in steps.unsubscribe.items():
            self.wanted[endpoint] -= set(removed)
        assert not set(steps.unbind) & desired.bindings(), "never unbinds a binding a live subscription needs"
        failures = 0
        for index, binding in enumerate(steps.bind + steps.unbind):
            if index in fail:
                failures += 1
                continue
            if binding in steps.bind:
                self.bound.add(binding)
            else:
                self.bound.discard(binding)
        for endpoint in self.sockets:
            assert self.wanted[endpoint] == owned.get(endpoint, set()), "a round leaves exactly the owned topics"
        if failures == 0:
            assert self.bound == desired.bindings()
            again = plan(
                desired_bindings=desired.bindings(),
                bound=self.bound,
                owned=owned,
                wanted={e: frozenset(t) for e, t in self.wanted.items()},
            )
            assert again.empty, "a round without failures is a fixed point"

    @invariant()
    def the_plan_matches_a_naive_model(self) -> None:
        desired = self.desired()
        owned = self.owned()
        steps = plan(
            desired_bindings=desired.bindings(),
            bound=self.bound,
            owned=owned,
            wanted={e: frozenset(t) for e, t in self.wanted.items()},
        )
        assert set(steps.bind) == desired.bindings() - self.bound
        assert set(steps.unbind) == self.bound - desired.bindings()
        for endpoint in self.sockets:
            assert set(steps.subscribe.get(endpoint, [])) == owned.get(endpoint, set()) - self.wanted[endpoint]
            assert set(steps.unsubscribe.get(endpoint, [])) == self.wanted[endpoint] - owned.get(endpoint, set())
        assert set(steps.subscribe) | set(steps.unsubscribe) <= self.sockets


TestReconcilerMachine = ReconcilerMachine.TestCase
TestReconcilerMachine.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
