"""ops actions: agencies paused by an operator, and jobs an operator forced past Retry-After

Revision ID: 0009
Revises: 0008
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agency_pauses",
        sa.Column("agency", sa.String(length=32), nullable=False),
        sa.Column("paused_by", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("agency", name=op.f("pk_agency_pauses")),
    )
    # A job an operator sent "now" despite the agency's Retry-After: the worker skips the
    # breaker's throttle for it (and only for it).
    op.add_column("outbox", sa.Column("forced", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("forced")
    op.drop_table("agency_pauses")
