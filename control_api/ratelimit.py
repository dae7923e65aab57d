"""Per-key rate limit on write endpoints: a token bucket per API key, in process memory.

A runaway client (a retry loop, a bug) must not flood the desired state or the command exchange. Reads are
not limited. Each API replica keeps its own buckets, so the effective limit is per key per replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from control_api.errors import BadRequest, RateLimited
from control_api.security import scope_of_request

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class WriteRateLimiter:
    def __init__(self, rate_per_second: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate_per_second
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def retry_after(self, key: str) -> float | None:
        """Take one token for `key`; None if allowed, else the seconds until a token is available."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=self._burst, updated=now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / self._rate


def limit_writes(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: runs after the key check, so the key is a valid one; buckets are kept by key id."""
    if connection.scope.get("method") not in WRITE_METHODS:
        return
    limiter: WriteRateLimiter = connection.app.state.write_limiter
    wait = limiter.retry_after(scope_of_request(connection).key_id)
    if wait is not None:
        raise RateLimited(
            "too many write requests for this API key", {"retry_after_s": round(wait, 3)}, retry_after=wait
        )


def reject_unknown_query(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Guard: a query parameter the route does not take is an error, not silently ignored (typos like
    `?service=` would otherwise return everything)."""
    known = set(handler.parsed_fn_signature.parameters)
    unknown = sorted(set(connection.query_params) - known)
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)}", {"unknown": unknown})
    # PostgreSQL text cannot hold NUL: such a filter can match nothing, and passed on it would fail as a 500.
    with_nul = sorted({name for name, value in connection.query_params.items() if "\x00" in value})
    if with_nul:
        raise BadRequest(f"query parameter(s) contain a NUL character: {', '.join(with_nul)}", {"fields": with_nul})
