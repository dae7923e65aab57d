"""What a stream worker reports about itself in its heartbeat row (`worker_heartbeats.state`).

The worker writes these structs (as JSONB) and the API reads them back through the same structs, so the two
processes cannot drift apart on a field name. Every field has a default: a row written by an older or newer
worker still decodes (missing fields take the default, unknown ones are ignored) during a rolling upgrade.
"""

from __future__ import annotations

from typing import Any

import msgspec


class SocketHealth(msgspec.Struct, kw_only=True):
    wanted: int = 0  # topics this worker wants on the socket
    connected: bool = False
    authenticated: bool | None = None  # private socket only
    topics: int = 0  # acknowledged by Bybit
    failed_topics: int = 0
    last_message_age_s: float | None = None
    reconnects: int = 0
    auth_failures: int = 0
    last_end_reason: str | None = None  # may quote an exception: never shown to anonymous callers
    conn_id: str | None = None  # Bybit's id of the current or last socket, to quote to Bybit's support
    detail: str | None = None  # why a wanted socket cannot exist (no API keys)
    sockets: int = 0  # open sockets of this category: more than one when its topics exceed one socket's caps


class PublisherHealth(msgspec.Struct, kw_only=True):
    connected: bool = False
    published: dict[str, int] = msgspec.field(default_factory=dict)  # "market", "account" (re-publishes included)
    confirmed: int = 0  # account messages RabbitMQ acked
    republished: int = 0  # account messages published again after a nack or a lost connection
    nacked: int = 0
    # "market_buffer_full", "connection_lost", "in_flight" (market only: account data is never dropped for any
    # of them), and "unencodable" (either kind: an envelope msgspec cannot encode, a bug upstream). `in_flight`
    # were written (in `published` too) but not known to have reached RabbitMQ when the link died.
    dropped: dict[str, int] = msgspec.field(default_factory=dict)
    market_depth: int = 0
    account_depth: int = 0  # waiting in the account buffer plus waiting to be re-published
    unconfirmed: int = 0  # account messages published and not yet confirmed
    reconnects: int = 0  # connections established after the first
    last_confirm_latency: float | None = None  # seconds from publish to ack, of the latest confirmed message
    down_for_s: float | None = None  # seconds since the connection was lost (or since start); None while up


class ResyncHealth(msgspec.Struct, kw_only=True):
    runs: int = 0
    failures: int = 0
    last_ok_ms: int | None = None
    last_error: str | None = None
    incomplete: dict[str, int] = msgspec.field(default_factory=dict)  # shortfalls per cause (resync_incomplete)
    resolved: dict[str, int] = msgspec.field(default_factory=dict)  # orders, positions, coins found closed


class ClusterHealth(msgspec.Struct, kw_only=True):
    ready: bool = False
    members: list[str] = msgspec.field(default_factory=list)
    holds_private: bool = False
    private_holder: str | None = None
    owned_topics: dict[str, int] = msgspec.field(default_factory=dict)  # per socket
    handing_over: int = 0
    renewals: int = 0
    failed_renewals: int = 0
    changes: int = 0
    duplicate_worker_id: bool = False


class WorkerHeartbeat(msgspec.Struct, kw_only=True):
    healthy: bool = False
    revision: int = 0  # of the desired set the worker has applied
    sockets: dict[str, SocketHealth] = msgspec.field(default_factory=dict)
    publisher: PublisherHealth = msgspec.field(default_factory=PublisherHealth)
    counters: dict[str, int] = msgspec.field(default_factory=dict)
    market: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)  # per socket: book/ticker counters
    commands_connected: bool = False
    commands_down_for_s: float | None = None  # seconds since the command listener lost RabbitMQ; None while up
    # Why `healthy` is false, one short sentence each (no URLs, no exception texts): safe for /health.
    problems: list[str] = msgspec.field(default_factory=list)
    state_pending: int = 0
    account_resync: ResyncHealth | None = None
    cluster: ClusterHealth = msgspec.field(default_factory=ClusterHealth)

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = msgspec.to_builtins(self)
        return result

    @classmethod
    def from_json(cls, value: object) -> WorkerHeartbeat:
        """Decode a heartbeat row's JSON; a value that does not fit (a corrupted row) reads as an unhealthy
        heartbeat rather than an error: the API must answer /health whatever a worker wrote."""
        try:
            return msgspec.convert(value, cls)
        except msgspec.ValidationError:
            return cls()
