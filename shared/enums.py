"""Enumerations shared by the API, the worker and consumers: channel types, categories, statuses."""

from __future__ import annotations

import enum


class ChannelType(enum.StrEnum):
    """What a service subscribes to; also the event class a consumer receives."""

    TRADES = "trades"
    TICKER = "ticker"
    ORDERBOOK = "orderbook"
    KLINE = "kline"
    LIQUIDATION = "liquidation"
    ORDER = "order"
    EXECUTION = "execution"
    POSITION = "position"
    BALANCE = "balance"

    @property
    def is_private(self) -> bool:
        return self in PRIVATE_CHANNELS


PRIVATE_CHANNELS = frozenset({ChannelType.ORDER, ChannelType.EXECUTION, ChannelType.POSITION, ChannelType.BALANCE})


class Category(enum.StrEnum):
    """Bybit v5 product categories; each public one has its own WebSocket endpoint."""

    SPOT = "spot"
    LINEAR = "linear"
    INVERSE = "inverse"
    OPTION = "option"


class Endpoint(enum.StrEnum):
    """The Bybit socket a topic lives on: one public socket per category, one private socket."""

    SPOT = "spot"
    LINEAR = "linear"
    INVERSE = "inverse"
    OPTION = "option"
    PRIVATE = "private"

    @property
    def private(self) -> bool:
        """The account stream: needs auth before subscribing."""
        return self is Endpoint.PRIVATE

    @property
    def category(self) -> str | None:
        """Bybit's category name for a public stream; None for the private one."""
        return None if self is Endpoint.PRIVATE else self.value

    @property
    def path(self) -> str:
        """URL path below the configured base URL (PROTOCOL.md §1.1), e.g. `/v5/public/linear`."""
        return "/v5/private" if self is Endpoint.PRIVATE else f"/v5/public/{self.value}"


class SubscriptionStatus(enum.StrEnum):
    PENDING = "pending"  # stored, not yet acknowledged by Bybit
    ACTIVE = "active"  # Bybit acknowledged the topic
    FAILED = "failed"  # Bybit rejected the topic; last_error holds its message
    CANCELLED = "cancelled"  # the requesting service let go of it
