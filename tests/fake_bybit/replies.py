"""The control frames the fake answers with, in each endpoint's own shape, and per-endpoint conn_ids.

Pure: no I/O. Shapes follow PROTOCOL.md §2.1 (acks), §3.2 (auth) and §4.2 (pongs), checked against
`samples/op_*.json`. Key order mimics the samples, but clients must not depend on it (§12).
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Sequence
from typing import Any

from tests.fake_bybit.topics import Endpoint

JsonObject = dict[str, Any]

_BASE32HEX = "0123456789abcdefghijklmnopqrstuv"
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


class ConnIds:
    """Makes conn_ids that look like each endpoint's (§2.1): UUID public, xid-like private, hex option."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._private_counter = itertools.count(rng.randrange(1, 36**3))

    def new(self, endpoint: Endpoint) -> str:
        rng = self._rng
        if endpoint == "private":
            # `cejreaspqfh3sjdnldmg-p`: 20 base32hex characters, a dash, a short base36 counter.
            head = "".join(rng.choice(_BASE32HEX) for _ in range(20))
            return f"{head}-{_to_base36(next(self._private_counter))}"
        if endpoint == "option":
            # `aa01fbfffe80af37-00000001-000b37b9-7147f432704fd28c-00e1c172`
            widths = (16, 8, 8, 16, 8)
            return "-".join(f"{rng.getrandbits(4 * width):0{width}x}" for width in widths)
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _to_base36(number: int) -> str:
    digits = ""
    while True:
        number, rest = divmod(number, 36)
        digits = _BASE36[rest] + digits
        if number == 0:
            return digits


def _with_req_id(reply: JsonObject, req_id: Any, *, always: bool) -> JsonObject:
    if req_id is not None:
        reply["req_id"] = req_id
    elif always:
        reply["req_id"] = ""
    return reply


def pong(endpoint: Endpoint, conn_id: str, req_id: Any, now_ms: int) -> JsonObject:
    """§4.2: spot/linear/inverse answer `op:"ping"` + `ret_msg:"pong"`; option and private `op:"pong"`."""
    if endpoint == "option":
        return {"args": [str(now_ms)], "op": "pong"}
    if endpoint == "private":
        reply = _with_req_id({}, req_id, always=False)
        reply.update({"op": "pong", "args": [str(now_ms)], "conn_id": conn_id})
        return reply
    reply = {"success": True, "ret_msg": "pong", "conn_id": conn_id}
    _with_req_id(reply, req_id, always=endpoint != "spot")
    reply["op"] = "ping"
    return reply


def auth_reply(conn_id: str, req_id: Any, *, success: bool, ret_msg: str = "") -> JsonObject:
    """§3.2: `op_auth_success*.json` / `op_auth_failure.json`; `req_id` first when the client sent one."""
    reply = _with_req_id({}, req_id, always=False)
    reply.update({"success": success, "ret_msg": ret_msg, "op": "auth", "conn_id": conn_id})
    return reply


def subscription_ack(
    endpoint: Endpoint,
    op: str,
    conn_id: str,
    req_id: Any,
    *,
    topics: Sequence[str],
    success: bool,
    ret_msg: str = "",
) -> JsonObject:
    """§2.1 ack of a subscribe or unsubscribe request.

    Option answers `COMMAND_RESP` and has no `ret_msg`; a refused option request lists every topic it
    held under `failTopics` (the fake refuses a request as a whole; UNCONFIRMED for option, §5.3).
    """
    if endpoint == "option":
        return {
            "success": success,
            "conn_id": conn_id,
            "data": {
                "failTopics": [] if success else list(topics),
                "successTopics": list(topics) if success else [],
            },
            "type": "COMMAND_RESP",
        }
    if endpoint == "private":
        reply = _with_req_id({}, req_id, always=False)
        reply.update({"success": success, "ret_msg": ret_msg, "op": op, "conn_id": conn_id})
        return reply
    if success and endpoint == "spot" and op == "subscribe":
        ret_msg = "subscribe"  # spot's success text (op_subscribe_success_spot.json)
    reply = {"success": success, "ret_msg": ret_msg, "conn_id": conn_id}
    _with_req_id(reply, req_id, always=endpoint != "spot")
    reply["op"] = op
    return reply


def error_reply(endpoint: Endpoint, conn_id: str, req_id: Any, op: Any, ret_msg: str) -> JsonObject:
    """Answer to a frame the fake cannot act on (not JSON, unknown op): UNCONFIRMED shape, §5.3."""
    reply: JsonObject = {"success": False, "ret_msg": ret_msg, "conn_id": conn_id}
    if req_id is not None:
        reply["req_id"] = req_id
    reply["op"] = op if isinstance(op, str) else ""
    return reply
