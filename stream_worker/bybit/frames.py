"""Bybit v5 WebSocket frames on the wire: the tolerant inbound view, its classification, and outbound ops.

Inbound frames decode once into `Frame`, a struct whose every field is optional, so one `msgspec` pass reads
any frame and the caller classifies on what is present (PROTOCOL.md §2). Unknown fields are ignored; a data
push keeps its payload as `msgspec.Raw` for a channel decoder later. Field types are still checked: a `topic`
that is not a string is a malformed frame, not a push.

No I/O, no clock, no logging here. Secrets pass through `encode_auth` into the frame text and nowhere else.
"""

from __future__ import annotations

import enum

import msgspec

NO_DATA = msgspec.Raw(b"null")
"""`Frame.data` when the frame had no `data` key."""

BARE_PONGS = frozenset({"pong", b"pong"})
"""A bare text frame `pong`: nautilus tolerates one; whether Bybit sends it is unconfirmed (§2)."""

_EXCERPT = 500


class Frame(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Any inbound frame: data-push envelope fields first, then control fields. Everything optional."""

    topic: str | None = None
    type: str | None = None
    # Epoch ms and sequence numbers are numbers on the wire, but one docs note writes `ts` as a string (§11);
    # all three accept the numeric-string form alike, so a string `cts` cannot stall every book (AUDIT C2).
    ts: int | str | None = None
    cts: int | str | None = None
    cs: int | str | None = None
    id: str | None = None
    creation_time: int | None = msgspec.field(default=None, name="creationTime")
    data: msgspec.Raw = NO_DATA

    op: str | None = None
    success: bool | None = None
    ret_msg: str | None = None
    req_id: str | None = None
    conn_id: str | None = None
    ret_code: int | None = msgspec.field(default=None, name="retCode")  # order-entry naming (§3.2, §10)
    ret_msg_camel: str | None = msgspec.field(default=None, name="retMsg")


FRAMES = msgspec.json.Decoder(Frame)


class Control(enum.Enum):
    """What a frame without a `topic` is, decided in PROTOCOL.md §2 order."""

    PONG = "pong"
    AUTH_ACK = "auth_ack"
    OP_ACK = "op_ack"
    COMMAND_RESP = "command_resp"
    ORDER_ENTRY = "order_entry"
    UNKNOWN = "unknown"


def classify_control(frame: Frame) -> Control:
    """Place a frame that has no `topic`. Spot/linear/inverse pongs carry `op: "ping"`, hence `ret_msg`."""
    op = frame.op
    if op == "pong" or frame.ret_msg == "pong":
        return Control.PONG
    if op == "auth":
        return Control.AUTH_ACK
    if op in ("subscribe", "unsubscribe"):
        return Control.OP_ACK
    kind = frame.type
    if kind == "COMMAND_RESP":
        return Control.COMMAND_RESP
    if kind == "AUTH_RESP":
        return Control.AUTH_ACK
    if frame.ret_code is not None:
        return Control.ORDER_ENTRY
    return Control.UNKNOWN


def succeeded(frame: Frame) -> bool:
    """An ack's verdict: `success`, or `retCode == 0` in the order-entry style that has no `success`."""
    if frame.success is not None:
        return frame.success
    return frame.ret_code == 0


def reason(frame: Frame) -> str:
    """Bybit's own words for an ack, verbatim (`ret_msg`, or `retMsg` in the order-entry style)."""
    return frame.ret_msg or frame.ret_msg_camel or ""


def parse_ts(value: int | str | None, name: str = "ts") -> int | None:
    """`ts`, `cts` or `cs` as an int. Accepts the numeric-string form; raises ValueError for any other string."""
    if value is None or isinstance(value, int):
        return value
    if value.isascii() and value.isdigit():
        return int(value)
    raise ValueError(f"{name} is not a whole number: {value!r}")


class _TopicOnly(msgspec.Struct, frozen=True, gc=False):
    topic: str | None = None


_TOPIC_ONLY = msgspec.json.Decoder(_TopicOnly)


def topic_of(text: str | bytes) -> str | None:
    """The `topic` of a frame that did not decode as a `Frame` (a field of the wrong type), if it has one.

    A push whose envelope is unreadable may still say which book or ticker it belonged to, and that state can
    no longer be trusted: the caller invalidates it rather than letting the frame vanish.
    """
    try:
        return _TOPIC_ONLY.decode(text).topic
    except msgspec.DecodeError:
        return None


class CommandResult(msgspec.Struct, frozen=True, kw_only=True):
    """`data` of an option `COMMAND_RESP` ack: topics that took and topics that did not (§2.1)."""

    success_topics: tuple[str, ...] = msgspec.field(default=(), name="successTopics")
    fail_topics: tuple[str, ...] = msgspec.field(default=(), name="failTopics")


_COMMAND_RESULTS = msgspec.json.Decoder(CommandResult)


def read_command_result(data: msgspec.Raw) -> CommandResult:
    """Decode a `COMMAND_RESP` payload. Raises `msgspec.DecodeError` if it is not the documented shape."""
    return _COMMAND_RESULTS.decode(data)


def describe_decode_error(error: msgspec.DecodeError) -> str:
    """A short, stable kind for an unreadable frame: `invalid_json`, `not_an_object` or `bad_<field>`."""
    if not isinstance(error, msgspec.ValidationError):
        return "invalid_json"
    message = str(error)
    marker = " - at `$."
    at = message.rfind(marker)
    if at < 0:
        return "not_an_object"
    path = message[at + len(marker) :].rstrip("`")
    field = path.split(".", 1)[0].split("[", 1)[0]
    return f"bad_{field}"


def excerpt(text: str | bytes, limit: int = _EXCERPT) -> str:
    """The start of a frame for an event or a log line, never the whole of a huge one."""
    if isinstance(text, bytes | bytearray | memoryview):
        text = bytes(text[: limit * 4]).decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "…"


class _Op(msgspec.Struct, frozen=True, kw_only=True):
    req_id: str
    op: str
    args: tuple[str, ...]


class _Auth(msgspec.Struct, frozen=True, kw_only=True):
    req_id: str
    op: str
    args: tuple[str, int, str]


class _Ping(msgspec.Struct, frozen=True, kw_only=True):
    req_id: str
    op: str


_ENCODER = msgspec.json.Encoder()


def encode_op(op: str, req_id: str, topic: str) -> str:
    """A one-topic `subscribe` or `unsubscribe` request (§5.1)."""
    return _ENCODER.encode(_Op(req_id=req_id, op=op, args=(topic,))).decode()


def encode_auth(req_id: str, api_key: str, expires_ms: int, signature: str) -> str:
    """The auth request; `expires` is a JSON number (§3.1)."""
    return _ENCODER.encode(_Auth(req_id=req_id, op="auth", args=(api_key, expires_ms, signature))).decode()


def encode_ping(req_id: str) -> str:
    """The JSON heartbeat; protocol-level pings do not count as activity for Bybit (§1.5, §4.1)."""
    return _ENCODER.encode(_Ping(req_id=req_id, op="ping")).decode()
