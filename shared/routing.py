"""RabbitMQ names: exchanges, per-service queues, routing and binding keys.

Consumers rely on these names; changing one is a breaking change of the contract.
"""

from __future__ import annotations

from shared.enums import PRIVATE_CHANNELS, ChannelType
from shared.topics import TopicSpec

EVENTS_EXCHANGE = "ws-gateway.events"  # topic exchange: normalized Bybit events
COMMANDS_EXCHANGE = "ws-gateway.commands"  # topic exchange: change notices from the API to workers
# What a notice is; on the wire it goes out under its deployment's id (`command_routing_key`).
CHANGE_NOTICE_ROUTING_KEY = "subscriptions.changed"
SNAPSHOT_REQUEST_ROUTING_KEY = "subscriptions.snapshot"
# Join and requested snapshots go to one queue only: through the default exchange, whose routing key is a
# queue name, so no other service bound to the topic sees them.
DIRECT_EXCHANGE = ""

ACCOUNT_CHANNELS = PRIVATE_CHANNELS  # quorum queues, never dropped


def command_routing_key(deployment_id: str, key: str) -> str:
    """A notice's routing key on `ws-gateway.commands`: deployments sharing a vhost (staging beside production)
    each bind only their own id, so none takes another's notices."""
    return f"{deployment_id}.{key}"


def command_binding(deployment_id: str) -> str:
    """What a worker binds its command queue with: every notice of its deployment, none of another's."""
    return f"{deployment_id}.#"


def command_queue(worker_id: str, instance_id: str) -> str:
    """One worker process's own command queue, exclusive to its connection: deleted when the process goes, and
    never shared with a same-named worker of another deployment or a restarted instance."""
    return f"ws-gateway.worker.{worker_id}.{instance_id}.commands"


DEFAULT_MARKET_MAX_LENGTH = 100_000  # WS_GATEWAY_MARKET_QUEUE_MAX_LENGTH's default


def queue_arguments(channel_type: ChannelType, market_max_length: int = DEFAULT_MARKET_MAX_LENGTH) -> dict[str, object]:
    """The declare arguments of a service's queue for one event class: the worker declares with these, the AsyncAPI
    document shows them, and a consumer's passive declare must match them.

    Account channels get quorum queues: replicated, never length-limited, never dropped. Market channels get
    classic queues (the default type, so no `x-queue-type`) bounded by `x-max-length` with `drop-head`, so a consumer
    that stopped reading cannot fill the broker; its queue keeps the newest messages. RabbitMQ refuses a re-declare
    whose arguments differ, so these are a pure function of their inputs.
    """
    if channel_type in ACCOUNT_CHANNELS:
        return {"x-queue-type": "quorum"}
    if market_max_length < 1:
        raise ValueError(f"market_max_length must be at least 1, got {market_max_length}")
    return {"x-max-length": int(market_max_length), "x-overflow": "drop-head"}


def service_queue(service: str, channel_type: ChannelType) -> str:
    """The durable queue a requesting service reads one event class from."""
    return f"ws-gateway.{service}.{channel_type.value}"


def event_routing_key(
    channel_type: ChannelType, category: str, symbol: str | None = None, variant: str | None = None
) -> str:
    """`{channel_type}.{category}.{symbol}` for market data, `{channel_type}.{category}` for account data.

    Order books and klines add their depth or interval as a fourth word (`orderbook.linear.BTCUSDT.50`,
    `kline.spot.ETHUSDT.15`): two depths of one symbol are two different streams, and a consumer keeping a
    book must never receive another depth's deltas in its queue. Bind `orderbook.linear.BTCUSDT.*` for all.
    """
    if symbol is None:
        return f"{channel_type.value}.{category}"
    if variant is None:
        return f"{channel_type.value}.{category}.{symbol}"
    return f"{channel_type.value}.{category}.{symbol}.{variant}"


def topic_variant(channel_type: ChannelType, topic: str) -> str | None:
    """The depth of `orderbook.{depth}.{symbol}` or the interval of `kline.{interval}.{symbol}`, else None."""
    if channel_type in (ChannelType.ORDERBOOK, ChannelType.KLINE):
        return topic.split(".", 2)[1]
    return None


def binding_key(spec: TopicSpec) -> str:
    """The routing-key pattern that delivers exactly the events of one subscription."""
    if spec.channel_type in PRIVATE_CHANNELS:
        # An all-in-one private topic carries every category; a categorised one carries one.
        return event_routing_key(spec.channel_type, spec.category.value if spec.category else "*")
    assert spec.category is not None
    return event_routing_key(
        spec.channel_type, spec.category.value, spec.symbol, topic_variant(spec.channel_type, spec.topic)
    )
