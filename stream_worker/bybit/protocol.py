"""The sans-I/O Bybit v5 WebSocket client: text and the time in, events and frames to send out.

One `BybitProtocol` per socket slot, reused across reconnects. It never awaits, never reads a clock (callers
pass `now`, monotonic seconds, and `wall_ms`, epoch milliseconds, for auth `expires`), never logs and never
touches a socket. The shell feeds every inbound frame to `receive`, calls `tick` on a timer, and writes out
`frames_to_send()` after every call.

Invariants (each public method leaves them true):
- `wanted` is the desired set and survives reconnects; `subscribed` and everything in flight belong to the
  current socket and are emptied by `connection_made` and `connection_lost`.
- At most one op (subscribe or unsubscribe) is in flight per topic, one topic per request. So no topic is
  ever subscribed twice, and `req_id` (the topic itself when it fits in 36 characters) names one op.
- A topic is only sent once the socket is ready: connected, and on the private stream authenticated.
- When no op is in flight for a topic, it is subscribed iff it is wanted and not parked as failed; an ack
  that leaves it otherwise queues the op that fixes it (so an unwant during a subscribe ends unsubscribed).
- At most `window` ops are in flight on a socket. A topic whose op cannot go out yet waits in order and goes out
  as an ack frees a slot; its ack clock starts when it is sent. After a reconnect every wanted topic would
  otherwise go out in one burst, and one late ack among hundreds would recycle the whole socket, again and again.
- A rejected subscribe parks the topic in `failed` with Bybit's reason. It is not retried, not even after a
  reconnect, until someone asks again: `unwant` then `want`, or `resubscribe`. Bybit rejects bad names and
  unknown symbols the same way every time, and a rejection may disturb the socket's other topics (§5.3).

Over 400 lines on purpose: every method keeps the invariants below (ops in flight, the subscribe window,
auth, the ping schedule); split, they would be stated in one file and kept in another.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from shared.enums import Endpoint
from stream_worker.bybit.events import (
    AckTimeout,
    Authenticated,
    AuthRejected,
    Dead,
    Event,
    Malformed,
    Pong,
    Push,
    Subscribed,
    SubscribeRejected,
    Unknown,
    Unsubscribed,
)
from stream_worker.bybit.frames import (
    BARE_PONGS,
    FRAMES,
    Control,
    Frame,
    classify_control,
    describe_decode_error,
    encode_auth,
    encode_op,
    encode_ping,
    excerpt,
    parse_ts,
    read_command_result,
    reason,
    succeeded,
    topic_of,
)
from stream_worker.bybit.signing import Credentials, auth_signature

SUBSCRIBE = "subscribe"
UNSUBSCRIBE = "unsubscribe"
AUTH = "auth"
AUTH_REQ_ID = "auth"
MAX_REQ_ID = 36  # the documented order-entry limit; we keep to it everywhere (§5.1)
ALREADY_SUBSCRIBED = "already subscribed"  # the one ret_msg we act on: the topic is live (§5.3)


class AuthState(enum.Enum):
    NOT_NEEDED = "not_needed"  # public stream
    DISCONNECTED = "disconnected"
    PENDING = "pending"
    OK = "ok"
    REJECTED = "rejected"  # terminal for this socket: the shell closes it and backs off


@dataclass(slots=True)
class _InFlight:
    op: str
    topic: str
    sent_at: float | None  # stamped by the next tick when queued from a call that has no clock
    timed_out: bool = False


class BybitProtocol:
    """Subscriptions, auth, heartbeat and liveness for one Bybit socket, without I/O."""

    def __init__(
        self,
        *,
        endpoint: Endpoint,
        credentials: Credentials | None = None,
        ping_interval: float = 20.0,
        dead_after: float = 40.0,
        ack_timeout: float = 10.0,
        auth_expiry_ms: int = 10_000,
        window: int = 10,
    ) -> None:
        if endpoint.private and credentials is None:
            raise ValueError("the private endpoint needs credentials")
        self._endpoint = endpoint
        self._credentials = credentials
        self._ping_interval = ping_interval
        self._dead_after = dead_after
        self._ack_timeout = ack_timeout
        self._auth_expiry_ms = auth_expiry_ms
        if window < 1:
            raise ValueError(f"the subscribe window is at least 1 op, got {window}")
        self._window = window

        self._wanted: dict[str, None] = {}  # a dict keeps the order topics were asked for
        self._failed: dict[str, str] = {}

        self._connected = False
        self._auth = AuthState.DISCONNECTED
        self._auth_sent_at: float | None = None
        self._auth_timed_out = False
        self._subscribed: set[str] = set()
        self._in_flight: dict[str, _InFlight] = {}  # req_id -> op, in the order sent
        self._req_of_topic: dict[str, str] = {}
        # Topics whose op waits for a free slot, in the order they were due; True: a resubscribe was asked.
        self._waiting: dict[str, bool] = {}
        self._outbox: list[str] = []
        self._last_received: float | None = None
        self._next_ping_at = 0.0
        self._dead_reported = False
        self._pings = 0
        self._long_ids = 0
        self._conn_id: str | None = None

    # -- read-only views for the shell and health ------------------------------------------------------

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def authenticated(self) -> bool:
        """True once the private socket's auth was accepted; always False on a public stream."""
        return self._auth is AuthState.OK

    @property
    def ready(self) -> bool:
        """Connected, and authenticated where that is needed: subscribes can go out."""
        return self._connected and self._auth in (AuthState.OK, AuthState.NOT_NEEDED)

    @property
    def wanted(self) -> frozenset[str]:
        return frozenset(self._wanted)

    def is_wanted(self, topic: str) -> bool:
        """`topic in wanted` without copying the set: asked for every push."""
        return topic in self._wanted

    @property
    def subscribed(self) -> frozenset[str]:
        return frozenset(self._subscribed)

    @property
    def pending(self) -> frozenset[str]:
        """Topics with a subscribe or unsubscribe in flight on this socket."""
        return frozenset(self._req_of_topic)

    @property
    def queued(self) -> int:
        """Topics whose op waits for a free slot in the subscribe window."""
        return len(self._waiting)

    @property
    def failed(self) -> Mapping[str, str]:
        """Wanted topics Bybit rejected, with its reason verbatim; parked until asked for again."""
        return dict(self._failed)

    @property
    def conn_id(self) -> str | None:
        """Bybit's id of the current socket, from the first reply that carried one (§2.1); None until then."""
        return self._conn_id

    @property
    def last_received(self) -> float | None:
        """`now` of the last inbound frame of any kind (or of the connect), None before the first socket."""
        return self._last_received

    # -- socket lifecycle -------------------------------------------------------------------------------

    def connection_made(self, now: float, wall_ms: int) -> None:
        """A new socket is open: forget the old one's state, then auth or subscribe, and ping early."""
        self._reset_socket()
        self._connected = True
        self._last_received = now
        if self._endpoint.private:
            credentials = self._credentials
            if credentials is None:  # unreachable: __init__ refuses a private endpoint without them
                raise RuntimeError("the private endpoint needs credentials")
            expires = wall_ms + self._auth_expiry_ms
            signature = auth_signature(credentials.api_secret, expires)
            self._outbox.append(encode_auth(AUTH_REQ_ID, credentials.api_key, expires, signature))
            self._auth = AuthState.PENDING
            self._auth_sent_at = now
        else:
            self._auth = AuthState.NOT_NEEDED
        # Option sockets are dropped quickly without an early JSON ping (§12), so every socket gets one now.
        self._queue_ping(now)
        self._sync_all(now)

    def connection_lost(self) -> None:
        """The socket is gone: every subscribed topic is back to wanted-but-not-subscribed."""
        self._reset_socket()

    def _reset_socket(self) -> None:
        self._connected = False
        self._auth = AuthState.DISCONNECTED
        self._auth_sent_at = None
        self._auth_timed_out = False
        self._subscribed.clear()
        self._in_flight.clear()
        self._req_of_topic.clear()
        self._waiting.clear()
        self._outbox.clear()  # frames meant for the old socket must never reach the new one
        self._dead_reported = False
        self._conn_id = None

    # -- desired state ----------------------------------------------------------------------------------

    def want(self, topic: str) -> None:
        """Add a topic to the desired set; subscribes when the socket is ready. A no-op if already wanted.

        Wanting a topic again does not retry a rejected one, so a caller that re-asserts its whole desired
        set cannot turn a bad topic into a subscribe loop. `unwant` + `want`, or `resubscribe`, retries it.
        """
        if not topic:
            raise ValueError("a topic is a non-empty string")
        if topic in self._wanted:
            return
        self._wanted[topic] = None
        self._sync(topic)

    def unwant(self, topic: str) -> None:
        """Drop a topic from the desired set (and its rejection); unsubscribes it if it is or may be live."""
        self._wanted.pop(topic, None)
        self._failed.pop(topic, None)
        self._sync(topic)

    def resubscribe(self, topic: str) -> None:
        """Unsubscribe and subscribe a wanted topic again, for a fresh snapshot; also retries a rejected one.

        With a subscribe already in flight the snapshot is on its way, so nothing more is sent. Ignored for
        a topic that is not wanted.
        """
        if topic not in self._wanted:
            return
        self._failed.pop(topic, None)
        if not self.ready or topic in self._req_of_topic:
            return
        if len(self._in_flight) >= self._window:
            self._waiting[topic] = True
            return
        self._waiting.pop(topic, None)
        if topic in self._subscribed:
            self._send(UNSUBSCRIBE, topic)  # its ack finds the topic wanted and subscribes it again
        else:
            self._send(SUBSCRIBE, topic)

    def _sync_all(self, now: float | None) -> None:
        for topic in list(self._wanted):
            self._sync(topic, now)

    def _sync(self, topic: str, now: float | None = None) -> None:
        """Queue the one op that moves this topic toward its desired state, if it needs one and may."""
        if not self.ready or topic in self._req_of_topic:
            return
        live = topic in self._subscribed
        if topic in self._wanted and topic not in self._failed:
            op = None if live else SUBSCRIBE
        else:
            op = UNSUBSCRIBE if live else None
        if op is None:
            return
        if len(self._in_flight) >= self._window:
            self._waiting.setdefault(topic, False)
            return
        self._waiting.pop(topic, None)
        self._send(op, topic, now)

    def _send_waiting(self, now: float) -> None:
        """Slots freed: send the ops that waited for one, oldest first."""
        while self._waiting and len(self._in_flight) < self._window and self.ready:
            topic, resubscribe = next(iter(self._waiting.items()))
            del self._waiting[topic]
            if topic in self._req_of_topic:
                continue  # its own ack will re-sync it
            if resubscribe and topic in self._wanted:
                self.resubscribe(topic)
            else:
                self._sync(topic, now)

    def _send(self, op: str, topic: str, now: float | None = None) -> None:
        """Queue a one-topic op. `now` is None from calls that have no clock; the next tick stamps it."""
        if len(topic) <= MAX_REQ_ID:
            req_id = topic
        else:
            self._long_ids += 1
            req_id = f"#{self._long_ids}"  # `#` never occurs in a Bybit topic, so never collides with one
        self._in_flight[req_id] = _InFlight(op=op, topic=topic, sent_at=now)
        self._req_of_topic[topic] = req_id
        self._outbox.append(encode_op(op, req_id, topic))

    # -- inbound ----------------------------------------------------------------------------------------

    def receive(self, text: str | bytes, now: float) -> list[Event]:
        """Read one inbound frame. Never raises for anything Bybit (or a broken proxy) might send."""
        self._last_received = now  # any frame at all is proof of life (§4.3)
        try:
            frame = FRAMES.decode(text)
        except msgspec.DecodeError as error:
            if text.strip() in BARE_PONGS:
                return [Pong()]
            kind = describe_decode_error(error)
            topic = topic_of(text) if isinstance(error, msgspec.ValidationError) else None
            return [Malformed(kind=kind, detail=f"{error}: {excerpt(text, 200)}", topic=topic)]
        if frame.conn_id and self._conn_id is None:
            self._conn_id = frame.conn_id  # the first reply that carries it (pong, ack) names the socket
        topic = frame.topic
        if topic is not None:
            ts, cts, cs = frame.ts, frame.cts, frame.cs
            if isinstance(ts, str) or isinstance(cts, str) or isinstance(cs, str):
                try:
                    ts, cts, cs = parse_ts(ts), parse_ts(cts, "cts"), parse_ts(cs, "cs")
                except ValueError as error:
                    kind = f"bad_{str(error).split(' ', 1)[0]}"
                    return [Malformed(kind=kind, detail=f"{error}: {excerpt(text, 200)}", topic=topic)]
            return [
                Push(
                    topic=topic,
                    type=frame.type,
                    ts=ts,
                    cts=cts,
                    cs=cs,
                    id=frame.id,
                    creation_time=frame.creation_time,
                    data=frame.data,
                    received_at=now,
                )
            ]
        return self._receive_control(frame, text, now)

    def _receive_control(self, frame: Frame, text: str | bytes, now: float) -> list[Event]:
        match classify_control(frame):
            case Control.PONG:
                return [Pong()]
            case Control.AUTH_ACK:
                return self._auth_acked(frame, text, now)
            case Control.OP_ACK:
                return self._op_acked(frame, text, now)
            case Control.COMMAND_RESP:
                return self._command_acked(frame, text, now)
            case Control.ORDER_ENTRY:
                return [Unknown(kind="order_entry", text=excerpt(text))]
            case _:
                return [Unknown(kind="unclassified", text=excerpt(text))]

    def _auth_acked(self, frame: Frame, text: str | bytes, now: float) -> list[Event]:
        if self._auth is not AuthState.PENDING:
            return [Unknown(kind="unexpected_auth_ack", text=excerpt(text))]
        self._auth_sent_at = None
        if succeeded(frame):
            self._auth = AuthState.OK
            self._sync_all(now)
            return [Authenticated()]
        # Terminal for this socket: re-sending auth here would hot-loop on a bad key or a skewed clock (§3).
        self._auth = AuthState.REJECTED
        return [AuthRejected(reason=reason(frame) or "auth rejected without a reason", conn_id=self._conn_id)]

    def _op_acked(self, frame: Frame, text: str | bytes, now: float) -> list[Event]:
        op = frame.op
        req_id = frame.req_id
        if req_id:
            flight = self._in_flight.get(req_id)
            if flight is None or flight.op != op:
                return [Unknown(kind="unmatched_ack", text=excerpt(text))]
        else:
            # No echo (spot `args size >10`, the RPI docs example): acks come back in the order sent, so the
            # oldest op of this kind is the one acknowledged.
            req_id = next((r for r, f in self._in_flight.items() if f.op == op), None)
            if req_id is None:
                return [Unknown(kind="unmatched_ack", text=excerpt(text))]
        return self._settle(req_id, ok=succeeded(frame), why=reason(frame), now=now)

    def _command_acked(self, frame: Frame, text: str | bytes, now: float) -> list[Event]:
        # Option acks carry no op and no req_id (§2.1); one op in flight per topic makes the topic enough.
        try:
            result = read_command_result(frame.data)
        except msgspec.DecodeError as error:
            return [Malformed(kind="bad_command_resp", detail=f"{error}: {excerpt(text, 200)}")]
        why = reason(frame) or "listed in failTopics"
        verdicts = [(t, True) for t in result.success_topics] + [(t, False) for t in result.fail_topics]
        matched: dict[str, bool] = {}  # req_id -> verdict, first verdict wins, each op settled once
        for topic, ok in verdicts:
            if topic in self._req_of_topic:
                matched.setdefault(self._req_of_topic[topic], ok)
        if not matched:
            return [Unknown(kind="unmatched_ack", text=excerpt(text))]
        events: list[Event] = []
        for req_id, ok in matched.items():
            events += self._settle(req_id, ok=ok, why=why, now=now)
        return events

    def _settle(self, req_id: str, *, ok: bool, why: str, now: float) -> list[Event]:
        flight = self._in_flight.pop(req_id)
        topic = flight.topic
        del self._req_of_topic[topic]
        event: Event
        if flight.op == UNSUBSCRIBE:
            # Success or failure, the topic is not subscribed now (§5.3).
            self._subscribed.discard(topic)
            event = Unsubscribed(topic=topic)
        elif ok or ALREADY_SUBSCRIBED in why:
            self._subscribed.add(topic)
            event = Subscribed(topic=topic)
        else:
            why = why or "subscribe rejected without a reason"
            if topic in self._wanted:
                self._failed[topic] = why
            event = SubscribeRejected(topic=topic, reason=why, conn_id=self._conn_id)
        self._sync(topic, now)
        self._send_waiting(now)
        return [event]

    # -- timers -----------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Event]:
        """Queue a ping when one is due; report a dead socket and ops unacked for too long.

        After `Dead` the core stays quiet (no pings, no timeouts) until the next `connection_made`.
        """
        if not self._connected:
            return []
        if self._last_received is not None and now - self._last_received >= self._dead_after:
            if self._dead_reported:
                return []
            self._dead_reported = True
            silent = now - self._last_received
            return [Dead(reason=f"nothing received for {silent:.1f} s (dead_after={self._dead_after} s)")]
        if now >= self._next_ping_at:
            self._queue_ping(now)
        events: list[Event] = []
        auth_sent_at = self._auth_sent_at
        if (
            self._auth is AuthState.PENDING
            and auth_sent_at is not None
            and not self._auth_timed_out
            and now - auth_sent_at >= self._ack_timeout
        ):
            self._auth_timed_out = True
            events.append(AckTimeout(op=AUTH, topics=()))
        for flight in self._in_flight.values():
            if flight.sent_at is None:
                flight.sent_at = now
            elif not flight.timed_out and now - flight.sent_at >= self._ack_timeout:
                flight.timed_out = True
                events.append(AckTimeout(op=flight.op, topics=(flight.topic,)))
        return events

    def _queue_ping(self, now: float) -> None:
        self._pings += 1
        self._outbox.append(encode_ping(str(self._pings)))
        self._next_ping_at = now + self._ping_interval

    # -- outbound ---------------------------------------------------------------------------------------

    @property
    def has_frames_to_send(self) -> bool:
        return bool(self._outbox)

    def frames_to_send(self) -> list[str]:
        """Everything queued since the last call, in order; the shell writes each as one text frame."""
        frames, self._outbox = self._outbox, []
        return frames
