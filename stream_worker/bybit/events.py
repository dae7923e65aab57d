"""What the Bybit protocol core reports to its shell: one frozen struct per event, and the `Event` union.

Events are plain values. Nothing here reads a clock, touches a socket or logs; the shell `match`es on them.
"""

from __future__ import annotations

import msgspec


class Authenticated(msgspec.Struct, frozen=True, kw_only=True):
    """The private socket accepted our auth; subscribes follow in the same call's frames."""


class AuthRejected(msgspec.Struct, frozen=True, kw_only=True):
    """Bybit refused the auth (usually `Params Error`: clock skew or bad key/secret/environment).

    The core never re-sends auth on the same socket: the shell closes it and reconnects with backoff.
    """

    reason: str
    conn_id: str | None = None  # Bybit's id of the socket, for its support (§2.1)


class Subscribed(msgspec.Struct, frozen=True, kw_only=True):
    topic: str


class Unsubscribed(msgspec.Struct, frozen=True, kw_only=True):
    """The topic is not subscribed on this socket any more (a failed unsubscribe also means this)."""

    topic: str


class SubscribeRejected(msgspec.Struct, frozen=True, kw_only=True):
    """Bybit refused a subscribe; `reason` is its `ret_msg` verbatim. The topic is parked, not retried."""

    topic: str
    reason: str
    conn_id: str | None = None  # Bybit's id of the socket, for its support (§2.1)


class Pong(msgspec.Struct, frozen=True, kw_only=True):
    pass


class Push(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A data frame. Only the envelope is read; `data` is left raw for a channel-specific decoder.

    Public pushes carry `type`, `ts` and, by topic, `cts`, `cs`, `id`; private pushes carry `id` and
    `creation_time` and no `type` or `ts` (PROTOCOL.md §6, §9). Times are epoch milliseconds.
    """

    topic: str
    type: str | None
    ts: int | None
    cts: int | None
    cs: int | None
    id: str | None
    creation_time: int | None
    data: msgspec.Raw
    received_at: float


class Unknown(msgspec.Struct, frozen=True, kw_only=True):
    """A well-formed frame we could not place. `kind` is short and stable, for counting and log-once."""

    kind: str
    text: str


class Malformed(msgspec.Struct, frozen=True, kw_only=True):
    """A frame we could not read: not JSON, not an object, or a field of the wrong type.

    `kind` is short and stable (`invalid_json`, `not_an_object`, `bad_<field>`); `detail` says more.
    `topic` is set when the frame still named one: the state of that topic may have missed an update.
    """

    kind: str
    detail: str
    topic: str | None = None


class Dead(msgspec.Struct, frozen=True, kw_only=True):
    """Nothing at all arrived for `dead_after` seconds: the shell should drop the socket and reconnect."""

    reason: str


class AckTimeout(msgspec.Struct, frozen=True, kw_only=True):
    """An op went unacknowledged for `ack_timeout` seconds. Reported once; recycling the socket is the cure.

    The op stays in flight (a late ack is still honoured), so the topic is never sent twice.
    """

    op: str
    topics: tuple[str, ...]


Event = (
    Authenticated
    | AuthRejected
    | Subscribed
    | Unsubscribed
    | SubscribeRejected
    | Pong
    | Push
    | Unknown
    | Malformed
    | Dead
    | AckTimeout
)
