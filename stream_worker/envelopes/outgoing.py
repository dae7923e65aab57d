"""What travels from the Bybit side of the worker to the publisher: one envelope and where it goes.

The publisher stamps `published_ts`, encodes the envelope and hands it to RabbitMQ; `account` decides the
delivery guarantees (persistent, confirmed, never dropped) versus market data (may be dropped, counted).
"""

from __future__ import annotations

import msgspec

from shared.enums import ChannelType
from shared.events import EventEnvelope


class Outgoing(msgspec.Struct, frozen=True, gc=False):
    """Built once per event on the hot path: a msgspec struct costs a fraction of a frozen dataclass."""

    envelope: EventEnvelope
    channel_type: ChannelType
    routing_key: str
    account: bool  # order/execution/position/balance: persistent, confirmed, retried until confirmed
    # True: `routing_key` is one service queue's name and the event goes there only, through the default
    # exchange (join and requested snapshots); on the same channel as that queue's deltas, so in order.
    direct: bool = False
