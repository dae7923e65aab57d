"""Our RabbitMQ objects: the events exchange, one durable queue per requesting service and channel type, and
the bindings that follow subscribe and cancel.

Account channels (order, execution, position, balance) get quorum queues: replicated, never length-limited,
never dropped. Market-data channels get classic durable queues bounded by `x-max-length` with `drop-head`, so a
consumer that stopped reading cannot fill the broker; its queue keeps the newest messages.

RabbitMQ refuses a re-declare whose arguments differ from the existing queue's (PRECONDITION_FAILED), so the
arguments are a pure function of (channel type, max length) and are always built the same way. A refusal
becomes a `TopologyError` naming the queue and what differs; it never closes anything but the topology channel.
No publishing and no buffering here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiormq.abc import AbstractChannel
from aiormq.exceptions import AMQPChannelError, AMQPConnectionError, ChannelInvalidStateError
from pamqp.common import FieldTable

from shared.enums import ChannelType
from shared.routing import DEFAULT_MARKET_MAX_LENGTH, EVENTS_EXCHANGE, queue_arguments, service_queue
from stream_worker.errors import BrokerUnavailable, TopologyError


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """What `queue_declare` is told; equal specs always produce byte-identical declare frames."""

    name: str
    arguments: FieldTable = field(hash=False)


def queue_spec(
    service: str, channel_type: ChannelType, *, market_max_length: int = DEFAULT_MARKET_MAX_LENGTH
) -> QueueSpec:
    """The queue a service reads one channel type from, with its declaration arguments."""
    # pamqp picks an integer's AMQP width from its value, so one value always encodes to the same type and a
    # restart re-declares the queue identically.
    arguments: FieldTable = dict(queue_arguments(channel_type, market_max_length))  # type: ignore[arg-type]
    return QueueSpec(name=service_queue(service, channel_type), arguments=arguments)


@contextlib.contextmanager
def _translated(queue: str, action: str, spec: QueueSpec | None = None) -> Iterator[None]:
    try:
        yield
    except AMQPChannelError as exc:
        # The broker closed the channel over this request: its reply text names the argument and both values,
        # e.g. "inequivalent arg 'x-max-length' ...: received '5' but current is '10'".
        broker_says = " ".join(str(arg) for arg in exc.args) or type(exc).__name__
        if spec is not None and "PRECONDITION_FAILED" in broker_says:
            reason = (
                f"{action} refused: it already exists with other arguments than ours "
                f"({_describe(spec.arguments)}); RabbitMQ says: {broker_says}. Delete the queue or restore "
                "its old settings."
            )
        else:
            reason = f"{action} refused; RabbitMQ says: {broker_says}"
        raise TopologyError(queue, reason) from exc
    except (AMQPConnectionError, ChannelInvalidStateError, ConnectionError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(f"{action} of queue {queue!r} failed: {type(exc).__name__}") from exc


def _describe(arguments: FieldTable) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in sorted(arguments.items()))


async def declare_exchange(channel: AbstractChannel, *, timeout: float) -> None:
    """The durable topic exchange every event is published to."""
    try:
        await channel.exchange_declare(EVENTS_EXCHANGE, exchange_type="topic", durable=True, timeout=timeout)
    except (AMQPConnectionError, AMQPChannelError, ChannelInvalidStateError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(f"declaring exchange {EVENTS_EXCHANGE!r} failed: {exc!r}") from exc


async def declare_queue(channel: AbstractChannel, spec: QueueSpec, *, timeout: float) -> None:
    """Create the queue if missing; raises TopologyError if it exists with other arguments."""
    with _translated(spec.name, "declare", spec):
        await channel.queue_declare(spec.name, durable=True, arguments=dict(spec.arguments), timeout=timeout)


async def bind_queue(channel: AbstractChannel, queue: str, binding_key: str, *, timeout: float) -> None:
    with _translated(queue, f"bind to {binding_key!r}"):
        await channel.queue_bind(queue, EVENTS_EXCHANGE, routing_key=binding_key, timeout=timeout)


async def unbind_queue(channel: AbstractChannel, queue: str, binding_key: str, *, timeout: float) -> None:
    """Remove one binding; unbinding what is not bound is not an error (RabbitMQ treats it as done), and neither
    is unbinding from a queue that no longer exists (its bindings went with it). RabbitMQ since 3.2 answers the
    latter with UnbindOk too (tested on 3.10); a broker that answers NOT_FOUND closes the channel, which the
    caller's next topology call replaces, so it is taken as done here as well."""
    with _translated(queue, f"unbind from {binding_key!r}"):
        try:
            await channel.queue_unbind(queue, EVENTS_EXCHANGE, routing_key=binding_key, timeout=timeout)
        except AMQPChannelError as exc:
            if not any("NOT_FOUND" in str(arg) for arg in exc.args):
                raise
