"""drafts: saved, possibly incomplete filings and who may read them

Revision ID: 0010
Revises: 0009
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drafts",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("portal", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("media_type", sa.String(length=40), nullable=False),
        sa.Column("document", sa.LargeBinary(), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("subject_tax_code", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=32), nullable=True),
        sa.Column("submission", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_drafts")),
        sa.UniqueConstraint("id", name=op.f("uq_drafts_id")),
    )
    op.create_index("ix_drafts_portal_owner", "drafts", ["portal", "owner"])
    op.create_index("ix_drafts_expires_at", "drafts", ["expires_at"])
    op.create_table(
        "draft_viewers",
        sa.Column("draft_id", sa.String(length=32), nullable=False),
        sa.Column("tax_code", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["draft_id"], ["drafts.id"], name=op.f("fk_draft_viewers_draft_id_drafts")),
        sa.PrimaryKeyConstraint("draft_id", "tax_code", name=op.f("pk_draft_viewers")),
    )
    op.create_index("ix_draft_viewers_tax_code", "draft_viewers", ["tax_code"])


def downgrade() -> None:
    op.drop_index("ix_draft_viewers_tax_code", table_name="draft_viewers")
    op.drop_table("draft_viewers")
    op.drop_index("ix_drafts_expires_at", table_name="drafts")
    op.drop_index("ix_drafts_portal_owner", table_name="drafts")
    op.drop_table("drafts")
