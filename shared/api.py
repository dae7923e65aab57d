"""Bodies of the REST API (requests, resources, pages, the error body), shared with API clients."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec

from shared.enums import Category, ChannelType, Endpoint, SubscriptionStatus
from shared.heartbeat import PublisherHealth, SocketHealth

ServiceName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Name of the requesting service; part of its queue names.",
        examples=["strategy-a"],
    ),
]


class SubscriptionCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Ask for a Bybit channel on behalf of a service. Compatible with the original service's clients."""

    channel_type: ChannelType
    requesting_service: ServiceName
    symbol: Annotated[str, msgspec.Meta(max_length=64, examples=["BTCUSDT"])] | None = None
    # Market data defaults to linear; for order/execution/position no category means all categories.
    category: Category | None = None
    depth: int | None = None
    interval: Annotated[str, msgspec.Meta(max_length=4)] | int | None = None


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    """One service's subscription to one Bybit topic."""

    id: uuid.UUID
    channel_type: ChannelType
    category: Category | None
    symbol: str | None
    params: dict[str, str | int]
    topic: str
    endpoint: Endpoint
    requesting_service: str
    status: SubscriptionStatus
    is_active: bool
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None
    last_event_at: datetime | None
    last_error: str | None


class SubscriptionPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Subscription]
    total: int
    limit: int
    offset: int


class CancelledCount(msgspec.Struct, frozen=True, kw_only=True):
    cancelled: int


class ErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str
    details: Any = None


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """The one error shape of the API: `{"error": {"code", "message", "details"}}`."""

    error: ErrorDetail


class CoinBalance(msgspec.Struct, frozen=True, kw_only=True):
    """Latest balance of one coin in one account, with Bybit's field names. Empty strings become null."""

    account_type: str
    coin: str
    equity: Decimal | None = None
    usdValue: Decimal | None = None  # Bybit's field names are kept on purpose
    walletBalance: Decimal | None = None
    locked: Decimal | None = None
    spotHedgingQty: Decimal | None = None
    borrowAmount: Decimal | None = None
    accruedInterest: Decimal | None = None
    totalOrderIM: Decimal | None = None
    totalPositionIM: Decimal | None = None
    totalPositionMM: Decimal | None = None
    unrealisedPnl: Decimal | None = None
    cumRealisedPnl: Decimal | None = None
    bonus: Decimal | None = None
    spotBorrow: Decimal | None = None
    availableToWithdraw: Decimal | None = None
    availableToBorrow: Decimal | None = None
    free: Decimal | None = None
    collateralSwitch: bool | None = None
    marginCollateral: bool | None = None
    message_id: str
    exchange_ts: int
    updated_at: datetime


class AccountTotals(msgspec.Struct, frozen=True, kw_only=True):
    """Account-level figures exactly as Bybit last sent them."""

    account_type: str
    totalEquity: Decimal | None = None
    totalWalletBalance: Decimal | None = None
    totalMarginBalance: Decimal | None = None
    totalAvailableBalance: Decimal | None = None
    totalPerpUPL: Decimal | None = None
    totalInitialMargin: Decimal | None = None
    totalInitialMarginByMp: Decimal | None = None
    totalMaintenanceMargin: Decimal | None = None
    totalMaintenanceMarginByMp: Decimal | None = None
    accountIMRate: Decimal | None = None
    accountIMRateByMp: Decimal | None = None
    accountMMRate: Decimal | None = None
    accountMMRateByMp: Decimal | None = None
    accountLTV: Decimal | None = None
    message_id: str
    exchange_ts: int
    updated_at: datetime


class Balances(msgspec.Struct, frozen=True, kw_only=True):
    accounts: list[AccountTotals]
    coins: list[CoinBalance]


class BalanceHistoryPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[CoinBalance]
    total: int
    limit: int
    offset: int


class DependencyHealth(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # "up" | "down"
    detail: str | None = None


class WorkerMember(msgspec.Struct, frozen=True, kw_only=True):
    """One stream worker of the cluster, from its membership lease (times by PostgreSQL's clock)."""

    worker_id: str
    alive: bool  # its lease has not expired
    lease_age_s: float  # since its last renewal
    lease_expires_in_s: float  # negative once expired
    joined_at: datetime
    holds_private: bool  # it holds the private stream lease
    topic_count: int
    # The topics it serves (its own, acknowledged by Bybit), per socket (spot, linear, inverse, option,
    # private); only in /api/v1/workers (health carries `topic_count` alone).
    topics: dict[str, list[str]] | None = None
    heartbeat_age_s: float | None = None
    healthy: bool | None = None  # its last heartbeat's verdict: every socket it needs is up


class Workers(msgspec.Struct, frozen=True, kw_only=True):
    items: list[WorkerMember]
    live: int
    private_holder: str | None  # the worker that holds the private stream lease, if any holds it
    # Wanted topics ("socket:topic") that no live worker reports as its own: a handover in progress, or
    # (if it lasts longer than a lease) a problem. At most 100 listed; `unowned_count` counts them all.
    unowned_topics: list[str]
    unowned_count: int


class WorkerHealth(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # "unknown" until a worker reports, then "up" | "stale" | "degraded"
    detail: str | None = None
    worker_id: str | None = None  # the freshest heartbeat's worker
    heartbeat_age_s: float | None = None
    sockets: dict[str, SocketHealth] | None = None  # per Bybit socket: connected, topics, last message age, ...
    publisher: PublisherHealth | None = None  # buffer depths, drops per cause, confirms
    members: list[WorkerMember] | None = None  # every worker with a membership row, live or not
    private_holder: str | None = None
    unowned_topics: int | None = None


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # "ok" | "degraded"
    database: DependencyHealth
    rabbitmq: DependencyHealth
    worker: WorkerHealth
    outbox_pending: int | None = None
