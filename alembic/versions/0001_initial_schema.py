"""Initial schema: subscriptions, the desired-state revision, the notice outbox and account balances.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 00:36:29.385949
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('account_balance_history',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('account_type', sa.String(length=32), nullable=False),
    sa.Column('coin', sa.String(length=32), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('equity', sa.Numeric(), nullable=True),
    sa.Column('usd_value', sa.Numeric(), nullable=True),
    sa.Column('wallet_balance', sa.Numeric(), nullable=True),
    sa.Column('locked', sa.Numeric(), nullable=True),
    sa.Column('spot_hedging_qty', sa.Numeric(), nullable=True),
    sa.Column('borrow_amount', sa.Numeric(), nullable=True),
    sa.Column('accrued_interest', sa.Numeric(), nullable=True),
    sa.Column('total_order_im', sa.Numeric(), nullable=True),
    sa.Column('total_position_im', sa.Numeric(), nullable=True),
    sa.Column('total_position_mm', sa.Numeric(), nullable=True),
    sa.Column('unrealised_pnl', sa.Numeric(), nullable=True),
    sa.Column('cum_realised_pnl', sa.Numeric(), nullable=True),
    sa.Column('bonus', sa.Numeric(), nullable=True),
    sa.Column('spot_borrow', sa.Numeric(), nullable=True),
    sa.Column('available_to_withdraw', sa.Numeric(), nullable=True),
    sa.Column('available_to_borrow', sa.Numeric(), nullable=True),
    sa.Column('free', sa.Numeric(), nullable=True),
    sa.Column('collateral_switch', sa.Boolean(), nullable=True),
    sa.Column('margin_collateral', sa.Boolean(), nullable=True),
    sa.Column('message_id', sa.String(length=128), nullable=False),
    sa.Column('exchange_ts', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_account_balance_history')),
    sa.UniqueConstraint('message_id', 'account_type', 'coin', name='uq_account_balance_history_message')
    )
    op.create_index('ix_account_balance_history_coin_ts', 'account_balance_history', ['coin', 'exchange_ts'], unique=False)
    op.create_table('account_balances',
    sa.Column('account_type', sa.String(length=32), nullable=False),
    sa.Column('coin', sa.String(length=32), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('equity', sa.Numeric(), nullable=True),
    sa.Column('usd_value', sa.Numeric(), nullable=True),
    sa.Column('wallet_balance', sa.Numeric(), nullable=True),
    sa.Column('locked', sa.Numeric(), nullable=True),
    sa.Column('spot_hedging_qty', sa.Numeric(), nullable=True),
    sa.Column('borrow_amount', sa.Numeric(), nullable=True),
    sa.Column('accrued_interest', sa.Numeric(), nullable=True),
    sa.Column('total_order_im', sa.Numeric(), nullable=True),
    sa.Column('total_position_im', sa.Numeric(), nullable=True),
    sa.Column('total_position_mm', sa.Numeric(), nullable=True),
    sa.Column('unrealised_pnl', sa.Numeric(), nullable=True),
    sa.Column('cum_realised_pnl', sa.Numeric(), nullable=True),
    sa.Column('bonus', sa.Numeric(), nullable=True),
    sa.Column('spot_borrow', sa.Numeric(), nullable=True),
    sa.Column('available_to_withdraw', sa.Numeric(), nullable=True),
    sa.Column('available_to_borrow', sa.Numeric(), nullable=True),
    sa.Column('free', sa.Numeric(), nullable=True),
    sa.Column('collateral_switch', sa.Boolean(), nullable=True),
    sa.Column('margin_collateral', sa.Boolean(), nullable=True),
    sa.Column('message_id', sa.String(length=128), nullable=False),
    sa.Column('exchange_ts', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('account_type', 'coin', name=op.f('pk_account_balances'))
    )
    op.create_table('account_totals',
    sa.Column('account_type', sa.String(length=32), nullable=False),
    sa.Column('total_equity', sa.Numeric(), nullable=True),
    sa.Column('total_wallet_balance', sa.Numeric(), nullable=True),
    sa.Column('total_margin_balance', sa.Numeric(), nullable=True),
    sa.Column('total_available_balance', sa.Numeric(), nullable=True),
    sa.Column('total_perp_upl', sa.Numeric(), nullable=True),
    sa.Column('total_initial_margin', sa.Numeric(), nullable=True),
    sa.Column('total_initial_margin_by_mp', sa.Numeric(), nullable=True),
    sa.Column('total_maintenance_margin', sa.Numeric(), nullable=True),
    sa.Column('total_maintenance_margin_by_mp', sa.Numeric(), nullable=True),
    sa.Column('account_im_rate', sa.Numeric(), nullable=True),
    sa.Column('account_im_rate_by_mp', sa.Numeric(), nullable=True),
    sa.Column('account_mm_rate', sa.Numeric(), nullable=True),
    sa.Column('account_mm_rate_by_mp', sa.Numeric(), nullable=True),
    sa.Column('account_ltv', sa.Numeric(), nullable=True),
    sa.Column('message_id', sa.String(length=128), nullable=False),
    sa.Column('exchange_ts', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('account_type', name=op.f('pk_account_totals'))
    )
    op.create_table('desired_state',
    sa.Column('id', sa.SmallInteger(), nullable=False),
    sa.Column('revision', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_desired_state_single_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_desired_state'))
    )
    # The revision starts at 0; every change of the desired set bumps it in the same transaction.
    op.execute("INSERT INTO desired_state (id, revision) VALUES (1, 0)")
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('exchange', sa.String(length=128), nullable=False),
    sa.Column('routing_key', sa.String(length=256), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('trace_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox'))
    )
    op.create_table('subscriptions',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('channel_type', sa.String(length=32), nullable=False),
    sa.Column('category', sa.String(length=16), nullable=True),
    sa.Column('symbol', sa.String(length=64), nullable=True),
    sa.Column('params', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('topic', sa.String(length=128), nullable=False),
    sa.Column('endpoint', sa.String(length=16), nullable=False),
    sa.Column('requesting_service', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('is_active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_event_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'active', 'failed', 'cancelled')", name=op.f('ck_subscriptions_status_known')),
    sa.CheckConstraint('is_active = (cancelled_at IS NULL)', name=op.f('ck_subscriptions_active_iff_not_cancelled')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subscriptions'))
    )
    op.create_index('ix_subscriptions_live_topic', 'subscriptions', ['endpoint', 'topic'], unique=False, postgresql_where=sa.text('is_active'))
    op.create_index(op.f('ix_subscriptions_requesting_service'), 'subscriptions', ['requesting_service'], unique=False)
    op.create_index('uq_subscriptions_live', 'subscriptions', ['requesting_service', 'endpoint', 'topic'], unique=True, postgresql_where=sa.text('is_active'))


def downgrade() -> None:
    op.drop_index('uq_subscriptions_live', table_name='subscriptions', postgresql_where=sa.text('is_active'))
    op.drop_index(op.f('ix_subscriptions_requesting_service'), table_name='subscriptions')
    op.drop_index('ix_subscriptions_live_topic', table_name='subscriptions', postgresql_where=sa.text('is_active'))
    op.drop_table('subscriptions')
    op.drop_table('outbox')
    op.drop_table('desired_state')
    op.drop_table('account_totals')
    op.drop_table('account_balances')
    op.drop_index('ix_account_balance_history_coin_ts', table_name='account_balance_history')
    op.drop_table('account_balance_history')
