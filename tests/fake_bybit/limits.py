"""The fake's connection-rate limit: at most `limit` new connections in any `window` seconds.

rate-limit.mdx: "Do not establish more than 500 connections within a 5-minute window"; wss-authentication.mdx:
"counted per WebSocket domain". The fake is one domain and one IP. Whether Bybit counts refused handshakes is
not documented; the fake counts every attempt, admitted or not (the harsher reading), so a client that keeps
knocking while refused stays refused.

Pure: the caller passes the time (monotonic seconds).
"""

from __future__ import annotations

from collections import deque


class ConnectionRateLimit:
    def __init__(self, limit: int | None, window: float) -> None:
        self.limit = limit  # None: no limit
        self.window = window
        self._attempts: deque[float] = deque()

    def admit(self, now: float) -> bool:
        """Count one handshake at `now`; True when it is within the limit."""
        while self._attempts and self._attempts[0] <= now - self.window:
            self._attempts.popleft()
        self._attempts.append(now)
        return self.limit is None or len(self._attempts) <= self.limit

    def reset(self) -> None:
        self._attempts.clear()
