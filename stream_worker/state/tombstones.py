"""Cancelled subscriptions whose queue binding may still be in RabbitMQ, and what the topic's owner does with them.
Pure: no I/O, no clock.

A worker unbinds on a cancel only what it bound itself (`Convergence.bound`, in memory). A cancel that no running
worker applies (the binder stopped, or the cancel landed while the topic changed hands) would leave the service's
queue bound for good, fed for as long as another service keeps the topic. So a cancelled row stays a tombstone in
PostgreSQL until the worker that owns its topic has dealt with it:
- its binding is wanted again by a live subscription read no earlier than the tombstone (the service cancelled and
  subscribed again): nothing to unbind, the tombstone is superseded;
- otherwise the owner unbinds it (harmless when nothing is bound) and forgets it as bound, so a newer subscription
  of the same binding, whose notice it applies after this under the same convergence lock, binds it again.
Only the owner applies a tombstone: one worker, serialised with its own binds, instead of every worker racing.
A tombstone no owner applied within `MAX_AGE` (a private topic while no worker holds the keys) is given up.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterable
from datetime import timedelta

import msgspec

from shared.enums import Endpoint
from shared.topics import bybit_topic
from stream_worker.state.desired import Binding
from stream_worker.state.reconciler import binding_order

MAX_AGE = timedelta(hours=24)


class Tombstone(msgspec.Struct, frozen=True, kw_only=True):
    """One cancelled subscription whose binding is not known to be gone yet."""

    subscription_id: uuid.UUID
    binding: Binding
    endpoint: Endpoint
    topic: str  # the subscription's topic (`order.linear`)


class TombstonePlan(msgspec.Struct, frozen=True, kw_only=True):
    unbind: dict[Binding, list[uuid.UUID]]  # each binding to unbind, and the tombstones that unbinding settles
    superseded: list[uuid.UUID]  # settled now: a live subscription wants their binding


def plan_tombstones(
    tombstones: Iterable[Tombstone],
    *,
    desired_bindings: Collection[Binding],
    owns: Callable[[Endpoint, str], bool],
) -> TombstonePlan:
    """`desired_bindings` must come from a desired set read no earlier than the tombstones; `owns(endpoint,
    bybit_topic)` says whether this worker serves that Bybit topic now. Tombstones of other owners are left."""
    wanted = set(desired_bindings)
    unbind: dict[Binding, list[uuid.UUID]] = {}
    superseded: list[uuid.UUID] = []
    for tombstone in sorted(tombstones, key=lambda t: (binding_order(t.binding), str(t.subscription_id))):
        if not owns(tombstone.endpoint, bybit_topic(tombstone.endpoint, tombstone.topic)):
            continue
        if tombstone.binding in wanted:
            superseded.append(tombstone.subscription_id)
        else:
            unbind.setdefault(tombstone.binding, []).append(tombstone.subscription_id)
    return TombstonePlan(unbind=unbind, superseded=superseded)
