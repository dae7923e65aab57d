"""What several stream workers did on the fake Bybit, counted per (socket, topic) across every connection."""

from __future__ import annotations

from collections import Counter

from tests.fake_bybit import FakeBybit

TopicKey = tuple[str, str]  # (the fake's endpoint name, topic)


def live_subscriptions(fake: FakeBybit) -> Counter[TopicKey]:
    """How many open connections are subscribed to each topic right now: 1 everywhere means no duplicates."""
    counts: Counter[TopicKey] = Counter()
    for record in fake.open_connections:
        counts.update((record.category, topic) for topic in record.topics)
    return counts


def subscribe_frames(fake: FakeBybit) -> Counter[TopicKey]:
    """How many subscribe frames ever named each topic, over every connection."""
    counts: Counter[TopicKey] = Counter()
    for record in fake.connections:
        for request in record.requests:
            if request.op == "subscribe" and isinstance(request.args, list):
                counts.update((record.category, topic) for topic in request.args)
    return counts


def exactly_once(fake: FakeBybit, wanted: set[TopicKey]) -> bool:
    """Every wanted topic is subscribed on exactly one open connection, and nothing else is."""
    counts = live_subscriptions(fake)
    return set(counts) == wanted and set(counts.values()) == {1}
