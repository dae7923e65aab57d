"""The desired subscription set and what it asks of Bybit and RabbitMQ. Pure: no I/O.

PostgreSQL holds the live subscription rows; this module turns them into a reference count per Bybit topic
(many services, one Bybit subscription) and the queue bindings each service needs. The worker converges the
actual state to it (level-triggered): at start-up, after every reconnect, on every notice and on a timer.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable

import msgspec

from shared.commands import ChangeAction, SubscriptionChange
from shared.enums import Category, ChannelType, Endpoint
from shared.routing import binding_key
from shared.topics import TopicSpec


class Want(msgspec.Struct, frozen=True, kw_only=True):
    """One live subscription: a service wants a topic on a socket, delivered to its queue."""

    subscription_id: uuid.UUID
    service: str
    channel_type: ChannelType
    endpoint: Endpoint
    topic: str
    category: Category | None
    symbol: str | None

    @property
    def binding(self) -> Binding:
        spec = TopicSpec(
            channel_type=self.channel_type,
            endpoint=self.endpoint,
            topic=self.topic,
            category=self.category,
            symbol=self.symbol,
            params={},
        )
        return Binding(service=self.service, channel_type=self.channel_type, key=binding_key(spec))

    @classmethod
    def from_change(cls, change: SubscriptionChange) -> Want:
        return cls(
            subscription_id=change.subscription_id,
            service=change.requesting_service,
            channel_type=change.channel_type,
            endpoint=change.endpoint,
            topic=change.topic,
            category=change.category,
            symbol=change.symbol,
        )


class Binding(msgspec.Struct, frozen=True, kw_only=True):
    """A routing-key pattern bound to one service's queue for one event class."""

    service: str
    channel_type: ChannelType
    key: str


class DesiredSet:
    """Live subscriptions by id, at a revision of the desired state."""

    def __init__(self, wants: Iterable[Want] = (), revision: int = 0) -> None:
        self.revision = revision
        self._wants: dict[uuid.UUID, Want] = {want.subscription_id: want for want in wants}

    def __len__(self) -> int:
        return len(self._wants)

    def apply(self, changes: Iterable[SubscriptionChange], revision: int) -> None:
        """Apply one notice's changes; the caller checked that `revision` follows ours."""
        for change in changes:
            match change.action:
                case ChangeAction.CREATED:
                    want = Want.from_change(change)
                    self._wants[want.subscription_id] = want
                case ChangeAction.CANCELLED:
                    self._wants.pop(change.subscription_id, None)
        self.revision = revision

    def topics(self) -> dict[Endpoint, set[str]]:
        """Every topic with at least one subscriber, per socket."""
        topics: dict[Endpoint, set[str]] = defaultdict(set)
        for want in self._wants.values():
            topics[want.endpoint].add(want.topic)
        return dict(topics)

    def subscription_ids(self, endpoint: Endpoint, topic: str) -> list[uuid.UUID]:
        """The live subscriptions that want one topic: its reference count is their number."""
        return [w.subscription_id for w in self._wants.values() if (w.endpoint, w.topic) == (endpoint, topic)]

    def bindings(self) -> set[Binding]:
        return {want.binding for want in self._wants.values()}
