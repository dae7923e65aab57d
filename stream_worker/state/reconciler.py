"""What to change, from what is wanted, what is owned and what we already asked for. Pure: no I/O, no clock.

The worker converges level-triggered: whatever the trigger (start-up, a notice, the timer, a cluster change, a
reconnect), it computes one `Plan` from the same inputs and applies it. Invariants of a plan:
- it subscribes only topics this worker owns, on sockets this worker has;
- it binds every desired binding not yet bound, and unbinds only bindings no live subscription needs;
- binds come before subscribes (the first events of a new topic already have a queue to land in), unbinds after
  unsubscribes; within each step the order is sorted, so two runs over the same inputs do the same thing.
Applying a plan may fail part-way (RabbitMQ away): the next plan, computed from what did happen, finishes it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import msgspec

from shared.enums import Endpoint
from stream_worker.state.desired import Binding


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    bind: list[Binding]
    subscribe: dict[Endpoint, list[str]]
    unsubscribe: dict[Endpoint, list[str]]
    unbind: list[Binding]

    @property
    def empty(self) -> bool:
        return not (self.bind or self.subscribe or self.unsubscribe or self.unbind)


def binding_order(binding: Binding) -> tuple[str, str, str]:
    return (binding.service, binding.channel_type.value, binding.key)


def plan(
    *,
    desired_bindings: Collection[Binding],
    bound: Collection[Binding],
    owned: Mapping[Endpoint, Collection[str]],
    wanted: Mapping[Endpoint, Collection[str]],
) -> Plan:
    """`owned`: the desired topics this worker owns, per socket; `wanted`: the topics each of this worker's sockets
    has been asked to hold (its keys are the sockets this worker has: a socket it lacks is never planned for)."""
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
    return Plan(
        bind=sorted(desired_set - bound_set, key=binding_order),
        subscribe=subscribe,
        unsubscribe=unsubscribe,
        unbind=sorted(bound_set - desired_set, key=binding_order),
    )
