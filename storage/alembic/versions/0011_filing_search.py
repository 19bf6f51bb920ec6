"""filing search and retention: archived and purged marks, the portals' search indexes

Revision ID: 0011
Revises: 0010
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: (name, table, columns) of the indexes the portals' search and the retention pass use.
_INDEXES = (
    ("ix_filings_portal_created_at_id", "filings", ["portal", "created_at", "id"]),
    ("ix_filings_portal_subject_created_at", "filings", ["portal", "subject_tax_code", "created_at"]),
    ("ix_filings_portal_kind_created_at", "filings", ["portal", "kind", "created_at"]),
    ("ix_filings_portal_state_created_at", "filings", ["portal", "state", "created_at"]),
    ("ix_filings_portal_archived_created_at", "filings", ["portal", "archived_at", "created_at"]),
    ("ix_filings_payload_purged_at_updated_at", "filings", ["payload_purged_at", "updated_at"]),
    ("ix_deliveries_agency_filing_id", "deliveries", ["agency", "filing_id"]),
    ("ix_filing_viewers_tax_code_filing_id", "filing_viewers", ["tax_code", "filing_id"]),
)


def upgrade() -> None:
    op.add_column("filings", sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("filings", sa.Column("payload_purged_at", sa.DateTime(timezone=True), nullable=True))
    for name, table, columns in _INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _columns in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
    with op.batch_alter_table("filings", schema=None) as batch_op:
        batch_op.drop_column("payload_purged_at")
        batch_op.drop_column("archived_at")
