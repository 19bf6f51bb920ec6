"""the notifier's claim indexes: a portal's undelivered events in the order they fall due, and
each filing's open events by (filing_id, seq)

Revision ID: 0013
Revises: 0012
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_OPEN = sa.text("delivered_at IS NULL")


def upgrade() -> None:
    op.create_index("ix_filing_events_open", "filing_events", ["filing_id", "seq"],
                    postgresql_where=_OPEN, sqlite_where=_OPEN)
    op.create_index("ix_filing_events_due", "filing_events", ["portal", "next_attempt_at"],
                    postgresql_where=_OPEN, sqlite_where=_OPEN)


def downgrade() -> None:
    op.drop_index("ix_filing_events_due", table_name="filing_events")
    op.drop_index("ix_filing_events_open", table_name="filing_events")
