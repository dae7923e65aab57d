"""What the owner of a topic does with cancelled subscriptions whose binding may outlive their binder."""

from __future__ import annotations

from shared.enums import Endpoint
from stream_worker.state.tombstones import Tombstone, plan_tombstones
from tests.unit.test_reconciler import want


def tombstone(service: str, endpoint: Endpoint, topic: str) -> Tombstone:
    gone = want(service, endpoint, topic)
    return Tombstone(subscription_id=gone.subscription_id, binding=gone.binding, endpoint=endpoint, topic=topic)


def owns_everything(endpoint: Endpoint, topic: str) -> bool:
    return True


def test_the_owner_unbinds_a_cancelled_binding_nobody_wants_and_settles_it_by_that_unbind() -> None:
    gone = tombstone("a", Endpoint.LINEAR, "tickers.BTCUSDT")
    stays = want("b", Endpoint.LINEAR, "tickers.BTCUSDT")
    steps = plan_tombstones([gone], desired_bindings={stays.binding}, owns=owns_everything)
    assert steps.unbind == {gone.binding: [gone.subscription_id]}
    assert steps.superseded == []


def test_a_service_that_cancelled_and_subscribed_again_stays_bound() -> None:
    gone = tombstone("a", Endpoint.LINEAR, "tickers.BTCUSDT")
    again = want("a", Endpoint.LINEAR, "tickers.BTCUSDT")
    steps = plan_tombstones([gone], desired_bindings={again.binding}, owns=owns_everything)
    assert steps.unbind == {}
    assert steps.superseded == [gone.subscription_id]


def test_tombstones_of_topics_another_worker_owns_are_left_to_it() -> None:
    mine = tombstone("a", Endpoint.LINEAR, "tickers.BTCUSDT")
    theirs = tombstone("a", Endpoint.SPOT, "tickers.BTCUSDT")
    steps = plan_tombstones(
        [mine, theirs], desired_bindings=set(), owns=lambda endpoint, topic: endpoint is Endpoint.LINEAR
    )
    assert steps.unbind == {mine.binding: [mine.subscription_id]}
    assert steps.superseded == []


def test_a_private_tombstone_is_judged_by_its_all_in_one_bybit_topic() -> None:
    gone = tombstone("a", Endpoint.PRIVATE, "order.linear")
    asked: list[tuple[Endpoint, str]] = []

    def owns(endpoint: Endpoint, topic: str) -> bool:
        asked.append((endpoint, topic))
        return True

    steps = plan_tombstones([gone], desired_bindings=set(), owns=owns)
    assert asked == [(Endpoint.PRIVATE, "order")]
    assert list(steps.unbind) == [gone.binding]


def test_two_cancelled_rows_of_one_binding_are_settled_by_one_unbind() -> None:
    first, second = (tombstone("a", Endpoint.LINEAR, "publicTrade.BTCUSDT") for _ in range(2))
    steps = plan_tombstones([second, first], desired_bindings=set(), owns=owns_everything)
    assert list(steps.unbind) == [first.binding]
    assert sorted(steps.unbind[first.binding]) == sorted([first.subscription_id, second.subscription_id])
