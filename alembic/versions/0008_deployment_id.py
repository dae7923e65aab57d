"""A random id per deployment (per database): change notices are routed by it, so two deployments sharing one
RabbitMQ vhost never read each other's.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 14:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A volatile default: PostgreSQL computes it for the existing row as it adds the column.
    op.add_column(
        "desired_state",
        sa.Column(
            "deployment_id",
            sa.String(length=32),
            server_default=sa.text("replace(gen_random_uuid()::text, '-', '')"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("desired_state", "deployment_id")
