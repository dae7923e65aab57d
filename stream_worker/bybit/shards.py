"""Which socket of a category carries which topic: Bybit's per-connection caps, planned without I/O.

PROTOCOL.md §5.2 (websocket/wss-authentication.mdx, public connect docs): the `args` of all subscriptions on one
public connection may not exceed 21,000 characters, and an option connection may carry at most 2,000 topics.
What Bybit does beyond them is undocumented, so the plan keeps every socket under a budget below the caps and
counts a topic as its JSON text in `args` (quotes and a comma included: the harsher of the two readings).

Rules:
- a new topic goes to the first socket with room, so sockets fill in order and later ones drain first;
- a socket Bybit refused for capacity takes no new topics until it has carried fewer (its learned cap);
- when the last socket's topics fit in the room the others have, they move there and it closes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ShardLimits:
    max_chars: int | None = None  # args characters per socket, None: no cap (private)
    max_topics: int | None = None  # topics per socket, None: no cap

    def __post_init__(self) -> None:
        for name in ("max_chars", "max_topics"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")


def args_chars(topic: str) -> int:
    """The characters one topic adds to a subscribe `args` list: `"topic",`."""
    return len(topic) + 3


@dataclass(slots=True)
class _Shard:
    topics: dict[str, None] = field(default_factory=dict)  # in the order they were placed
    chars: int = 0
    cap_chars: int | None = None  # learned from a capacity refusal: below the configured budget
    cap_topics: int | None = None


@dataclass(frozen=True, slots=True)
class Move:
    topic: str
    source: int
    target: int


class ShardPlan:
    """Topic → socket index for one category. Socket 0 always exists; more are added as needed."""

    def __init__(self, limits: ShardLimits) -> None:
        self.limits = limits
        self._shards: list[_Shard] = [_Shard()]
        self._where: dict[str, int] = {}

    @property
    def count(self) -> int:
        """Sockets planned, carrying topics or not (an emptied last one is dropped by `consolidate`)."""
        return len(self._shards)

    def shard_of(self, topic: str) -> int | None:
        return self._where.get(topic)

    def topics(self, index: int) -> list[str]:
        return list(self._shards[index].topics)

    def __contains__(self, topic: object) -> bool:
        return topic in self._where

    def place(self, topic: str, *, avoid: int | None = None) -> int:
        """Put a new topic on the first socket with room (never `avoid`), adding a socket if none has any."""
        if topic in self._where:
            raise ValueError(f"{topic} is already placed")
        for index, shard in enumerate(self._shards):
            if index != avoid and self._has_room(shard, topic):
                return self._put(topic, index)
        self._shards.append(_Shard())
        return self._put(topic, len(self._shards) - 1)

    def remove(self, topic: str) -> int | None:
        """Take a topic off its socket; returns the socket it was on."""
        index = self._where.pop(topic, None)
        if index is not None:
            shard = self._shards[index]
            del shard.topics[topic]
            shard.chars -= args_chars(topic)
        return index

    def refused_for_capacity(self, topic: str) -> int | None:
        """Bybit refused `topic` on its socket for capacity: that socket is full at what it carries without it,
        and the topic moves to another. Returns the new socket, or None when the topic was alone on its socket
        (then no socket can carry it: it is refused for good)."""
        source = self._where.get(topic)
        if source is None:
            return None
        shard = self._shards[source]
        if len(shard.topics) == 1:
            return None
        self.remove(topic)
        shard.cap_chars = shard.chars
        shard.cap_topics = len(shard.topics)
        return self.place(topic, avoid=source)

    def consolidate(self) -> list[Move]:
        """Empty the last socket into the others when its topics fit there; drop empty trailing sockets."""
        moves: list[Move] = []
        while len(self._shards) > 1:
            last = len(self._shards) - 1
            shard = self._shards[last]
            if shard.topics and not self._fits_elsewhere(list(shard.topics), last):
                break
            for topic in list(shard.topics):
                self.remove(topic)
                moves.append(Move(topic, last, self._place_below(topic, last)))
            self._shards.pop()
        return moves

    def _place_below(self, topic: str, limit: int) -> int:
        for index in range(limit):
            if self._has_room(self._shards[index], topic):
                return self._put(topic, index)
        raise AssertionError("consolidate checked the room first")

    def _fits_elsewhere(self, topics: list[str], last: int) -> bool:
        room = [(self._room_chars(s), self._room_topics(s)) for s in self._shards[:last]]
        for topic in topics:  # first fit, as `place` would do it
            need = args_chars(topic)
            for i, (chars, count) in enumerate(room):
                if chars >= need and count >= 1:
                    room[i] = (chars - need, count - 1)
                    break
            else:
                return False
        return True

    def _room_chars(self, shard: _Shard) -> int:
        caps = [c for c in (self.limits.max_chars, shard.cap_chars) if c is not None]
        return min(caps) - shard.chars if caps else 1 << 62

    def _room_topics(self, shard: _Shard) -> int:
        caps = [c for c in (self.limits.max_topics, shard.cap_topics) if c is not None]
        return min(caps) - len(shard.topics) if caps else 1 << 62

    def _has_room(self, shard: _Shard, topic: str) -> bool:
        if not shard.topics:
            return True  # an empty socket takes any one topic: Bybit says whether it is too big
        return self._room_chars(shard) >= args_chars(topic) and self._room_topics(shard) >= 1

    def _put(self, topic: str, index: int) -> int:
        shard = self._shards[index]
        shard.topics[topic] = None
        shard.chars += args_chars(topic)
        self._where[topic] = index
        return index
