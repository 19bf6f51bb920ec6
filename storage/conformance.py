"""Static proof that the concrete stores satisfy the service's ports: mypy checks these
functions (run `mypy storage`); nothing imports or calls them at run time."""

from __future__ import annotations

from service.identity import IdentityStore
from service.notifier import EventStore
from service.operators import OperatorStore
from service.ops_read import OpsReader
from service.relay import RelayStore
from service.store_ports import ApiStore, JobStore, Store
from storage.identity import SqlIdentityStore
from storage.operators import SqlOperatorStore
from storage.ops_queries import OpsQueries
from storage.store import SqlStore

__all__: list[str] = []


def _filing_store(store: SqlStore) -> tuple[ApiStore, Store, JobStore, EventStore, RelayStore]:
    return store, store, store, store, store


def _identity_store(store: SqlIdentityStore) -> IdentityStore:
    return store


def _operator_store(store: SqlOperatorStore) -> OperatorStore:
    return store


def _ops_reader(reader: OpsQueries) -> OpsReader:
    return reader
