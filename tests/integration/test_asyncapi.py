"""The AsyncAPI document: served without a key, complete for every event class, every `$ref` resolves, and
the schemas it generates accept and reject what they should (real envelopes: tests/e2e/test_asyncapi_contract.py).
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest

from control_api.asyncapi import EVENT_TYPES, asyncapi_document
from shared.enums import ChannelType
from shared.events import EventEnvelope
from shared.payloads import BookUpdate
from shared.routing import (
    CHANGE_NOTICE_ROUTING_KEY,
    COMMANDS_EXCHANGE,
    EVENTS_EXCHANGE,
    command_routing_key,
    service_queue,
)
from tests.support import json_schema

EVENT_TYPE_NAMES = {"trades", "ticker", "orderbook", "orderbook_top", "book_invalid", "kline", "liquidation"}
EVENT_TYPE_NAMES |= {"order", "execution", "position", "balance", "resync_incomplete"}


def message_schema(event_type: str) -> dict[str, Any]:
    document = asyncapi_document()
    (message,) = (m for m in document["components"]["messages"].values() if m["name"] == event_type)
    return message["payload"]  # type: ignore[no-any-return]


def validate(event_type: str, value: Any) -> list[str]:
    return json_schema.errors(message_schema(event_type), value, asyncapi_document())


def as_json(value: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value))


def envelope(event_type: str, payload: Any) -> Any:
    return as_json(
        EventEnvelope(
            event_id="x",
            event_type=event_type,
            category="linear",
            symbol="BTCUSDT",
            topic="orderbook.50.BTCUSDT",
            exchange_ts=1,
            received_ts=2,
            published_ts=3,
            trace_id="t",
            payload=payload,
        )
    )


def test_document_is_asyncapi_3_with_a_channel_per_event_class_and_the_command_channel() -> None:
    document = asyncapi_document()
    assert document["asyncapi"] == "3.0.0"
    channels = document["channels"]
    for channel_type in ChannelType:
        routing, queue = channels[channel_type.value], channels[f"{channel_type.value}Queue"]
        assert routing["bindings"]["amqp"]["exchange"]["name"] == EVENTS_EXCHANGE
        assert routing["bindings"]["amqp"]["exchange"]["type"] == "topic"
        assert routing["address"].startswith(f"{channel_type.value}.{{category}}")
        assert queue["address"] == service_queue("{service}", channel_type)
        assert queue["bindings"]["amqp"]["queue"]["durable"] is True
        expected = "quorum" if channel_type.is_private else "classic"
        assert queue["x-queue-type"] == expected
        if not channel_type.is_private:
            assert queue["x-queue-arguments"]["x-overflow"] == "drop-head"
    assert channels["orderbook"]["address"] == "orderbook.{category}.{symbol}.{depth}"
    assert channels["order"]["address"] == "order.{category}"
    assert set(channels["orderbook"]["messages"]) == {"OrderbookEvent", "OrderbookTopEvent", "BookInvalidEvent"}
    commands = channels["commands"]
    assert commands["address"] == command_routing_key("{deployment}", CHANGE_NOTICE_ROUTING_KEY)
    assert commands["bindings"]["amqp"]["exchange"]["name"] == COMMANDS_EXCHANGE
    names = {m["name"] for m in document["components"]["messages"].values()}
    assert names == EVENT_TYPE_NAMES | {"SubscriptionsChanged", "ResyncRequested", "SnapshotRequested"}
    for message in document["components"]["messages"].values():
        assert message["contentType"] == "application/json"
        assert message["headers"]["required"] == ["trace_id"]


def test_every_ref_in_the_document_resolves() -> None:
    document = asyncapi_document()
    found = list(json_schema.refs(document))
    assert len(found) > 50
    for ref in found:
        json_schema.resolve(document, ref)  # KeyError names the first one that does not


def test_every_operation_names_messages_of_its_own_channel() -> None:
    document = asyncapi_document()
    for name, operation in document["operations"].items():
        channel_ref = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"{channel_ref}/messages/"), name


def test_payload_of_each_message_is_the_payload_struct_of_its_event_class() -> None:
    for types in EVENT_TYPES.values():
        for event_type, cls in types.items():
            (_, typed) = message_schema(event_type)["allOf"]
            assert typed["properties"]["payload"] == {"$ref": f"#/components/schemas/{cls.__name__}"}
            assert typed["properties"]["event_type"] == {"enum": [event_type]}


def test_schema_accepts_a_book_event_and_rejects_broken_ones() -> None:
    book = as_json(
        BookUpdate(type="snapshot", symbol="BTCUSDT", bids=[("1", "2")], update_id=1, checksum=5, checksum_levels=25)
    )
    assert validate("orderbook", envelope("orderbook", book)) == []
    assert validate("orderbook", envelope("trades", book))  # wrong event_type
    assert validate("orderbook", envelope("orderbook", book | {"u": "1"}))  # our ints are ints
    assert validate("orderbook", envelope("orderbook", book | {"b": [["1", "2", "3"]]}))  # a level is a pair
    assert validate("orderbook", envelope("orderbook", {k: v for k, v in book.items() if k != "checksum"}))
    assert validate("book_invalid", envelope("book_invalid", {"cause": "gap", "u": 7})) == []
    broken = envelope("orderbook", book)
    del broken["trace_id"]
    assert validate("orderbook", broken)


def test_schema_reads_bybit_payloads_the_way_shared_payloads_does() -> None:
    order = {"orderId": "1", "avgPrice": "", "createdTime": "1672364262444", "reduceOnly": False}
    assert validate("order", envelope("order", order)) == []
    assert validate("order", envelope("order", order | {"createdTime": "soon"}))
    assert validate("order", envelope("order", order | {"reduceOnly": "yes"}))
    assert validate("order", envelope("order", {"avgPrice": "1"}))  # the id is required


@pytest.mark.parametrize("path", ["/asyncapi", "/asyncapi.yaml"])
async def test_document_is_served_without_an_api_key_and_kept_out_of_openapi(api: httpx.AsyncClient, path: str) -> None:
    async with httpx.AsyncClient(base_url=api.base_url) as anonymous:
        response = await anonymous.get(path)
    assert response.status_code == 200, response.text
    if path == "/asyncapi":
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == msgspec.json.decode(msgspec.json.encode(asyncapi_document()))
    else:
        assert msgspec.yaml.decode(response.content)["asyncapi"] == "3.0.0"
    openapi = (await api.get("/schema/openapi.json")).json()
    assert not any(p.startswith("/asyncapi") for p in openapi["paths"])
