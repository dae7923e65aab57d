"""A cancelled subscription is a tombstone until the owner of its topic has unbound its queue: `tombstone_settled_at`.

The worker that applies a cancel unbinds only what it bound itself, so a cancel no running worker applied (its
binder stopped, or it landed during a handover) left the queue bound for good. The cancelled row already stays
(the API shows it); this column says its binding needs nothing more, and the partial index keeps the pending ones
cheap to find. Rows cancelled more than a day ago are settled here: a tombstone older than that is given up
anyway (`stream_worker/state/tombstones.py`), and the index starts small.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 17:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("subscriptions", sa.Column("tombstone_settled_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE subscriptions SET tombstone_settled_at = now() "
        "WHERE NOT is_active AND cancelled_at < now() - interval '24 hours'"
    )
    op.create_index(
        "ix_subscriptions_tombstones",
        "subscriptions",
        ["cancelled_at"],
        unique=False,
        postgresql_where=sa.text("NOT is_active AND tombstone_settled_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_subscriptions_tombstones",
        table_name="subscriptions",
        postgresql_where=sa.text("NOT is_active AND tombstone_settled_at IS NULL"),
    )
    op.drop_column("subscriptions", "tombstone_settled_at")
