"""What to change, from what is wanted, what is owned and what we already asked for. Pure: no I/O, no clock.

The worker converges level-triggered: whatever the trigger (start-up, a notice, the timer, a cluster change, a
reconnect), it computes one `Plan` from the same inputs and applies it. Invariants of a plan:
- it subscribes only topics this worker owns, on sockets this worker has;
- it binds every desired binding not yet bound, and unbinds only bindings no live subscription needs;
- binds come before subscribes (the first events of a new topic already have a queue to land in), unbinds after
  unsubscribes; within each step the order is sorted, so two runs over the same inputs do the same thing;
- a binding it binds for a topic this worker already streams (asked for before this plan, or on a socket that
  is up and gives a newcomer no initial state of its own: the private one) gets a join snapshot to that
  queue only, after the bind; a topic it subscribes anew needs none, Bybit's own first snapshot reaches every
  queue bound to it.
Applying a plan may fail part-way (RabbitMQ away): the next plan, computed from what did happen, finishes it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import msgspec

from shared.enums import Endpoint
from shared.topics import bybit_topic
from stream_worker.state.desired import Binding


class SnapshotStep(msgspec.Struct, frozen=True, kw_only=True):
    """Send the current state of one subscription's topic to one newly bound queue."""

    binding: Binding
    endpoint: Endpoint
    topic: str  # the subscription's topic (`order.linear`), which decides what the snapshot holds


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    bind: list[Binding]
    subscribe: dict[Endpoint, list[str]]
    unsubscribe: dict[Endpoint, list[str]]
    unbind: list[Binding]
    snapshot: list[SnapshotStep] = msgspec.field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.bind or self.subscribe or self.unsubscribe or self.unbind or self.snapshot)


def binding_order(binding: Binding) -> tuple[str, str, str]:
    return (binding.service, binding.channel_type.value, binding.key)


def plan(
    *,
    desired_bindings: Collection[Binding],
    bound: Collection[Binding],
    owned: Mapping[Endpoint, Collection[str]],
    wanted: Mapping[Endpoint, Collection[str]],
    binding_topics: Mapping[Binding, Collection[tuple[Endpoint, str]]] | None = None,
    silent_on_subscribe: Collection[Endpoint] = (),
) -> Plan:
    """`owned`: the Bybit topics this worker owns, per socket; `wanted`: the topics each of this worker's sockets
    has been asked to hold (its keys are the sockets this worker has: a socket it lacks is never planned for);
    `binding_topics`: the subscription topics each desired binding carries; `silent_on_subscribe`: sockets that
    are up and send no initial state when a topic is added (a join there needs a snapshot even for a new topic)."""
    desired_set = set(desired_bindings)
    bound_set = set(bound)
    subscribe: dict[Endpoint, list[str]] = {}
    unsubscribe: dict[Endpoint, list[str]] = {}
    for endpoint, have in wanted.items():
        target = set(owned.get(endpoint, ()))
        current = set(have)
        if added := target - current:
            subscribe[endpoint] = sorted(added)
        if removed := current - target:
            unsubscribe[endpoint] = sorted(removed)
    bind = sorted(desired_set - bound_set, key=binding_order)
    snapshot: list[SnapshotStep] = []
    for binding in bind:
        for endpoint, topic in sorted((binding_topics or {}).get(binding, ())):
            upstream = bybit_topic(endpoint, topic)
            if upstream not in owned.get(endpoint, ()) or endpoint not in wanted:
                continue  # another worker streams it: its own plan sends the snapshot
            if upstream in wanted[endpoint] or endpoint in silent_on_subscribe:
                snapshot.append(SnapshotStep(binding=binding, endpoint=endpoint, topic=topic))
    return Plan(
        bind=bind,
        subscribe=subscribe,
        unsubscribe=unsubscribe,
        unbind=sorted(bound_set - desired_set, key=binding_order),
        snapshot=snapshot,
    )
