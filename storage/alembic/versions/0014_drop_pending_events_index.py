"""drop `ix_filing_events_pending`: no query has read it since 0013

The notifier's claim and the operators' backlog gauge read a portal's undelivered events
through `ix_filing_events_due` (partial: undelivered events only), each filing's open ones
through `ix_filing_events_open`. The older index (delivered_at, portal, next_attempt_at) held
every event ever written, delivered ones too, and took one more entry per event (~5 a filing).

Revision ID: 0014
Revises: 0013
"""
from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_filing_events_pending", table_name="filing_events")


def downgrade() -> None:
    op.create_index("ix_filing_events_pending", "filing_events", ["delivered_at", "portal", "next_attempt_at"])
