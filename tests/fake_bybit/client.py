"""A bare test client for the fake: send JSON, receive JSON, wait for a matching frame with a deadline.

Deliberately naive (no reconnects, no pings of its own) so tests see exactly what the fake sends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

JsonObject = dict[str, Any]


class FakeClient:
    # Every receive takes a `timeout` (ASYNC109): a test must never block forever on a silent fake.

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[JsonObject] = []  # every frame read so far, in order

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str, **options: Any) -> AsyncIterator[FakeClient]:
        options.setdefault("compression", None)
        options.setdefault("ping_interval", None)
        async with connect(url, **options) as ws:
            yield cls(ws)

    async def send(self, message: JsonObject | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def recv(self, timeout: float = 5.0) -> JsonObject:
        async with asyncio.timeout(timeout):
            raw = await self.ws.recv()
        message: JsonObject = json.loads(raw)
        self.received.append(message)
        return message

    async def recv_until(self, predicate: Callable[[JsonObject], bool], timeout: float = 5.0) -> JsonObject:
        """Read frames until one matches `predicate`; the ones skipped stay in `received`."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.recv(timeout)
                if predicate(message):
                    return message

    async def drain(self, quiet: float = 0.3) -> list[JsonObject]:
        """Read until nothing arrives for `quiet` seconds; returns what was read. For proving silence."""
        drained: list[JsonObject] = []
        while True:
            try:
                drained.append(await self.recv(quiet))
            except TimeoutError:
                return drained

    async def reply(self, timeout: float = 5.0) -> JsonObject:
        """The next control frame (ack, pong, error), skipping data pushes."""
        return await self.recv_until(lambda message: "topic" not in message, timeout)

    async def push(self, topic: str, timeout: float = 5.0) -> JsonObject:
        """The next data push on `topic`."""
        return await self.recv_until(lambda message: message.get("topic") == topic, timeout)

    async def request(self, op: str, args: list[Any] | None = None, req_id: str | None = None) -> JsonObject:
        """Send an op and return the next control frame."""
        message: JsonObject = {"op": op}
        if req_id is not None:
            message["req_id"] = req_id
        if args is not None:
            message["args"] = args
        await self.send(message)
        return await self.reply()
