"""The least RabbitMQ permissions each party needs, as `rabbitmqctl set_permissions` regexes.

RabbitMQ checks three regexes per user and vhost: configure (declare, delete), write (publish to an exchange,
bind a queue) and read (consume or get from a queue, bind from an exchange). A passive declare needs none,
which is how a consumer checks its queue exists. Built from the names in `shared.routing`, so the table cannot
drift from the topology. Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from shared.enums import ChannelType
from shared.routing import COMMANDS_EXCHANGE, EVENTS_EXCHANGE, service_queue

NOTHING = "^$"


def _literal(name: str) -> str:
    """`name` as a regex matching itself (a hyphen outside a class needs no escape; it reads better without)."""
    return re.escape(name).replace("\\-", "-")


_CHANNELS = "|".join(channel.value for channel in ChannelType)
_EVENTS = _literal(EVENTS_EXCHANGE)
_COMMANDS = _literal(COMMANDS_EXCHANGE)
# Every service's queue (`ws-gateway.{service}.{channel_type}`) and every worker's command queue
# (`ws-gateway.worker.{worker_id}.{instance_id}.commands`, exclusive: shared.routing.command_queue).
_SERVICE_QUEUES = rf"ws-gateway\.[A-Za-z0-9][A-Za-z0-9_.-]*\.({_CHANNELS})"
_COMMAND_QUEUES = r"ws-gateway\.worker\..+\.commands"
# The default exchange, as RabbitMQ names it for permissions: join and requested snapshots go to one queue by its
# name through it, and the publisher's start-up probe of its fast path publishes one unroutable message there.
_DEFAULT_EXCHANGE = r"amq\.default"


class Permissions(NamedTuple):
    configure: str
    write: str
    read: str


def consumer_permissions(service: str) -> Permissions:
    """Read only the service's own queues; no configure (it declares passively) and no write (it can neither
    publish nor bind its queue to more routing keys)."""
    prefix = _literal(service_queue(service, ChannelType.TRADES).removesuffix(ChannelType.TRADES.value))
    # The channel list is spelled out: a service named `a` must not match `a.b`'s queues.
    return Permissions(configure=NOTHING, write=NOTHING, read=rf"^{prefix}({_CHANNELS})$")


def worker_permissions() -> Permissions:
    """Declare the exchanges and queues, publish events, bind queues, consume its command queue; it may not
    publish change notices."""
    return Permissions(
        configure=rf"^({_EVENTS}|{_COMMANDS}|{_SERVICE_QUEUES}|{_COMMAND_QUEUES})$",
        write=rf"^({_EVENTS}|{_DEFAULT_EXCHANGE}|{_SERVICE_QUEUES}|{_COMMAND_QUEUES})$",
        read=rf"^({_EVENTS}|{_COMMANDS}|{_COMMAND_QUEUES})$",
    )


def api_permissions() -> Permissions:
    """Declare and publish to the command exchange; nothing else."""
    return Permissions(configure=rf"^{_COMMANDS}$", write=rf"^{_COMMANDS}$", read=NOTHING)
