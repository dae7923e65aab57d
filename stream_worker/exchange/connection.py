"""The shell around one Bybit socket: connect, feed frames to the core, write what it queues, reconnect.

Boring on purpose: every protocol decision is in `bybit/protocol.py`. One supervised loop per socket; it
idles without a socket while nothing is wanted, reconnects with capped full-jitter backoff, and ends a
session when the socket closes or the core says it is dead, its auth was rejected or an ack never came.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import websockets
from loguru import logger
from websockets.asyncio.client import connect

from shared.backoff import Backoff, EscalatingBackoff
from shared.enums import Endpoint
from shared.tasks import until_first_ends
from stream_worker.bybit.events import AckTimeout, AuthRejected, Dead, Event
from stream_worker.bybit.protocol import BybitProtocol
from stream_worker.exchange.capture import SocketCapture
from stream_worker.exchange.socket_inbox import InboxConnection

TICK_SECONDS = 0.5  # how often the core's timers (ping due, dead socket, ack timeout) are checked
# A session that stayed up this long was healthy: the next reconnect starts from the first backoff step.
HEALTHY_SESSION_SECONDS = 30.0
IDLE = "idle"  # the session's end reason when an extra socket closes because it carries nothing

EventHandler = Callable[[Endpoint, Event], Awaitable[None]]
ConnectedHandler = Callable[[Endpoint], None]
# Awaited before every connect attempt: returns once a shared budget (Bybit counts new connections per IP and
# domain, rate-limit.mdx) lets this socket open one.
Admission = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    open_timeout: float = 10.0
    close_timeout: float = 5.0
    backoff_first: float = 0.5
    backoff_cap: float = 30.0
    # Failing on and on raises the cap up to this multiple of backoff_cap (rate-limit.mdx: connects are budgeted).
    backoff_escalation: float = 10.0
    auth_backoff_first: float = 5.0  # a rejected key must never hot-loop (PROTOCOL.md rule 3)
    max_frame_bytes: int = 4 * 1024 * 1024
    compression: bool = False  # Bybit is not known to negotiate deflate; it costs ~25 % of throughput


class SessionEnded(Exception):
    """The core asked for this socket to be closed; the reason goes to the log and the counters."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Connection:
    """One Bybit socket slot (e.g. public linear), reused across reconnects."""

    def __init__(
        self,
        protocol: BybitProtocol,
        url: str,
        on_event: EventHandler,
        *,
        on_connected: ConnectedHandler | None = None,
        settings: ConnectionSettings | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        capture: SocketCapture | None = None,
        admit: Admission | None = None,
        close_when_idle: bool = False,
    ) -> None:
        self.protocol = protocol
        self._admit = admit
        # An extra socket of a sharded category closes once it carries nothing, instead of idling open.
        self._close_when_idle = close_when_idle
        self._capture = capture  # WS_GATEWAY_CAPTURE_DIR: every frame in and out, for replay
        self.endpoint = protocol.endpoint
        self.url = url
        self._on_event = on_event
        self._on_connected = on_connected
        self._settings = settings or ConnectionSettings()
        rng = rng or random.Random()
        self._backoff = EscalatingBackoff(
            self._settings.backoff_first, self._settings.backoff_cap, rng, escalation=self._settings.backoff_escalation
        )
        self._auth_backoff = Backoff(self._settings.auth_backoff_first, self._settings.backoff_cap * 4, rng)
        self._sleep = sleep
        self._clock = clock
        self._wall = wall
        self._wake = asyncio.Event()
        self._wanted_changed = asyncio.Event()
        self.connects = 0
        self.reconnects = 0
        self.auth_failures = 0
        self.last_end_reason: str | None = None
        self.connected_since: float | None = None
        # Bybit's id of the current (or, once closed, the last) socket: its support asks for it (§2.1).
        self.conn_id: str | None = None

    # -- desired topics: called by the worker's reconciler -------------------------------------------------

    def want(self, topic: str) -> None:
        self.protocol.want(topic)
        self._wanted_changed.set()
        self._wake.set()

    def unwant(self, topic: str) -> None:
        self.protocol.unwant(topic)
        self._wanted_changed.set()
        self._wake.set()

    def resubscribe(self, topic: str) -> None:
        self.protocol.resubscribe(topic)
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self.connected_since is not None

    # -- the supervised loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self._wait_until_wanted()
            if self._admit is not None:
                await self._admit()
            try:
                socket = await connect(
                    self.url,
                    open_timeout=self._settings.open_timeout,
                    close_timeout=self._settings.close_timeout,
                    max_size=self._settings.max_frame_bytes,
                    compression="deflate" if self._settings.compression else None,
                    ping_interval=None,  # Bybit needs JSON pings (PROTOCOL.md §1.5); the core sends them
                    create_connection=InboxConnection,  # every message of a read in one await, not one each
                )
            except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as error:
                reason = f"connect failed: {type(error).__name__}"
                self.conn_id = None
                await self._pause(reason, self._backoff)
                continue
            assert isinstance(socket, InboxConnection)
            self.connects += 1
            if self.connects > 1:
                self.reconnects += 1
            reason = await self._session(socket)
            self.last_end_reason = reason
            if reason == IDLE:
                continue  # nothing to carry: no backoff, wait until something is wanted again
            if reason == "auth rejected":
                self.auth_failures += 1
                await self._pause(reason, self._auth_backoff)
            else:
                await self._pause(reason, self._backoff)

    async def _wait_until_wanted(self) -> None:
        while not self.protocol.wanted:
            self._wanted_changed.clear()
            await self._wanted_changed.wait()

    async def _pause(self, reason: str, backoff: Backoff) -> None:
        delay = backoff.next_delay()
        logger.bind(
            endpoint=self.endpoint.value, reason=reason, retry_in_s=round(delay, 2), conn_id=self.conn_id
        ).warning("bybit socket down; reconnecting")
        await self._sleep(delay)

    async def _session(self, socket: InboxConnection) -> str:
        started = self._clock()
        self.connected_since = started
        self.conn_id = None
        if self._capture is not None:
            self._capture.opened()
        self.protocol.connection_made(started, int(self._wall() * 1000))
        logger.bind(endpoint=self.endpoint.value, connects=self.connects).info("bybit socket connected")
        if self._on_connected is not None:
            self._on_connected(self.endpoint)  # anything missed while we were away: re-read the desired set
        reason = "closed by server"
        try:
            ended = await until_first_ends(
                {f"{self.endpoint}-read": self._read(socket), f"{self.endpoint}-pump": self._pump(socket)}
            )
            reason = _end_reason(ended)
        finally:
            self.connected_since = None
            if self._capture is not None:
                self._capture.closed(reason, self.conn_id)
            self.protocol.connection_lost()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._settings.close_timeout):
                    await socket.close()
        if self._clock() - started >= HEALTHY_SESSION_SECONDS:
            self._backoff.reset()
        if reason != "auth rejected":
            self._auth_backoff.reset()
        return reason

    async def _read(self, socket: InboxConnection) -> None:
        capture, protocol = self._capture, self.protocol
        while True:
            try:
                messages = await socket.wait_messages()
            except websockets.ConnectionClosedOK:
                raise SessionEnded("closed by server") from None
            now = self._clock()  # one read: the messages arrived together
            for message in messages:
                if capture is not None:
                    capture.received(message)
                events = protocol.receive(message, now)
                if events:
                    if self.conn_id is None and protocol.conn_id is not None:
                        # Learned from the reply to our first ping, a few ms after the connect line above.
                        self.conn_id = protocol.conn_id
                        logger.bind(endpoint=self.endpoint.value, connects=self.connects, conn_id=self.conn_id).info(
                            "bybit socket identified"
                        )
                    await self._dispatch(events)
            if protocol.has_frames_to_send:  # acks trigger follow-up ops: send them without a tick's delay
                self._wake.set()

    async def _pump(self, socket: InboxConnection) -> None:
        while True:
            if self._close_when_idle and not self.protocol.wanted and not self.protocol.pending:
                raise SessionEnded(IDLE)
            await self._send_queued(socket)
            events = self.protocol.tick(self._clock())
            if events:
                await self._dispatch(events)
            await self._send_queued(socket)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_SECONDS):
                    await self._wake.wait()

    async def _send_queued(self, socket: InboxConnection) -> None:
        for frame in self.protocol.frames_to_send():
            if self._capture is not None:
                self._capture.sent(frame)
            await socket.send(frame)

    async def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            match event:
                case Dead(reason=reason):
                    raise SessionEnded(f"dead: {reason}")
                case AuthRejected():
                    await self._on_event(self.endpoint, event)
                    raise SessionEnded("auth rejected")
                case AckTimeout(op=op):
                    raise SessionEnded(f"no ack for {op}")
                case _:
                    await self._on_event(self.endpoint, event)


def _end_reason(error: BaseException | None) -> str:
    """Why a session ended, from what its first finished child raised; anything unexpected is re-raised."""
    match error:
        case SessionEnded(reason=reason):
            return reason
        case websockets.ConnectionClosed(rcvd=rcvd, sent=sent):
            # The server's close frame, or ours (e.g. 1009 when a frame exceeds max_frame_bytes).
            frame = rcvd or sent
            return f"closed ({frame.code})" if frame is not None else "connection lost"
        case OSError():
            return "connection lost"
        case None:
            return "closed by server"
        case _:
            raise error
