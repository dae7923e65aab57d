"""The PostgreSQL schema as SQLAlchemy 2.0 typed tables, used by Alembic and by both services.

Alembic migrations are the only way the live schema changes; this module is what they are checked against.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    Index,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.config import postgres_engine_args

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Wallet coin fields Bybit sends as decimal strings (PROTOCOL.md §9.5): (Bybit name, column name).
COIN_DECIMAL_FIELDS: tuple[tuple[str, str], ...] = (
    ("equity", "equity"),
    ("usdValue", "usd_value"),
    ("walletBalance", "wallet_balance"),
    ("locked", "locked"),
    ("spotHedgingQty", "spot_hedging_qty"),
    ("borrowAmount", "borrow_amount"),
    ("accruedInterest", "accrued_interest"),
    ("totalOrderIM", "total_order_im"),
    ("totalPositionIM", "total_position_im"),
    ("totalPositionMM", "total_position_mm"),
    ("unrealisedPnl", "unrealised_pnl"),
    ("cumRealisedPnl", "cum_realised_pnl"),
    ("bonus", "bonus"),
    ("spotBorrow", "spot_borrow"),
    ("availableToWithdraw", "available_to_withdraw"),
    ("availableToBorrow", "available_to_borrow"),
    ("free", "free"),
)
COIN_BOOL_FIELDS: tuple[tuple[str, str], ...] = (
    ("collateralSwitch", "collateral_switch"),
    ("marginCollateral", "margin_collateral"),
)
# Account-level figures of a wallet message, kept as sent.
ACCOUNT_DECIMAL_FIELDS: tuple[tuple[str, str], ...] = (
    ("totalEquity", "total_equity"),
    ("totalWalletBalance", "total_wallet_balance"),
    ("totalMarginBalance", "total_margin_balance"),
    ("totalAvailableBalance", "total_available_balance"),
    ("totalPerpUPL", "total_perp_upl"),
    ("totalInitialMargin", "total_initial_margin"),
    ("totalInitialMarginByMp", "total_initial_margin_by_mp"),
    ("totalMaintenanceMargin", "total_maintenance_margin"),
    ("totalMaintenanceMarginByMp", "total_maintenance_margin_by_mp"),
    ("accountIMRate", "account_im_rate"),
    ("accountIMRateByMp", "account_im_rate_by_mp"),
    ("accountMMRate", "account_mm_rate"),
    ("accountMMRateByMp", "account_mm_rate_by_mp"),
    ("accountLTV", "account_ltv"),
)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
    }


def _numeric() -> Mapped[Decimal | None]:
    return mapped_column(Numeric, nullable=True)


class SubscriptionRow(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'active', 'failed', 'cancelled')",
            name="status_known",
        ),
        CheckConstraint("is_active = (cancelled_at IS NULL)", name="active_iff_not_cancelled"),
        # One live row per service and Bybit stream: creating it again returns the existing row. The endpoint
        # is part of the key because a topic name alone is ambiguous (publicTrade.BTCUSDT is spot and linear).
        Index(
            "uq_subscriptions_live",
            "requesting_service",
            "endpoint",
            "topic",
            unique=True,
            postgresql_where=text("is_active"),
        ),
        Index("ix_subscriptions_live_topic", "endpoint", "topic", postgresql_where=text("is_active")),
        # The tombstones still to apply: cancelled rows whose binding the topic's owner has not unbound yet.
        Index(
            "ix_subscriptions_tombstones",
            "cancelled_at",
            postgresql_where=text("NOT is_active AND tombstone_settled_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    channel_type: Mapped[str] = mapped_column(String(32))
    category: Mapped[str | None] = mapped_column(String(16))
    symbol: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    topic: Mapped[str] = mapped_column(String(128))
    endpoint: Mapped[str] = mapped_column(String(16))
    requesting_service: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    cancelled_at: Mapped[datetime | None]
    last_event_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    # Set by the worker while the acknowledged topic delivers nothing past its channel's threshold.
    stale_since: Mapped[datetime | None]
    # Set by the worker once a cancelled row's queue binding needs nothing more: the topic's owner unbound it, a
    # newer live subscription took the binding over, or the tombstone aged out (migration 0009).
    tombstone_settled_at: Mapped[datetime | None]


class DesiredStateRow(Base):
    """A single row: the revision of the desired-subscription set, bumped in every changing transaction."""

    __tablename__ = "desired_state"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Names this deployment's change notices on the shared exchange (shared.routing.command_routing_key): random,
    # so a staging database beside production's never matches it. A restored copy of another deployment's
    # database keeps that deployment's id: give it a new one (README, "How the API tells the worker").
    deployment_id: Mapped[str] = mapped_column(
        String(32), server_default=text("replace(gen_random_uuid()::text, '-', '')")
    )


class OutboxRow(Base):
    """Notices written in the same transaction as the change, relayed to RabbitMQ when it is reachable."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    exchange: Mapped[str] = mapped_column(String(128))
    routing_key: Mapped[str] = mapped_column(String(256))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    message_id: Mapped[str] = mapped_column(String(64))
    trace_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class CoinFields:
    """Columns of one wallet coin entry (PROTOCOL.md §9.5), shared by the latest and the history table."""

    equity: Mapped[Decimal | None] = _numeric()
    usd_value: Mapped[Decimal | None] = _numeric()
    wallet_balance: Mapped[Decimal | None] = _numeric()
    locked: Mapped[Decimal | None] = _numeric()
    spot_hedging_qty: Mapped[Decimal | None] = _numeric()
    borrow_amount: Mapped[Decimal | None] = _numeric()
    accrued_interest: Mapped[Decimal | None] = _numeric()
    total_order_im: Mapped[Decimal | None] = _numeric()
    total_position_im: Mapped[Decimal | None] = _numeric()
    total_position_mm: Mapped[Decimal | None] = _numeric()
    unrealised_pnl: Mapped[Decimal | None] = _numeric()
    cum_realised_pnl: Mapped[Decimal | None] = _numeric()
    bonus: Mapped[Decimal | None] = _numeric()
    spot_borrow: Mapped[Decimal | None] = _numeric()
    available_to_withdraw: Mapped[Decimal | None] = _numeric()
    available_to_borrow: Mapped[Decimal | None] = _numeric()
    free: Mapped[Decimal | None] = _numeric()
    collateral_switch: Mapped[bool | None]
    margin_collateral: Mapped[bool | None]
    message_id: Mapped[str] = mapped_column(String(128))
    exchange_ts: Mapped[int] = mapped_column(BigInteger)


class AccountBalanceRow(CoinFields, Base):
    """Latest balance per (account type, coin)."""

    __tablename__ = "account_balances"

    account_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    coin: Mapped[str] = mapped_column(String(32), primary_key=True)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class AccountBalanceHistoryRow(CoinFields, Base):
    """Append-only: one row per coin per wallet message, idempotent by Bybit's message id."""

    __tablename__ = "account_balance_history"
    __table_args__ = (
        UniqueConstraint("message_id", "account_type", "coin", name="uq_account_balance_history_message"),
        Index("ix_account_balance_history_coin_ts", "coin", "exchange_ts"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_type: Mapped[str] = mapped_column(String(32))
    coin: Mapped[str] = mapped_column(String(32))
    recorded_at: Mapped[datetime] = mapped_column(server_default=func.now())


class AccountTotalsRow(Base):
    """Latest account-level figures per account type, as Bybit sent them."""

    __tablename__ = "account_totals"

    account_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    total_equity: Mapped[Decimal | None] = _numeric()
    total_wallet_balance: Mapped[Decimal | None] = _numeric()
    total_margin_balance: Mapped[Decimal | None] = _numeric()
    total_available_balance: Mapped[Decimal | None] = _numeric()
    total_perp_upl: Mapped[Decimal | None] = _numeric()
    total_initial_margin: Mapped[Decimal | None] = _numeric()
    total_initial_margin_by_mp: Mapped[Decimal | None] = _numeric()
    total_maintenance_margin: Mapped[Decimal | None] = _numeric()
    total_maintenance_margin_by_mp: Mapped[Decimal | None] = _numeric()
    account_im_rate: Mapped[Decimal | None] = _numeric()
    account_im_rate_by_mp: Mapped[Decimal | None] = _numeric()
    account_mm_rate: Mapped[Decimal | None] = _numeric()
    account_mm_rate_by_mp: Mapped[Decimal | None] = _numeric()
    account_ltv: Mapped[Decimal | None] = _numeric()
    message_id: Mapped[str] = mapped_column(String(128))
    exchange_ts: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class AccountOpenItemRow(Base):
    """What the gateway last told consumers about each order and position: open or not, as of Bybit's
    `updatedTime`. After a gap the re-sync resolves every row still open that Bybit no longer lists."""

    __tablename__ = "account_open_items"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # "order" or "position"
    category: Mapped[str] = mapped_column(String(16), primary_key=True)
    item_key: Mapped[str] = mapped_column(String(160), primary_key=True)  # orderId; "{symbol}:{positionIdx}"
    symbol: Mapped[str] = mapped_column(String(64))
    is_open: Mapped[bool] = mapped_column(Boolean)
    exchange_ms: Mapped[int] = mapped_column(BigInteger)  # the fact's `updatedTime`: newer wins
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class WorkerHeartbeatRow(Base):
    """Each worker's latest self-report (sockets, buffers, drops), written every few seconds."""

    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    state: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))


class WorkerMemberRow(Base):
    """One stream worker's membership lease. Times come from PostgreSQL's clock (`now()`), never a worker's,
    so clock skew between containers cannot make a live worker look dead. A row whose lease expired is a dead
    worker: its topics belong to the live ones."""

    __tablename__ = "worker_members"

    worker_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(64))  # one per process: tells a restart from a twin
    joined_at: Mapped[datetime] = mapped_column(server_default=func.now())
    renewed_at: Mapped[datetime] = mapped_column(server_default=func.now())
    lease_expires_at: Mapped[datetime] = mapped_column(index=True)
    # The topics this worker is assigned, per Bybit socket: written when they change, not on every renewal.
    topics: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))


def member_topics(value: object) -> dict[str, list[str]]:
    """A `worker_members.topics` value as {socket: [topic, ...]}, read defensively: another process wrote it."""
    if not isinstance(value, dict):
        return {}
    return {str(socket): [str(t) for t in listed] for socket, listed in value.items() if isinstance(listed, list)}


PRIVATE_LEASE = "private"  # the `leases` row of the one authenticated Bybit stream


class LeaseRow(Base):
    """A named exclusive lease (today only `private`: the one authenticated Bybit stream of the cluster)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))  # worker_id
    instance_id: Mapped[str] = mapped_column(String(64))
    epoch: Mapped[int] = mapped_column(BigInteger)  # +1 each time the lease changes hands
    acquired_at: Mapped[datetime] = mapped_column(server_default=func.now())
    renewed_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]
    # The holder's last private frame (epoch ms): a successor re-syncs account state from shortly before it.
    last_frame_ms: Mapped[int | None] = mapped_column(BigInteger)


class ConnectBudgetRow(Base):
    """The recent new Bybit connections of one (scope, WebSocket domain), as epoch seconds by PostgreSQL's clock.

    rate-limit.mdx: "Do not establish more than 500 connections within a 5-minute window", counted per IP and
    domain. Every worker of one scope (one egress IP) appends here before it connects (`ConnectBudget`).
    """

    __tablename__ = "connect_budgets"

    scope: Mapped[str] = mapped_column(String(128), primary_key=True)
    domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    connects: Mapped[list[float]] = mapped_column(
        ARRAY(Float(precision=53)), server_default=text("'{}'::double precision[]")
    )


class AuditRow(Base):
    """One row per write request to the API (create, cancel, cancel-by-service, ...), whatever its outcome.

    A change and its row commit in one transaction; a refused or failed request is recorded on its own. Keys
    appear only as key ids, never as keys.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_service_at", "service", "at"),
        Index("ix_audit_log_key_id_at", "key_id", "at"),
        Index("ix_audit_log_subscription_id", "subscription_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(server_default=func.now())
    key_id: Mapped[str | None] = mapped_column(String(16))
    role: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    service: Mapped[str | None] = mapped_column(String(64))
    subscription_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    trace_id: Mapped[str] = mapped_column(String(64))
    result: Mapped[str] = mapped_column(String(32))
    status: Mapped[int] = mapped_column(SmallInteger)  # the HTTP status the caller got
    detail: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))


metadata = Base.metadata


def create_engine(database_url: str, timeout: float, *, pool_size: int, max_overflow: int) -> AsyncEngine:
    """The async engine both services use (it connects lazily: nothing happens until first use). `timeout`
    bounds connecting, waiting for a pooled connection and each statement."""
    url, tls = postgres_engine_args(database_url)  # sslmode, sslrootcert: asyncpg takes them as `ssl`
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=timeout,
        pool_pre_ping=True,  # a restarted PostgreSQL leaves dead pooled connections behind
        connect_args={"timeout": timeout, "command_timeout": timeout, **tls},
    )
