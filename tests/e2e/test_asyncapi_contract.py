"""Real published envelopes match the AsyncAPI document: every message the gateway sends to a service's queues,
market and account, validates against its message's schema and decodes into the document's structs."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import msgspec

from control_api.asyncapi import BYBIT_SHAPED, EVENT_TYPES, asyncapi_document
from shared.enums import ChannelType
from shared.events import EventEnvelope
from shared.payloads import convert_payload
from shared.routing import service_queue
from stream_worker.worker import Worker
from tests.e2e.conftest import Inbox, consuming, delete_queues
from tests.fake_bybit import FakeBybit
from tests.support import json_schema
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"
BOOK_TOPIC = "orderbook.50.BTCUSDT"
SUBSCRIPTIONS: dict[ChannelType, dict[str, Any]] = {
    ChannelType.TRADES: {"symbol": "BTCUSDT"},
    ChannelType.TICKER: {"symbol": "BTCUSDT"},
    ChannelType.ORDERBOOK: {"symbol": "BTCUSDT", "depth": 50},
    ChannelType.KLINE: {"symbol": "BTCUSDT", "interval": "1"},
    ChannelType.ORDER: {"category": "linear"},
    ChannelType.BALANCE: {},
}


def typed_envelope(payload: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """`EventEnvelope` with `payload` typed as the class's payload struct, built from the envelope's own fields."""
    fields: list[Any] = []
    for info in msgspec.structs.fields(EventEnvelope):
        kind = payload if info.name == "payload" else info.type
        fields.append((info.name, kind) if info.required else (info.name, kind, info.default))
    return msgspec.defstruct(
        f"{payload.__name__}Envelope", fields, frozen=True, kw_only=True, forbid_unknown_fields=True
    )


def schema_errors(event_type: str, body: bytes) -> list[str]:
    document = asyncapi_document()
    (message,) = (m for m in document["components"]["messages"].values() if m["name"] == event_type)
    return json_schema.errors(message["payload"], msgspec.json.decode(body), document)


def decode_typed(channel_type: ChannelType, event_type: str, body: bytes) -> msgspec.Struct:
    payload = EVENT_TYPES[channel_type][event_type]
    envelope_type = typed_envelope(payload)
    if payload.__name__ in BYBIT_SHAPED:
        # Bybit's data object as sent ("" for no value, times in strings): read the documented lax way.
        return convert_payload(envelope_type, msgspec.json.decode(body))
    return msgspec.json.decode(body, type=envelope_type)  # our own payloads decode strictly


def private_ready(worker: Worker, *topics: str) -> bool:
    connection = worker.connections[next(e for e in worker.connections if e.private)]
    return all(topic in connection.protocol.subscribed for topic in topics)


async def test_published_envelopes_of_every_subscribed_class_validate_against_the_asyncapi_document(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    queues = {channel_type: service_queue(svc, channel_type) for channel_type in SUBSCRIPTIONS}
    inboxes: dict[ChannelType, Inbox] = {}
    async with start_worker(book_output="both") as worker:
        for channel_type, fields in SUBSCRIPTIONS.items():
            body = {"requesting_service": svc, "channel_type": channel_type.value, **fields}
            response = await api.post(URL, json=body)
            assert response.status_code == 201, response.text
        # order.linear is served by the all-in-one `order`
        await wait_until(lambda: private_ready(worker, "order", "wallet"), what="private topics subscribed")
        async with contextlib.AsyncExitStack() as stack:
            for channel_type, queue in queues.items():
                inboxes[channel_type] = await stack.enter_async_context(consuming(rabbitmq_url, queue))
            await fake.push_account("order", category="linear", symbol="BTCUSDT")
            await fake.push_account("wallet", coins={"USDT": "1234.5678", "BTC": "0.00102964"})
            await wait_until(lambda: len(inboxes[ChannelType.ORDERBOOK].envelopes) >= 5, what="book events")
            await fake.inject_book_fault(BOOK_TOPIC, "gap", category="linear")
            await wait_until(
                lambda: (
                    all(len(inbox.envelopes) >= 3 for c, inbox in inboxes.items() if not c.is_private)
                    and inboxes[ChannelType.ORDER].envelopes
                    and len(inboxes[ChannelType.BALANCE].envelopes) == 2
                    and {"orderbook", "orderbook_top", "book_invalid"} <= _types(inboxes[ChannelType.ORDERBOOK])
                ),
                timeout=20,
                what="events of every class, and a book_invalid",
            )

    checked: set[str] = set()
    for channel_type, inbox in inboxes.items():
        for message, envelope in zip(inbox.messages, inbox.envelopes, strict=True):
            assert schema_errors(envelope.event_type, message.body) == [], envelope.event_id
            typed = decode_typed(channel_type, envelope.event_type, message.body)
            assert isinstance(typed.payload, EVENT_TYPES[channel_type][envelope.event_type])  # type: ignore[attr-defined]
            assert message.message_id == envelope.event_id
            assert message.content_type == "application/json"
            assert message.headers["trace_id"] == envelope.trace_id
            checked.add(envelope.event_type)
    assert checked == {"trades", "ticker", "orderbook", "orderbook_top", "book_invalid", "kline", "order", "balance"}
    await delete_queues(rabbitmq_url, *queues.values())


def _types(inbox: Inbox) -> set[str]:
    return {envelope.event_type for envelope in inbox.envelopes}
