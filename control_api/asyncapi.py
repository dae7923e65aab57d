"""The AsyncAPI 3.0 description of what the gateway publishes, built from the contract in `shared/`.

Schemas come from the msgspec structs (`msgspec.json.schema_components`), addresses from `shared.routing`, so
the document cannot drift from the code: nothing here copies a field list or a name by hand. The document is a
pure function of the contract, built once and cached; `GET /asyncapi` (JSON) and `GET /asyncapi.yaml` serve it
without an API key and outside the OpenAPI schema. No I/O in the builder.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from litestar import Response, Router, get
from litestar.enums import MediaType

from shared.commands import Command, ResyncRequested, SnapshotRequested, SubscriptionsChanged
from shared.enums import Category, ChannelType
from shared.events import EVENT_CONTENT_TYPE, EventEnvelope
from shared.payloads import (
    BookInvalid,
    BookUpdate,
    Execution,
    Kline,
    Liquidation,
    Order,
    Position,
    PublicTrade,
    ResyncIncomplete,
    Ticker,
    WalletCoin,
)
from shared.routing import (
    ACCOUNT_CHANNELS,
    CHANGE_NOTICE_ROUTING_KEY,
    COMMANDS_EXCHANGE,
    EVENTS_EXCHANGE,
    SNAPSHOT_REQUEST_ROUTING_KEY,
    command_routing_key,
    event_routing_key,
    queue_arguments,
    service_queue,
)
from shared.topics import BOOK_DEPTHS, KLINE_INTERVALS

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
SCHEMA_REF = "#/components/schemas/{name}"
TRANSIENT, PERSISTENT = 1, 2

# The event types each event class's queue carries, and the payload struct of each (README, "What consumers
# receive" and "Order books"). An orderbook queue carries the book stream, the top snapshots and book_invalid;
# an account queue carries its events and resync_incomplete.
EVENT_TYPES: dict[ChannelType, dict[str, type[msgspec.Struct]]] = {
    ChannelType.TRADES: {"trades": PublicTrade},
    ChannelType.TICKER: {"ticker": Ticker},
    ChannelType.ORDERBOOK: {"orderbook": BookUpdate, "orderbook_top": BookUpdate, "book_invalid": BookInvalid},
    ChannelType.KLINE: {"kline": Kline},
    ChannelType.LIQUIDATION: {"liquidation": Liquidation},
    ChannelType.ORDER: {"order": Order, "resync_incomplete": ResyncIncomplete},
    ChannelType.EXECUTION: {"execution": Execution, "resync_incomplete": ResyncIncomplete},
    ChannelType.POSITION: {"position": Position, "resync_incomplete": ResyncIncomplete},
    ChannelType.BALANCE: {"balance": WalletCoin, "resync_incomplete": ResyncIncomplete},
}

# Payloads that are Bybit's data object as Bybit sent it (shared/payloads.py, PROTOCOL.md §11): any field may
# be "" for "no value", and private `*Time` fields are integers in strings. The book payloads are ours.
BYBIT_SHAPED = frozenset({"PublicTrade", "Ticker", "Kline", "Liquidation", "Order", "Execution", "ExtraFee"})
BYBIT_SHAPED |= {"Position", "WalletCoin"}

BYBIT_EMPTY: dict[str, Any] = {"enum": [""], "description": "Bybit's empty value; read it as null."}
INTEGER_STRING: dict[str, Any] = {"type": "string", "pattern": "^-?[0-9]+$"}

# What a queue receives when its service joins a topic already streaming, or asks (POST .../snapshot): README,
# "Joining late, and asking again". Classes without state get none.
JOIN_SNAPSHOTS: dict[ChannelType, str] = {
    ChannelType.ORDERBOOK: (
        "the whole validated book as an `orderbook` event of type `snapshot` whose `u`/`seq`/`checksum` are those "
        "of the last event published for the book: the next book event in this queue is the delta `u + 1` (none "
        "while the book is invalid: the fresh Bybit snapshot then reaches every bound queue)"
    ),
    ChannelType.TICKER: "the full merged ticker, type `snapshot`, every field listed in `changed`",
    ChannelType.KLINE: "the latest candle of the topic if it is still open (`confirm: false`)",
    ChannelType.ORDER: "open orders fetched over REST, with the re-sync's event ids",
    ChannelType.POSITION: "positions fetched over REST, with the re-sync's event ids",
    ChannelType.BALANCE: "the wallet fetched over REST, with the re-sync's event ids",
}

MESSAGE_HEADERS: dict[str, Any] = {
    "type": "object",
    "properties": {"trace_id": {"type": "string", "description": "The trace id of the request or frame."}},
    "required": ["trace_id"],
}


def _draft07(schema: Any) -> Any:
    """msgspec writes JSON Schema 2020-12; AsyncAPI 3.0's default schema format is draft-07 based."""
    if isinstance(schema, list):
        return [_draft07(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _draft07(value) for key, value in schema.items()}
    if "prefixItems" in out:  # fixed-length tuples: draft-07 spells them as an items array
        out["items"] = out.pop("prefixItems")
        out["additionalItems"] = False
    if isinstance(out.get("discriminator"), dict):  # AsyncAPI's discriminator is the property name only
        out["discriminator"] = out["discriminator"]["propertyName"]
    return out


def _bybit_lax(schema: Any) -> Any:
    """Widen a schema to Bybit's wire conventions: integers may come as numeric strings."""
    if isinstance(schema, list):
        return [_bybit_lax(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") == "integer":
        return {"anyOf": [schema, INTEGER_STRING]}
    return {key: _bybit_lax(value) for key, value in schema.items()}


def _bybit_struct(schema: dict[str, Any]) -> dict[str, Any]:
    properties = {name: {"anyOf": [_bybit_lax(prop), BYBIT_EMPTY]} for name, prop in schema["properties"].items()}
    note = 'Bybit\'s object as sent: any field may be "" (no value); integers may arrive as numeric strings.'
    return schema | {"properties": properties, "x-wire-conventions": note}


def _schemas() -> dict[str, Any]:
    payloads = {cls for types in EVENT_TYPES.values() for cls in types.values()}
    types: list[Any] = [EventEnvelope, Command, *sorted(payloads, key=lambda cls: cls.__name__)]
    (_, command, *_), components = msgspec.json.schema_components(types, ref_template=SCHEMA_REF)
    components["Command"] = {"title": "Command", "description": "A change notice, told apart by `kind`."} | command
    lax = {name: _bybit_struct(schema) if name in BYBIT_SHAPED else schema for name, schema in components.items()}
    return {name: _draft07(schema) for name, schema in sorted(lax.items())}


def _envelope_schema(event_type: str, payload: type[msgspec.Struct]) -> dict[str, Any]:
    """The envelope with its `event_type` fixed and its `payload` described by the class's struct."""
    return {
        "allOf": [
            {"$ref": SCHEMA_REF.format(name="EventEnvelope")},
            {
                "type": "object",
                "properties": {
                    "event_type": {"enum": [event_type]},
                    "payload": {"$ref": SCHEMA_REF.format(name=payload.__name__)},
                },
            },
        ]
    }


def _message_id(event_type: str) -> str:
    return "".join(word.capitalize() for word in event_type.split("_")) + "Event"


def _event_message(channel_type: ChannelType, event_type: str, payload: type[msgspec.Struct]) -> dict[str, Any]:
    persistent = channel_type in ACCOUNT_CHANNELS
    return {
        "name": event_type,
        "title": f"{event_type} event",
        "summary": f"One `{event_type}` envelope; payload: `shared.payloads.{payload.__name__}`.",
        "contentType": EVENT_CONTENT_TYPE,
        "headers": MESSAGE_HEADERS,
        "payload": _envelope_schema(event_type, payload),
        "x-amqp-message-id": "$message.payload#/event_id",
        "x-amqp-delivery-mode": PERSISTENT if persistent else TRANSIENT,
        "bindings": {"amqp": {"messageType": event_type, "bindingVersion": AMQP_BINDING_VERSION}},
    }


def _routing_key_pattern(channel_type: ChannelType) -> tuple[str, dict[str, Any]]:
    """The routing-key address of an event class, from `shared.routing`, and its parameters."""
    if channel_type in ACCOUNT_CHANNELS:
        address = event_routing_key(channel_type, "{category}")
        return address, {"category": {"description": "The Bybit category; the account type for balance."}}
    parameters: dict[str, Any] = {
        "category": {"enum": [category.value for category in Category]},
        "symbol": {"description": "The Bybit symbol (the base coin for option trades)."},
    }
    if channel_type is ChannelType.ORDERBOOK:
        depths = sorted({str(depth) for depths in BOOK_DEPTHS.values() for depth in depths}, key=int)
        parameters["depth"] = {"enum": depths, "description": "Two depths of one symbol are two streams."}
        return event_routing_key(channel_type, "{category}", "{symbol}", "{depth}"), parameters
    if channel_type is ChannelType.KLINE:
        parameters["interval"] = {"enum": list(KLINE_INTERVALS)}
        return event_routing_key(channel_type, "{category}", "{symbol}", "{interval}"), parameters
    return event_routing_key(channel_type, "{category}", "{symbol}"), parameters


def _queue_arguments(channel_type: ChannelType) -> dict[str, Any]:
    arguments: dict[str, Any] = dict(queue_arguments(channel_type))
    if channel_type not in ACCOUNT_CHANNELS:
        arguments["x-max-length-setting"] = "WS_GATEWAY_MARKET_QUEUE_MAX_LENGTH (the default is shown)"
    return arguments


def _exchange(name: str) -> dict[str, Any]:
    return {"name": name, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"}


def _event_channels(channel_type: ChannelType) -> dict[str, Any]:
    """Two channels per event class: its routing keys on the events exchange, and a service's queue."""
    name = channel_type.value
    address, parameters = _routing_key_pattern(channel_type)
    messages = {
        _message_id(event_type): {"$ref": f"#/components/messages/{_message_id(event_type)}"}
        for event_type in EVENT_TYPES[channel_type]
    }
    account = channel_type in ACCOUNT_CHANNELS
    queue_type = "quorum" if account else "classic"
    routing = {
        "address": address,
        "title": f"{name} events",
        "description": f"Routing keys of `{name}` events on the topic exchange `{EVENTS_EXCHANGE}`.",
        "parameters": parameters,
        "messages": messages,
        "bindings": {
            "amqp": {"is": "routingKey", "exchange": _exchange(EVENTS_EXCHANGE), "bindingVersion": AMQP_BINDING_VERSION}
        },
    }
    queue_name = service_queue("{service}", channel_type)
    queue: dict[str, Any] = {
        "address": queue_name,
        "title": f"a service's {name} queue",
        "description": (
            f"The durable {queue_type} queue a requesting service reads `{name}` events from, bound to exactly the "
            "routing keys of its live subscriptions. The gateway declares it; consumers declare it passively."
        ),
        "parameters": {"service": {"description": "The `requesting_service` of the subscriptions."}},
        "messages": messages,
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {"name": queue_name, "durable": True, "exclusive": False, "autoDelete": False, "vhost": "/"},
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
        "x-queue-type": queue_type,
        "x-queue-arguments": _queue_arguments(channel_type),
        "x-bound-to": {"exchange": EVENTS_EXCHANGE, "routingKey": address},
    }
    if channel_type in JOIN_SNAPSHOTS:
        queue["description"] += (
            " When the service's subscription joins a topic that is already streaming, or the service asks with "
            "`POST /api/v1/subscriptions/{id}/snapshot`, the topic's current state is published to this queue only "
            "(the default exchange, routing key = the queue's name), with `snapshot: true` in the envelope, before "
            f"the queue's next delta: {JOIN_SNAPSHOTS[channel_type]}. Events published just before it may precede "
            "it: skip book deltas until your first snapshot and de-duplicate by `event_id`."
        )
        queue["x-join-snapshot"] = {
            "exchange": "(default)",
            "routingKey": queue_name,
            "envelope": {"snapshot": True},
            "content": JOIN_SNAPSHOTS[channel_type],
        }
    return {name: routing, f"{name}Queue": queue}


def _operations(channel_type: ChannelType) -> dict[str, Any]:
    name = channel_type.value
    messages = [
        {"$ref": f"#/channels/{name}/messages/{_message_id(event_type)}"} for event_type in EVENT_TYPES[channel_type]
    ]
    queue_messages = [{"$ref": str(ref["$ref"]).replace(f"/{name}/", f"/{name}Queue/")} for ref in messages]
    mode = PERSISTENT if channel_type in ACCOUNT_CHANNELS else TRANSIENT
    snapshot: dict[str, Any] = {}
    if channel_type in JOIN_SNAPSHOTS:
        snapshot[f"snapshot_{name}"] = {
            "action": "send",
            "title": f"The worker sends one {name} queue the topic's current state (join or request)",
            "description": JOIN_SNAPSHOTS[channel_type],
            "channel": {"$ref": f"#/channels/{name}Queue"},
            "messages": queue_messages[:1],
            "bindings": {"amqp": {"deliveryMode": mode, "bindingVersion": AMQP_BINDING_VERSION}},
        }
    return snapshot | {
        f"publish_{name}": {
            "action": "send",
            "title": f"The worker publishes {name} events",
            "channel": {"$ref": f"#/channels/{name}"},
            "messages": messages,
            "bindings": {"amqp": {"deliveryMode": mode, "bindingVersion": AMQP_BINDING_VERSION}},
        },
        f"consume_{name}": {
            "action": "receive",
            "title": f"A service consumes its {name} queue",
            "description": "Ack after processing; de-duplicate on `event_id` (= the AMQP `message_id`).",
            "channel": {"$ref": f"#/channels/{name}Queue"},
            "messages": queue_messages,
            "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
        },
    }


def _command_parts() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    messages = {
        cls.__name__: {
            "name": cls.__name__,
            "title": cls.__name__,
            "contentType": EVENT_CONTENT_TYPE,
            "headers": MESSAGE_HEADERS,
            "payload": {"$ref": SCHEMA_REF.format(name=cls.__name__)},
            "x-amqp-message-id": "snapshot-{uuid}" if cls is SnapshotRequested else "revision-{revision}",
            "x-amqp-routing-key": command_routing_key(
                "{deployment}", SNAPSHOT_REQUEST_ROUTING_KEY if cls is SnapshotRequested else CHANGE_NOTICE_ROUTING_KEY
            ),
            "bindings": {"amqp": {"messageType": cls.__name__, "bindingVersion": AMQP_BINDING_VERSION}},
        }
        for cls in (SubscriptionsChanged, ResyncRequested, SnapshotRequested)
    }
    refs = {name: {"$ref": f"#/components/messages/{name}"} for name in messages}
    channel = {
        "address": command_routing_key("{deployment}", CHANGE_NOTICE_ROUTING_KEY),
        "title": "change notices",
        "description": "Notices from the API to the workers; PostgreSQL holds the desired state (`shared.commands`).",
        "parameters": {
            "deployment": {
                "description": "The deployment's id (`desired_state.deployment_id`): each deployment's workers bind "
                "only their own, so deployments sharing a vhost never take each other's notices."
            }
        },
        "messages": refs,
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": _exchange(COMMANDS_EXCHANGE),
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    }
    operation = {
        "action": "send",
        "title": "The API relays change notices from its outbox",
        "channel": {"$ref": "#/channels/commands"},
        "messages": [{"$ref": f"#/channels/commands/messages/{name}"} for name in messages],
        "bindings": {"amqp": {"deliveryMode": PERSISTENT, "bindingVersion": AMQP_BINDING_VERSION}},
    }
    return messages, channel, operation


@functools.cache
def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the event and command contract. Cached: treat it as read-only."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for channel_type in ChannelType:
        channels |= _event_channels(channel_type)
        operations |= _operations(channel_type)
        for event_type, payload in EVENT_TYPES[channel_type].items():
            messages[_message_id(event_type)] = _event_message(channel_type, event_type, payload)
    command_messages, channels["commands"], operations["publish_commands"] = _command_parts()
    messages |= command_messages
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "ws-gateway events",
            "version": "1.0.0",
            "description": (
                f"Normalized Bybit v5 events on the topic exchange `{EVENTS_EXCHANGE}`, one durable queue per "
                f"requesting service and event class, and the change notices on `{COMMANDS_EXCHANGE}`. "
                "Generated from the msgspec structs in `shared/`."
            ),
        },
        "defaultContentType": EVENT_CONTENT_TYPE,
        "servers": {
            "rabbitmq": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "The deployment's RabbitMQ (WS_GATEWAY_RABBITMQ_URL).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": _schemas(), "messages": messages},
    }


@functools.cache
def _encoded(fmt: str) -> bytes:
    if fmt == "yaml":
        return msgspec.yaml.encode(asyncapi_document())
    return msgspec.json.encode(asyncapi_document())


@get("/asyncapi", summary="The AsyncAPI 3.0 document of the event contract", sync_to_thread=False)
def asyncapi_json() -> Response[bytes]:
    return Response(_encoded("json"), media_type=MediaType.JSON)


@get("/asyncapi.yaml", summary="The AsyncAPI 3.0 document, as YAML", sync_to_thread=False)
def asyncapi_yaml() -> Response[bytes]:
    return Response(_encoded("yaml"), media_type="application/yaml")


asyncapi_routes = Router(path="/", route_handlers=[asyncapi_json, asyncapi_yaml], include_in_schema=False)
