"""ops indexes: the operator API's search, summary and problems without full scans; each
attempt keeps its error class, HTTP status, and the bodies sent and received (bounded)

Revision ID: 0008
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: table → (index name, columns): see storage.tables for why each exists.
_INDEXES = {
    "deliveries": [("ix_deliveries_state_agency", ["state", "agency"]),
                   ("ix_deliveries_protocol_number", ["protocol_number"])],
    "filings": [("ix_filings_subject_tax_code", ["subject_tax_code"]),
                ("ix_filings_created_at", ["created_at"])],
    "attempts": [("ix_attempts_started_at", ["started_at"])],
}


def upgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("error_class", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("http_status", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("request_body", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("reply_body", sa.Text(), nullable=True))
    for table, indexes in _INDEXES.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, columns in indexes:
                batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    for table, indexes in _INDEXES.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, _ in indexes:
                batch_op.drop_index(name)
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_column("reply_body")
        batch_op.drop_column("request_body")
        batch_op.drop_column("http_status")
        batch_op.drop_column("error_class")
