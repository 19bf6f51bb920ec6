"""identity: delegations, seen token ids, lockouts, filing readers, audit hash chain

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 10:00:00

Audit lines written before this revision are chained here, in id order, so that
`hub.py audit verify` holds for an existing database too.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from domain.audit import GENESIS_HASH, audit_hash, canonical_line

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _chain_existing_lines() -> None:
    bind = op.get_bind()
    audit = sa.table(
        "audit_log",
        sa.column("id", _ID), sa.column("at", sa.DateTime(timezone=True)),
        sa.column("actor", sa.String), sa.column("action", sa.String),
        sa.column("subject", sa.String), sa.column("outcome", sa.String),
        sa.column("detail", sa.JSON), sa.column("prev_hash", sa.String), sa.column("hash", sa.String),
    )
    prev = GENESIS_HASH
    rows = bind.execute(sa.select(audit).order_by(audit.c.id)).all()
    for row in rows:
        line = canonical_line(at=row.at, actor=row.actor, action=row.action, subject=row.subject,
                              outcome=row.outcome, detail=row.detail)
        digest = audit_hash(prev, line)
        bind.execute(sa.update(audit).where(audit.c.id == row.id).values(prev_hash=prev, hash=digest))
        prev = digest


def upgrade() -> None:
    op.create_table(
        "delegations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("parent_id", sa.String(length=32), nullable=True),
        sa.Column("subject_tax_code", sa.String(length=16), nullable=False),
        sa.Column("delegate_tax_code", sa.String(length=16), nullable=False),
        sa.Column("agencies", sa.JSON(), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=False),
        sa.Column("granted_by", sa.String(length=16), nullable=False),
        sa.Column("portal", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["parent_id"], ["delegations.id"],
                                name=op.f("fk_delegations_parent_id_delegations")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delegations")),
    )
    with op.batch_alter_table("delegations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delegations_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index("ix_delegations_subject_delegate",
                              ["subject_tax_code", "delegate_tax_code"], unique=False)

    op.create_table(
        "seen_tokens",
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("jti", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("issuer", "jti", name=op.f("pk_seen_tokens")),
    )
    with op.batch_alter_table("seen_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_seen_tokens_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "auth_failures",
        sa.Column("caller", sa.String(length=160), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.Float(), nullable=False),
        sa.Column("locked_until", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("caller", name=op.f("pk_auth_failures")),
    )

    op.create_table(
        "filing_viewers",
        sa.Column("filing_id", _ID, nullable=False),
        sa.Column("tax_code", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["filing_id"], ["filings.id"],
                                name=op.f("fk_filing_viewers_filing_id_filings")),
        sa.PrimaryKeyConstraint("filing_id", "tax_code", name=op.f("pk_filing_viewers")),
    )

    with op.batch_alter_table("filings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("filed_by", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("responsible_tax_code", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("authorization", sa.JSON(), nullable=True))

    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    _chain_existing_lines()
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_audit_log_prev_hash"), ["prev_hash"])


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_audit_log_prev_hash"), type_="unique")
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
    with op.batch_alter_table("filings", schema=None) as batch_op:
        batch_op.drop_column("authorization")
        batch_op.drop_column("responsible_tax_code")
        batch_op.drop_column("filed_by")
    op.drop_table("filing_viewers")
    op.drop_table("auth_failures")
    with op.batch_alter_table("seen_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_seen_tokens_expires_at"))
    op.drop_table("seen_tokens")
    with op.batch_alter_table("delegations", schema=None) as batch_op:
        batch_op.drop_index("ix_delegations_subject_delegate")
        batch_op.drop_index(batch_op.f("ix_delegations_parent_id"))
    op.drop_table("delegations")
