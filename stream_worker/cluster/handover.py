"""Make before break, as a pure function: which topics a worker keeps while their new owner takes them over.

A topic that moves to another worker (one that just joined, say) stays ours until the new owner reports it
subscribed (acknowledged by Bybit), after at least `grace` and at most `cap` seconds. Dropping it at once would
leave it unserved until then; keeping it costs a moment of duplicates, which consumers absorb by `event_id`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec

from shared.enums import Endpoint
from stream_worker.cluster.assignment import TopicKey


class Handover(msgspec.Struct, frozen=True, kw_only=True):
    owned: dict[Endpoint, set[str]]  # what to serve now: our share plus the topics still being handed over
    releasing: dict[TopicKey, float]  # topics kept for their new owner: since when


def hand_over(
    *,
    public: Mapping[Endpoint, set[str]],
    share: Mapping[Endpoint, set[str]],
    served: set[TopicKey],
    releasing: Mapping[TopicKey, float],
    now: float,
    grace: float,
    cap: float,
    taken: Callable[[Endpoint, str], bool],
) -> Handover:
    """`public`: the wanted public topics; `share`: those the assignment gives us; `served`: what we served
    after the last claim; `releasing`: topics kept for their new owner before, and since when; `taken(endpoint,
    topic)`: the topic's new owner reports it subscribed."""
    owned = {endpoint: set(topics) for endpoint, topics in share.items()}
    still: dict[TopicKey, float] = {}
    for endpoint, endpoint_topics in public.items():
        for topic in endpoint_topics - share.get(endpoint, set()):
            key = (endpoint, topic)
            if key not in served:
                continue
            since = releasing.get(key, now)
            held = now - since
            if held < cap and (held < grace or not taken(endpoint, topic)):
                still[key] = since
                owned.setdefault(endpoint, set()).add(topic)
    return Handover(owned=owned, releasing=still)
