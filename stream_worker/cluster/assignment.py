"""Which live worker owns which public topic: rendezvous (highest-random-weight) hashing. Pure: no I/O.

Every worker computes the same answer from the same member list, with no coordinator: for each topic the
member with the highest hash of (member, topic) owns it. A member joining takes only the topics it now wins
and a member leaving gives away only its own, so a membership change moves about 1/N of the topics and
nothing else: no resubscribe storm. The hash is BLAKE2b, not `hash()`, which differs per process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from shared.enums import Endpoint

TopicKey = tuple[Endpoint, str]


def weight(member: str, endpoint: Endpoint, topic: str) -> int:
    digest = hashlib.blake2b(f"{member}\x00{endpoint.value}\x00{topic}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner_of(endpoint: Endpoint, topic: str, members: Iterable[str]) -> str | None:
    """The member that owns one topic; None when there are no members. Ties (never seen) go to the
    smaller member id, so the answer does not depend on the order of `members`."""
    best: tuple[int, str] | None = None
    for member in members:
        candidate = (weight(member, endpoint, topic), member)
        if best is None or candidate[0] > best[0] or (candidate[0] == best[0] and member < best[1]):
            best = candidate
    return best[1] if best is not None else None


class Assignment:
    """The topics one worker owns, under one membership view; owners are cached until the view changes."""

    def __init__(self, me: str, members: Iterable[str] = ()) -> None:
        self.me = me
        self.members: frozenset[str] = frozenset(members)
        self._owners: dict[TopicKey, str | None] = {}

    def update(self, members: Iterable[str]) -> bool:
        """Adopt a new membership view; True if it differs from the one held."""
        view = frozenset(members)
        if view == self.members:
            return False
        self.members = view
        self._owners.clear()
        return True

    def owner(self, endpoint: Endpoint, topic: str) -> str | None:
        key = (endpoint, topic)
        if key not in self._owners:
            self._owners[key] = owner_of(endpoint, topic, self.members)
        return self._owners[key]

    def mine(self, topics: dict[Endpoint, set[str]]) -> dict[Endpoint, set[str]]:
        """The public topics, of those given, that this worker owns."""
        owned: dict[Endpoint, set[str]] = {}
        for endpoint, endpoint_topics in topics.items():
            kept = {topic for topic in endpoint_topics if self.owner(endpoint, topic) == self.me}
            if kept:
                owned[endpoint] = kept
        return owned

    def forget(self, keep: set[TopicKey]) -> None:
        """Drop cached owners of topics nobody wants any more, so the cache stays as big as the desired set."""
        for key in [key for key in self._owners if key not in keep]:
            del self._owners[key]
