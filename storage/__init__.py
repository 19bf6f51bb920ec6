"""Persistence with SQLAlchemy 2: tables, engine factory, migrations, the store's operations."""
