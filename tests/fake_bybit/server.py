"""FakeBybit: a local Bybit v5 WebSocket server for tests (PROTOCOL.md §13), with hooks to misbehave.

Serves `/v5/public/{spot,linear,inverse,option}` and `/v5/private` on 127.0.0.1. One market stream per
(category, topic) is shared by every connection subscribed to it, as on Bybit where `u` is per topic.
A push loop advances the streams (unless `auto_push=False`, when tests drive them with `advance`).
Never used by production code; nothing here reads the environment except the samples path default.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from tests.fake_bybit import replies, rest, topics
from tests.fake_bybit.account import AccountFactory
from tests.fake_bybit.auth import check_auth
from tests.fake_bybit.books import BookFault
from tests.fake_bybit.connections import AuthAttempt, ConnectionRecord
from tests.fake_bybit.feed import MarketFeed
from tests.fake_bybit.ledger import AccountLedger
from tests.fake_bybit.limits import ConnectionRateLimit
from tests.fake_bybit.market import MarketStream
from tests.fake_bybit.samples import Samples
from tests.fake_bybit.session import Session
from tests.fake_bybit.subscriptions import refuse_subscribe, refuse_unsubscribe, topic_args
from tests.fake_bybit.topics import Category, Endpoint

JsonObject = dict[str, Any]

_PATHS: dict[str, Endpoint] = {f"/v5/public/{category}": category for category in topics.PUBLIC_CATEGORIES}
_PATHS["/v5/private"] = "private"
_MAX_ACTIVE_TIME = re.compile(r"^(\d+)([sm])$")


class FakeBybitError(Exception):
    """The fake broke (an exception escaped a connection handler or the push loop): a bug in the fake."""


class FakeBybit:
    """A fake Bybit v5 WebSocket server. `async with FakeBybit(...) as fake:` then connect to `fake.url`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        accounts: Mapping[str, str] | None = None,
        samples_dir: Path | None = None,
        seed: int = 0,
        auto_push: bool = True,
        push_interval: float = 0.05,
        level1_repeat_interval: float | None = 3.0,
        private_idle_timeout: float | None = 600.0,
        public_idle_timeout: float | None = None,
        honour_max_active_time: bool = True,
        close_on_auth_failure: bool = False,
        max_args_chars: int | None = topics.PUBLIC_MAX_ARGS_CHARS,
        max_option_topics: int | None = topics.OPTION_MAX_TOPICS,
        max_new_connections: int | None = 500,
        connection_window: float = 300.0,
        ack_delay: float = 0.0,
        execution_retention_ms: int = rest.WEEK_MS,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port = host, port
        self.accounts: dict[str, str] = dict(accounts or {})
        self.samples = Samples(samples_dir)
        self.seed = seed
        self.auto_push = auto_push
        self.push_interval = push_interval
        self.level1_repeat_interval = level1_repeat_interval
        self.private_idle_timeout = private_idle_timeout
        self.public_idle_timeout = public_idle_timeout
        self.honour_max_active_time = honour_max_active_time
        self.close_on_auth_failure = close_on_auth_failure
        # §5.2 read literally (a per-connection total) makes the option cap unreachable: 2,000 topics of at
        # least 13 characters exceed 21,000. Both caps are therefore settable; None lifts one.
        self.max_args_chars = max_args_chars
        self.max_option_topics = max_option_topics
        self._clock = clock
        self._monotonic = monotonic
        # rate-limit.mdx: "Do not establish more than 500 connections within a 5-minute window". Every handshake
        # counts, refused ones included (harsher than the docs say); past the limit the fake answers HTTP 403.
        self.connection_limit = ConnectionRateLimit(max_new_connections, connection_window)
        self.execution_retention_ms = execution_retention_ms
        self.account = AccountFactory(self.samples, random.Random(f"{seed}/account"), self.now_ms)
        self.ledger = AccountLedger()  # what the REST endpoints answer: every private push, recorded
        self._conn_ids = replies.ConnIds(random.Random(f"{seed}/conn_id"))

        # What tests read.
        self.connections: list[ConnectionRecord] = []
        self.auth_attempts: list[AuthAttempt] = []
        self.refused_handshakes = 0
        self.rate_limited_handshakes = 0
        # Exceptions that escaped a connection handler or the push loop: bugs in the fake, re-raised as
        # FakeBybitError when the `async with` block ends.
        self.errors: list[BaseException] = []

        # What tests set (directly or through the hook methods).
        self.ack_delay = ack_delay
        self._rest_banned_until = 0.0
        self._rest_throttled = 0
        self._rejections: dict[str, str] = {}
        self.subscribe_rejections = 0  # subscribe requests refused, for any reason
        self._stalled: set[Endpoint] = set()
        self._refuse_until = 0.0
        self._refuse_status = HTTPStatus.SERVICE_UNAVAILABLE

        self._sessions: list[Session] = []
        self._feed = MarketFeed(self.samples, seed, lambda: self._sessions)
        self._server: Server | None = None
        self._push_task: asyncio.Task[None] | None = None

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await serve(
            self._serve_connection,
            self.host,
            self.port,
            process_request=self._check_handshake,
            compression=None,  # Bybit's support for permessage-deflate is UNCONFIRMED (§1.5)
            ping_interval=None,  # Bybit expects clients to ping; it sends no pings of its own
            close_timeout=2,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._push_task = asyncio.create_task(self._push_loop(), name="fake bybit push loop")

    async def _push_loop(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.push_interval)
                self._feed.tick(
                    self.now_ms(),
                    auto_push=self.auto_push,
                    level1_repeat_interval=self.level1_repeat_interval,
                )
        except Exception as exc:
            self.errors.append(exc)  # a generator bug: reported by __aexit__, not lost in a dead task
            raise

    async def stop(self) -> None:
        if self._push_task is not None:
            self._push_task.cancel()
            await asyncio.gather(self._push_task, return_exceptions=True)
            self._push_task = None
        if self._server is not None:
            for session in self._sessions:
                session.record.closed_by = session.record.closed_by or "stop"
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
        if exc_type is None:
            self.raise_if_broken()

    def raise_if_broken(self) -> None:
        """Raise FakeBybitError if the fake itself failed (see `errors`); `async with` does it on exit."""
        if self.errors:
            raise FakeBybitError(f"the fake itself failed {len(self.errors)} time(s)") from self.errors[0]

    @property
    def url(self) -> str:
        """Base URL; clients append `/v5/public/{category}` or `/v5/private`."""
        return f"ws://{self.host}:{self.port}"

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # ---- handshake and connections -------------------------------------------------------------
    def _check_handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path in rest.REST_PATHS:
            return self._answer_rest(request)
        if urlsplit(request.path).path not in _PATHS:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if not self.connection_limit.admit(self._monotonic()):
            self.rate_limited_handshakes += 1
            return connection.respond(HTTPStatus.FORBIDDEN, "Forbidden\n")  # answer UNCONFIRMED (README)
        if time.monotonic() < self._refuse_until:
            self.refused_handshakes += 1
            return connection.respond(self._refuse_status, f"{self._refuse_status.phrase}\n")
        return None

    def _answer_rest(self, request: Request) -> Response:
        status = HTTPStatus.OK
        if self._monotonic() < self._rest_banned_until:
            self.ledger.requests.append(urlsplit(request.path).path)
            # rate-limit.mdx: "403, access too frequent" ... "wait for at least 10 minutes".
            status, body = HTTPStatus.FORBIDDEN, b"access too frequent"
            content_type = "text/plain"
        elif self._rest_throttled > 0:
            self._rest_throttled -= 1
            self.ledger.requests.append(urlsplit(request.path).path)
            body = rest.encode(rest.reply(rest.TOO_MANY_VISITS, "Too many visits!", {}, self.now_ms()))
            content_type = "application/json"
        else:
            code, reply = rest.handle(
                request.path,
                request.headers,
                self.accounts,
                self.ledger,
                self.now_ms(),
                execution_retention_ms=self.execution_retention_ms,
            )
            status, body, content_type = HTTPStatus(code), rest.encode(reply), "application/json"
        headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return Response(status.value, status.phrase, headers, body)

    async def _serve_connection(self, ws: ServerConnection) -> None:
        assert ws.request is not None  # set once the handshake passed _check_handshake
        parts = urlsplit(ws.request.path)
        endpoint = _PATHS[parts.path]
        record = ConnectionRecord(
            path=ws.request.path,
            category=endpoint,
            conn_id=self._conn_ids.new(endpoint),
            opened_at=time.monotonic(),
            idle_timeout=self._idle_timeout(endpoint, parts.query),
        )
        self.connections.append(record)
        session = Session(ws, record, self)
        self._sessions.append(session)
        try:
            await session.run()
        except Exception as exc:
            self.errors.append(exc)
            raise
        finally:
            self._sessions.remove(session)
            record.closed_at = time.monotonic()
            record.close_code = ws.close_code

    def _idle_timeout(self, endpoint: Endpoint, query: str) -> float | None:
        if endpoint != "private":
            return self.public_idle_timeout
        values = parse_qs(query).get("max_active_time", [])
        match = _MAX_ACTIVE_TIME.match(values[0]) if values else None
        if match is None or not self.honour_max_active_time:
            return self.private_idle_timeout
        seconds = int(match[1]) * (60 if match[2] == "m" else 1)
        return float(min(max(seconds, 30), 600))  # §1.3 range; clamping out-of-range values is UNCONFIRMED

    # ---- SessionHost: answering the client -----------------------------------------------------
    def is_stalled(self, session: Session) -> bool:
        return session.record.category in self._stalled

    def on_ping(self, session: Session, request: JsonObject) -> None:
        record = session.record
        session.send(replies.pong(record.category, record.conn_id, request.get("req_id"), self.now_ms()))

    def on_unreadable(self, session: Session, raw: str | bytes) -> None:
        record = session.record
        session.send(replies.error_reply(record.category, record.conn_id, None, None, topics.INVALID_REQUEST))

    async def on_op(self, session: Session, request: JsonObject) -> None:
        op, req_id, record = request.get("op"), request.get("req_id"), session.record
        if op in ("subscribe", "unsubscribe"):
            args = topic_args(request.get("args"))
            if args is None:
                self._ack(session, op, req_id, [], ret_msg=topics.INVALID_ARGS)
            elif op == "subscribe":
                self._subscribe(session, args, req_id)
            else:
                self._unsubscribe(session, args, req_id)
        elif op == "auth" and record.category == "private":
            if not self._authenticate(session, request.get("args"), req_id) and self.close_on_auth_failure:
                # Let the failure reply out first; a client that already left cannot drain the outbox.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2):
                        await session.flush()
                await session.close(1000, "auth failed", "auth")  # close code UNCONFIRMED (§3.2)
        else:
            session.send(replies.error_reply(record.category, record.conn_id, req_id, op, topics.INVALID_OP))

    def _ack(self, session: Session, op: str, req_id: Any, args: Sequence[str], *, ret_msg: str | None) -> None:
        record = session.record
        ack = replies.subscription_ack(
            record.category,
            op,
            record.conn_id,
            req_id,
            topics=args,
            success=ret_msg is None,
            ret_msg=ret_msg or "",
        )
        session.send(ack)

    def _subscribe(self, session: Session, args: list[str], req_id: Any) -> None:
        record = session.record
        refusal = refuse_subscribe(
            record.category,
            args,
            subscribed=record.topics,
            authenticated=record.authenticated,
            rejections=self._rejections,
            max_args_chars=self.max_args_chars,
            max_option_topics=self.max_option_topics,
        )
        self._ack(session, "subscribe", req_id, args, ret_msg=refusal)
        if refusal is not None:
            self.subscribe_rejections += 1
            return
        record.topics.update(args)
        if record.category != "private":  # §5.4: no snapshot for private topics
            self._feed.subscribed(session, record.category, args, self.now_ms())

    def _unsubscribe(self, session: Session, args: list[str], req_id: Any) -> None:
        record = session.record
        refusal = refuse_unsubscribe(record.category, args)
        self._ack(session, "unsubscribe", req_id, args, ret_msg=refusal)
        if refusal is None:
            record.topics.difference_update(args)

    def _authenticate(self, session: Session, args: Any, req_id: Any) -> bool:
        record = session.record
        if record.authenticated:
            # Re-auth on an authenticated socket: UNCONFIRMED (§3.1); order entry says "repeat auth".
            attempt_key = args[0] if isinstance(args, list) and args and isinstance(args[0], str) else None
            self._record_auth(record, attempt_key, success=False, reason=topics.REPEAT_AUTH)
            session.send(replies.auth_reply(record.conn_id, req_id, success=False, ret_msg=topics.REPEAT_AUTH))
            return True  # not an auth failure: the socket stays authenticated
        verdict = check_auth(args, self.accounts, self.now_ms())
        self._record_auth(record, verdict.api_key, success=verdict.ok, reason=verdict.reason)
        record.authenticated = verdict.ok
        ret_msg = "" if verdict.ok else topics.AUTH_FAILED
        session.send(replies.auth_reply(record.conn_id, req_id, success=verdict.ok, ret_msg=ret_msg))
        return verdict.ok

    def _record_auth(self, record: ConnectionRecord, api_key: str | None, *, success: bool, reason: str) -> None:
        self.auth_attempts.append(
            AuthAttempt(conn_id=record.conn_id, api_key=api_key, success=success, reason=reason, at=time.monotonic())
        )

    # ---- hooks: market data --------------------------------------------------------------------
    def stream(self, topic: str, *, category: Category | None = None) -> MarketStream:
        """The live stream behind `topic` (a BookStream exposes the fake's own book)."""
        return self._feed.find(topic, category)[1]

    async def advance(self, topic: str, *, category: Category | None = None, count: int = 1) -> list[JsonObject]:
        """Push the next `count` regular messages of `topic` to its subscribers (for `auto_push=False`)."""
        return self._feed.advance(topic, category, count, self.now_ms())

    async def inject_book_fault(self, topic: str, fault: BookFault, *, category: Category | None = None) -> JsonObject:
        """Push one broken order-book message now: "gap" (u skips one), "stale" (an old u), "restart"
        (snapshot with u=1), "crossed" (bid >= ask), "snapshot" (mid-stream snapshot), "empty" (delta
        without levels). Returns the message sent."""
        return self._feed.inject_fault(topic, category, fault, self.now_ms())

    def reject_topic(self, topic: str, ret_msg: str) -> None:
        """Refuse every later subscribe naming `topic` with `ret_msg` (e.g. "Invalid symbol :[...]")."""
        self._rejections[topic] = ret_msg

    def clear_rejections(self) -> None:
        self._rejections.clear()

    # ---- hooks: account data -------------------------------------------------------------------
    async def push_account(self, kind: str, **kwargs: Any) -> JsonObject:
        """Build a private push of `kind` (order, execution, execution.fast, position, wallet, greeks)
        with `self.account` and deliver it. Returns the message (all-in-one topic). The account ledger
        records it even when nobody is connected, so the REST endpoints report it: that is how a test
        makes an account change "while the gateway was away"."""
        message = self.account.build(kind, **kwargs)
        self.ledger.record(message)
        await self.push_private(message)
        return message

    async def push_private(self, message: JsonObject) -> int:
        """Deliver a private push to authenticated connections subscribed to its all-in-one topic or to
        the category form matching `data[0].category`; each copy carries the topic that connection
        subscribed. Returns how many copies went out."""
        base = str(message.get("topic", ""))
        kind = topics.all_in_one_of(base) or base
        data = message.get("data")
        category = data[0].get("category") if isinstance(data, list) and data and isinstance(data[0], dict) else None
        wanted = topics.private_topics_matching(kind, category)
        sent = 0
        for session in self._sessions:
            record = session.record
            if record.category == "private" and record.authenticated:
                for topic in sorted(wanted & record.topics):
                    sent += session.send({**message, "topic": topic}, data=True)
        return sent

    # ---- hooks: raw frames and faults ----------------------------------------------------------
    async def push(
        self, message: JsonObject | str, *, category: Endpoint | None = None, subscribed_only: bool = False
    ) -> int:
        """Send `message` (a dict, or any text, even malformed) to every open connection of `category`
        (all when None); with `subscribed_only`, only to those subscribed to `message["topic"]`."""
        if subscribed_only and not (isinstance(message, dict) and isinstance(message.get("topic"), str)):
            raise ValueError("subscribed_only needs a dict message with a topic")
        sent = 0
        for session in list(self._sessions):
            record = session.record
            if category not in (None, record.category):
                continue
            if subscribed_only and isinstance(message, dict) and message["topic"] not in record.topics:
                continue
            sent += session.send(message, data=True)
        return sent

    async def drop_connections(
        self,
        *,
        close_frame: bool = True,
        code: int = 1001,
        reason: str = "",
        category: Endpoint | None = None,
    ) -> int:
        """Close every open connection (of `category`): with a close frame, or by cutting TCP (1006)."""
        sessions = [s for s in self._sessions if category in (None, s.record.category)]
        if close_frame:
            await asyncio.gather(*(session.close(code, reason, "drop") for session in sessions))
        else:
            for session in sessions:
                session.abort("abort")
        return len(sessions)

    def stall(self, category: Endpoint | None = None) -> None:
        """Stop answering and sending anything (pongs, acks, pushes) on `category` (all when None),
        including on connections opened later, until `unstall`. Frames received meanwhile are counted
        and dropped; pushes generated meanwhile are lost. Protocol-level pongs still go out: websockets
        answers those by itself."""
        self._stalled.update([category] if category is not None else topics.ENDPOINTS)

    def stalled(self, category: Endpoint) -> bool:
        """Whether `category` is stalled now (its pushes are being lost)."""
        return category in self._stalled

    def unstall(self, category: Endpoint | None = None) -> None:
        self._stalled.difference_update([category] if category is not None else topics.ENDPOINTS)

    def mute(self, topic: str) -> None:
        """Keep acknowledging `topic` but push nothing for it (not even a subscribe's snapshot) until `unmute`."""
        self._feed.muted.add(topic)

    def unmute(self, topic: str) -> None:
        self._feed.muted.discard(topic)

    def refuse_connections(self, seconds: float, *, status: int = HTTPStatus.SERVICE_UNAVAILABLE) -> None:
        """Answer every handshake in the next `seconds` with HTTP `status` (503, 403, 502, ...)."""
        self._refuse_until = time.monotonic() + seconds
        self._refuse_status = HTTPStatus(status)

    def accept_connections(self) -> None:
        self._refuse_until = 0.0

    def ban_rest(self, seconds: float) -> None:
        """Answer every REST request in the next `seconds` with HTTP 403 "access too frequent" (an IP ban)."""
        self._rest_banned_until = self._monotonic() + seconds

    def throttle_rest(self, requests: int) -> None:
        """Answer the next `requests` REST requests with `retCode` 10006 "Too many visits!"."""
        self._rest_throttled = requests

    def delay_acks(self, seconds: float) -> None:
        """Hold every later subscribe/unsubscribe/auth (not pings) for `seconds` before acting on it and
        answering; ops of one connection wait in turn, so two subscribes take twice as long."""
        self.ack_delay = seconds

    # ---- hooks: observing ----------------------------------------------------------------------
    @property
    def open_connections(self) -> list[ConnectionRecord]:
        return [session.record for session in self._sessions]

    def subscribe_requests(self, topic: str) -> int:
        """How many subscribe frames named `topic`, over every connection ever."""
        return sum(record.subscribe_requests(topic) for record in self.connections)

    # A deadline parameter and a polling loop are the point of this helper: tests wait on conditions
    # over state the fake does not signal (counts, records), never on fixed sleeps.
    async def wait_for(self, predicate: Callable[[], object], timeout: float = 5.0) -> None:
        """Poll `predicate` until it is true; TimeoutError after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
        except TimeoutError:
            raise TimeoutError(f"condition not met within {timeout} s") from None
