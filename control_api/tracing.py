"""ASGI middleware that gives every request a trace id and one access log line.

The id comes from an incoming `X-Trace-Id` (when it is a sane token) or is made here; it is returned in the
`X-Trace-Id` response header, stored in `scope["state"]`, and bound to every log line of the request, so it
follows the request into the change notice it causes.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from loguru import logger

TRACE_HEADER = b"x-trace-id"
RequestObserver = Callable[[Scope, int, float], None]
_TRACE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


def new_trace_id() -> str:
    return uuid.uuid4().hex


def trace_id_from_headers(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == TRACE_HEADER and _TRACE_ID.match(value):
            return value.decode("ascii")
    return new_trace_id()


def trace_middleware(app: ASGIApp, on_complete: RequestObserver | None = None) -> ASGIApp:
    """Trace ids, one access log line per request, and `on_complete(scope, status, seconds)` (metrics)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        trace_id = trace_id_from_headers(list(scope.get("headers", [])))
        scope.setdefault("state", {})["trace_id"] = trace_id
        status = 500
        started = time.perf_counter()

        async def send_with_trace(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (TRACE_HEADER, trace_id.encode("ascii"))]
                message = {**message, "headers": headers}
            await send(message)

        with logger.contextualize(trace_id=trace_id):
            try:
                await app(scope, receive, send_with_trace)
            finally:
                seconds = time.perf_counter() - started
                logger.bind(
                    method=scope.get("method"),
                    path=scope.get("path"),
                    key_id=scope["state"].get("key_id"),  # set by the key guard; never the key itself
                    status=status,
                    duration_ms=round(seconds * 1000, 2),
                ).info("request")
                if on_complete is not None:
                    on_complete(scope, status, seconds)

    return middleware
