"""The envelope of every event the gateway publishes to `ws-gateway.events`.

One envelope for every event class; `payload` keeps Bybit's field names and decimal strings.
"""

from __future__ import annotations

from typing import Any

import msgspec

EVENT_SCHEMA_VERSION = 1
EVENT_CONTENT_TYPE = "application/json"


class EventEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """What a consumer receives. `event_id` is derived from Bybit's ids so duplicates can be dropped."""

    event_id: str
    event_type: str  # a channel type ("trades", "orderbook", ...) or a status type ("book_invalid")
    category: str
    symbol: str | None
    topic: str
    exchange_ts: int | None  # Bybit's ts / creationTime, UTC epoch ms
    received_ts: int  # when the frame came off the socket, UTC epoch ms
    published_ts: int  # when it was handed to RabbitMQ, UTC epoch ms
    trace_id: str
    payload: Any
    # True for state sent as a whole rather than pushed: a REST re-sync, or a snapshot for one queue that joined
    # late or asked (README, "Joining late, and asking again").
    snapshot: bool = False
    schema_version: int = EVENT_SCHEMA_VERSION


ENVELOPE_DECODER = msgspec.json.Decoder(EventEnvelope)
