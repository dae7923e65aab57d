"""Change notices the API sends the workers over the command exchange.

A notice is the fast path only: PostgreSQL holds the desired state and its revision. A worker that sees a
revision it did not expect re-reads the whole set (level-triggered reconciliation).
"""

from __future__ import annotations

import enum
import uuid

import msgspec

from shared.enums import Category, ChannelType, Endpoint

SCHEMA_VERSION = 1


class ChangeAction(enum.StrEnum):
    CREATED = "created"
    CANCELLED = "cancelled"


class SubscriptionChange(msgspec.Struct, frozen=True, kw_only=True):
    """One subscription that was created or cancelled. An unknown action fails decoding (the whole notice is
    then ignored and the worker re-reads PostgreSQL), never a silent cancel."""

    action: ChangeAction
    subscription_id: uuid.UUID
    requesting_service: str
    channel_type: ChannelType
    category: Category | None
    symbol: str | None
    endpoint: Endpoint
    topic: str


class SubscriptionsChanged(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="subscriptions_changed"):
    """The desired set moved to `revision`; `changes` is what this one write did."""

    revision: int
    trace_id: str
    created_at_ms: int
    changes: list[SubscriptionChange]
    schema_version: int = SCHEMA_VERSION


class ResyncRequested(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="resync_requested"):
    """Ask every worker to re-read the desired set (operators, tests)."""

    revision: int
    trace_id: str
    created_at_ms: int
    schema_version: int = SCHEMA_VERSION


Command = SubscriptionsChanged | ResyncRequested

COMMAND_DECODER = msgspec.json.Decoder(Command)
COMMAND_ENCODER = msgspec.json.Encoder()
