"""Recent Bybit connects per (scope, WebSocket domain): one budget shared by every worker behind one IP.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 14:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "connect_budgets",
        sa.Column("scope", sa.String(length=128), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column(
            "connects",
            postgresql.ARRAY(sa.Float(precision=53)),
            server_default=sa.text("'{}'::double precision[]"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("scope", "domain", name=op.f("pk_connect_budgets")),
    )


def downgrade() -> None:
    op.drop_table("connect_budgets")
