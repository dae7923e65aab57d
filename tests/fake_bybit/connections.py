"""What the fake remembers about each connection and auth attempt, for tests to assert on.

Plain records, no I/O. Times are `time.monotonic()` seconds, so a test can measure gaps (back-off).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.fake_bybit.topics import Endpoint


@dataclass(frozen=True, kw_only=True)
class OpRequest:
    """A subscribe or unsubscribe frame as the client sent it."""

    op: str
    args: Any
    req_id: Any
    at: float


@dataclass(frozen=True, kw_only=True)
class AuthAttempt:
    conn_id: str
    api_key: str | None
    success: bool
    reason: str  # "" on success; why it failed otherwise (Bybit only ever says "Params Error")
    at: float


@dataclass(kw_only=True)
class ConnectionRecord:
    """One accepted WebSocket connection, open or closed."""

    path: str  # as requested, query string included
    category: Endpoint  # "spot" | "linear" | "inverse" | "option" | "private"
    conn_id: str
    opened_at: float
    idle_timeout: float | None  # seconds without ping or data before the fake cuts the TCP connection
    closed_at: float | None = None
    close_code: int | None = None  # as the fake saw it; 1006 when the TCP connection was cut
    # Who closed it: None for the client or the network, else "idle", "drop", "abort", "auth", "stop".
    closed_by: str | None = None
    authenticated: bool = False
    ops: Counter[str] = field(default_factory=Counter)  # op name -> count; "<invalid>" for unreadable frames
    requests: list[OpRequest] = field(default_factory=list)
    topics: set[str] = field(default_factory=set)  # currently subscribed
    frames_received: int = 0
    frames_sent: int = 0

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    def subscribe_requests(self, topic: str) -> int:
        """How many subscribe frames on this connection named `topic`."""
        return sum(
            1
            for request in self.requests
            if request.op == "subscribe" and isinstance(request.args, list) and topic in request.args
        )
