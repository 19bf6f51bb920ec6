"""Alembic environment: migrations run on the connection that `storage.migrate` hands over."""

from __future__ import annotations

from alembic import context

import storage.identity_tables  # noqa: F401 - registers the identity tables on `metadata`
import storage.delivery_tables  # noqa: F401 - registers the delivery semantics tables
import storage.operator_tables  # noqa: F401 - registers the operator identity tables
import storage.draft_tables  # noqa: F401 - registers the drafts tables
import storage.attachment_tables  # noqa: F401 - registers the attachments table
from storage.tables import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    from sqlalchemy import create_engine

    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("alembic/env.py needs a connection or sqlalchemy.url in its config")
    engine = create_engine(url)
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        context.run_migrations()
else:
    # Every migration in one transaction, on SQLite as on PostgreSQL (alembic commits SQLite's
    # after each migration by default). SQLite's DDL is transactional when the driver leaves
    # BEGIN to us (storage.engine), and the write lock taken at BEGIN IMMEDIATE is then held
    # to the end: a process starting beside the migrating one waits and finds the schema at
    # head, never half-migrated (it could take the lock between two migrations and run the next
    # one too: "table attachments already exists").
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()
