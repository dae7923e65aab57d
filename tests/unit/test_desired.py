"""The desired set: many services on one topic count as one Bybit subscription; bindings follow services."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from shared.commands import COMMAND_DECODER, COMMAND_ENCODER, ChangeAction, SubscriptionChange, SubscriptionsChanged
from shared.enums import Category, ChannelType, Endpoint
from stream_worker.state.desired import Binding, DesiredSet, Want


def want(service: str, topic: str = "publicTrade.BTCUSDT", endpoint: Endpoint = Endpoint.LINEAR) -> Want:
    return Want(
        subscription_id=uuid.uuid4(),
        service=service,
        channel_type=ChannelType.TRADES,
        endpoint=endpoint,
        topic=topic,
        category=Category(endpoint.value),
        symbol=topic.rsplit(".", 1)[1],
    )


def change(action: ChangeAction, item: Want) -> SubscriptionChange:
    return SubscriptionChange(
        action=action,
        subscription_id=item.subscription_id,
        requesting_service=item.service,
        channel_type=item.channel_type,
        category=item.category,
        symbol=item.symbol,
        endpoint=item.endpoint,
        topic=item.topic,
    )


def test_two_services_on_one_topic_are_one_topic_with_two_subscribers() -> None:
    a, b = want("a"), want("b")
    desired = DesiredSet([a, b], revision=2)
    assert desired.topics() == {Endpoint.LINEAR: {"publicTrade.BTCUSDT"}}
    assert sorted(desired.subscription_ids(Endpoint.LINEAR, "publicTrade.BTCUSDT")) == sorted(
        [a.subscription_id, b.subscription_id]
    )
    assert desired.bindings() == {
        Binding(service="a", channel_type=ChannelType.TRADES, key="trades.linear.BTCUSDT"),
        Binding(service="b", channel_type=ChannelType.TRADES, key="trades.linear.BTCUSDT"),
    }


def test_topic_stays_wanted_until_the_last_subscriber_leaves() -> None:
    a, b = want("a"), want("b")
    desired = DesiredSet([a, b], revision=2)
    desired.apply([change(ChangeAction.CANCELLED, a)], revision=3)
    assert desired.topics() == {Endpoint.LINEAR: {"publicTrade.BTCUSDT"}}
    desired.apply([change(ChangeAction.CANCELLED, b)], revision=4)
    assert desired.topics() == {}
    assert desired.revision == 4


def test_same_topic_name_on_two_sockets_is_two_topics() -> None:
    desired = DesiredSet([want("a", endpoint=Endpoint.SPOT), want("a", endpoint=Endpoint.LINEAR)])
    assert desired.topics() == {Endpoint.SPOT: {"publicTrade.BTCUSDT"}, Endpoint.LINEAR: {"publicTrade.BTCUSDT"}}


def test_a_notice_with_an_unknown_action_does_not_decode_rather_than_cancel() -> None:
    item = want("a")
    notice = SubscriptionsChanged(
        revision=2, trace_id="t", created_at_ms=0, changes=[change(ChangeAction.CREATED, item)]
    )
    raw = msgspec.json.decode(COMMAND_ENCODER.encode(notice))
    raw["changes"][0]["action"] = "paused"
    with pytest.raises(msgspec.ValidationError, match="action"):
        COMMAND_DECODER.decode(msgspec.json.encode(raw))
