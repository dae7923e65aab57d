"""RabbitMQ names: exchanges, per-service queues, routing and binding keys.

Consumers rely on these names; changing one is a breaking change of the contract.
"""

from __future__ import annotations

from shared.enums import PRIVATE_CHANNELS, ChannelType
from shared.topics import TopicSpec

EVENTS_EXCHANGE = "ws-gateway.events"  # topic exchange: normalized Bybit events
COMMANDS_EXCHANGE = "ws-gateway.commands"  # topic exchange: change notices from the API to workers
CHANGE_NOTICE_ROUTING_KEY = "subscriptions.changed"

ACCOUNT_CHANNELS = PRIVATE_CHANNELS  # quorum queues, never dropped


def service_queue(service: str, channel_type: ChannelType) -> str:
    """The durable queue a requesting service reads one event class from."""
    return f"ws-gateway.{service}.{channel_type.value}"


def event_routing_key(channel_type: ChannelType, category: str, symbol: str | None = None) -> str:
    """`{channel_type}.{category}.{symbol}` for market data, `{channel_type}.{category}` for account data."""
    if symbol is None:
        return f"{channel_type.value}.{category}"
    return f"{channel_type.value}.{category}.{symbol}"


def binding_key(spec: TopicSpec) -> str:
    """The routing-key pattern that delivers exactly the events of one subscription."""
    if spec.channel_type in PRIVATE_CHANNELS:
        # An all-in-one private topic carries every category; a categorised one carries one.
        return event_routing_key(spec.channel_type, spec.category.value if spec.category else "*")
    assert spec.category is not None
    return event_routing_key(spec.channel_type, spec.category.value, spec.symbol)
