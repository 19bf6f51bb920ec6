"""delivery semantics: ordering and hand-off, late outcomes, corrections, events, circuits

Revision ID: 0004
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_DELIVERY_COLUMNS = (
    ("depends_on", sa.String(length=32)),
    ("on_reject", sa.String(length=16)),
    ("handoff", sa.JSON()),
    ("correlation_id", sa.String(length=128)),
    ("poll_url", sa.Text()),
    ("acknowledged_at", sa.DateTime(timezone=True)),
    ("schedule_origin", sa.DateTime(timezone=True)),
    ("corrects_delivery_id", sa.String(length=32)),
    ("corrects_protocol_number", sa.String(length=64)),
    ("superseded_by", sa.String(length=32)),
)


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        for name, type_ in _DELIVERY_COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
        batch_op.add_column(sa.Column("polls", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index("ix_deliveries_agency_correlation_id", ["agency", "correlation_id"], unique=False)

    op.create_table(
        "filing_events",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("filing_id", _ID, nullable=False),
        sa.Column("portal", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("leased_until", sa.Float(), nullable=True),
        sa.Column("delivered_at", sa.Float(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["filing_id"], ["filings.id"], name=op.f("fk_filing_events_filing_id_filings")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_filing_events")),
        sa.UniqueConstraint("filing_id", "seq", name="uq_filing_events_filing_id_seq"),
    )
    with op.batch_alter_table("filing_events", schema=None) as batch_op:
        batch_op.create_index("ix_filing_events_pending", ["delivered_at", "portal", "next_attempt_at"], unique=False)

    op.create_table(
        "agency_status",
        sa.Column("agency", sa.String(length=32), nullable=False),
        sa.Column("circuit", sa.String(length=16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.Float(), nullable=True),
        sa.Column("open_until", sa.Float(), nullable=True),
        sa.Column("throttled_until", sa.Float(), nullable=True),
        sa.Column("reported_by", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("agency", name=op.f("pk_agency_status")),
    )


def downgrade() -> None:
    op.drop_table("agency_status")
    with op.batch_alter_table("filing_events", schema=None) as batch_op:
        batch_op.drop_index("ix_filing_events_pending")
    op.drop_table("filing_events")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_agency_correlation_id")
        batch_op.drop_column("polls")
        for name, _ in reversed(_DELIVERY_COLUMNS):
            batch_op.drop_column(name)
