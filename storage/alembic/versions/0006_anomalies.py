"""anomalies: contradictions kept for operators, and protocol numbers looked up per agency

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "anomalies",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(length=32), nullable=False),
        sa.Column("filing_id", _ID, nullable=False),
        sa.Column("agency", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"], name=op.f("fk_anomalies_delivery_id_deliveries")),
        sa.ForeignKeyConstraint(["filing_id"], ["filings.id"], name=op.f("fk_anomalies_filing_id_filings")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_anomalies")),
    )
    with op.batch_alter_table("anomalies", schema=None) as batch_op:
        batch_op.create_index("ix_anomalies_filing_id", ["filing_id"], unique=False)
        batch_op.create_index("ix_anomalies_created_at", ["created_at"], unique=False)
    # Each recorded protocol number is looked up among the agency's others (duplicate numbers).
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_agency_protocol_number", ["agency", "protocol_number"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_agency_protocol_number")
    with op.batch_alter_table("anomalies", schema=None) as batch_op:
        batch_op.drop_index("ix_anomalies_created_at")
        batch_op.drop_index("ix_anomalies_filing_id")
    op.drop_table("anomalies")
