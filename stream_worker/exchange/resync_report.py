"""The `resync_incomplete` event: what a consumer of an account queue receives when the REST re-sync could not
establish the state of its channel and category. Pure: no I/O.

Event id: `resync_incomplete:{channel}:{category}:{reason}:{gap start}:{n}`, where `n` counts this worker's
status events, so two announcements are never mistaken for duplicates.
"""

from __future__ import annotations

from shared.events import EventEnvelope
from shared.payloads import ResyncIncomplete
from shared.routing import event_routing_key
from stream_worker.envelopes.event_ids import id_part
from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.exchange.resync import Shortfall

EVENT_TYPE = "resync_incomplete"


def incomplete_event(
    shortfall: Shortfall,
    *,
    since_ms: int | None,
    retry_in_s: float | None,
    received_ms: int,
    trace_id: str,
    sequence: int,
) -> Outgoing:
    channel, category = shortfall.channel, shortfall.category
    envelope = EventEnvelope(
        event_id=f"{EVENT_TYPE}:{channel.value}:{category}:{shortfall.reason}:{id_part(since_ms)}:{sequence}",
        event_type=EVENT_TYPE,
        category=category,
        symbol=None,
        topic=channel.value,
        exchange_ts=None,
        received_ts=received_ms,
        published_ts=0,
        trace_id=trace_id,
        payload=ResyncIncomplete(
            reason=shortfall.reason, detail=shortfall.detail, since_ms=since_ms, retry_in_s=retry_in_s
        ),
    )
    return Outgoing(envelope, channel, event_routing_key(channel, category), account=True)
