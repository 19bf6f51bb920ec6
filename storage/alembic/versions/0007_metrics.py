"""metrics: the deliveries still in an operator's view are counted per agency and state

Revision ID: 0007_metrics
Revises: 0006
"""
from __future__ import annotations

from alembic import op

revision = "0007_metrics"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # `/metrics` counts the open and parked deliveries per agency and state at every scrape:
    # through this index the cost follows the backlog, not the whole history of deliveries.
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_state_agency", ["state", "agency"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_state_agency")
