"""Delivery semantics inside one write transaction: filing locks, events, dependents, outcomes.

Every transaction that changes a delivery locks its filing row first (in id order), then
reads and writes the filing's deliveries, appends the filing's events and re-derives its
state. So two workers finishing two recipients of one filing never compute the filing's state
from stale reads, and the events of one filing get gap-free, ordered sequence numbers.

Since nobody else writes a locked filing's deliveries, a batch reads what it needs once, works
out every change in memory and writes each kind of row with one statement per table: a
multi-row INSERT, an executemany of the columns it changed (which psycopg 3 sends as one
pipeline), one UPDATE of the filings. The cost of a batch then hardly grows with the number of
statements a per-row write would have needed. The statements are built once, not per batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, NamedTuple

import structlog
from sqlalchemy import (
    ARRAY,
    JSON,
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    String,
    Table,
    Update,
    and_,
    any_,
    bindparam,
    case,
    false,
    func,
    null,
    or_,
    select,
    true,
    tuple_,
    union_all,
    update,
)

from domain.messages import Receipt
from domain.states import (
    ESITO_DECISIONS,
    OPEN_DELIVERY_STATES,
    TERMINAL_DELIVERY_STATES,
    Decision,
    DeliveryState,
)
from domain.timestamps import agency_instant
from routing.aggregate import aggregate_filing_state
from routing.plan import fill_handoffs, handoff_sources
from service.ports import AttemptRecord, Completion
from storage.anomalies import (
    DECISION_CONFLICT,
    PROTOCOL_NUMBER_CONFLICT,
    anomaly_json,
    bounded,
    duplicate_number_anomalies,
    keep_anomalies,
    number_anomalies,
    number_pairs,
)
from storage.binds import values_in
from storage.delivery_tables import filing_events
from storage.pipelining import DriverStatement, pipelined, queue_commit
from storage.row_inserts import RowsInsert, RowsUpdate, by_driver
from storage.tables import attempts, deliveries, filings, outbox

__all__ = [
    "EventLog",
    "apply_completions",
    "apply_late_outcome",
    "flag_anomalies",
    "initial_state",
    "lock_filings",
    "recipient_payload",
    "refresh_filings",
    "settle_dependents",
]

_S = DeliveryState
_log = structlog.get_logger("crocevia.store")
_TERMINAL = {s.value for s in TERMINAL_DELIVERY_STATES}
_OPEN = {s.value for s in OPEN_DELIVERY_STATES}

#: Event types (the `type` of a filing event).
FILING_ACCEPTED = "filing.accepted"
FILING_STATE_CHANGED = "filing.state_changed"
RECIPIENT_CHANGED = "recipient.state_changed"
RECIPIENT_CORRECTED = "recipient.corrected"
RECIPIENT_ANOMALY = "recipient.anomaly"


def _pairs_in(first: ColumnElement[Any], second: ColumnElement[Any], name: str, items: tuple[Any, Any],
              postgresql: bool) -> ColumnElement[bool]:
    """`(first, second) IN :name`, a list of pairs. On PostgreSQL (see `storage.binds.values_in`)
    two array parameters, `name_a` and `name_b` (`_pair_params` splits the pairs), zipped by `unnest`;
    `first = ANY (name_a)` lets the planner look the rows up by `first` whatever it guesses
    of the zipped pairs: `first` must be the selective column, with an index of its own."""
    if not postgresql:
        return tuple_(first, second).in_(bindparam(name, expanding=True))
    firsts = bindparam(f"{name}_a", type_=ARRAY(items[0]))
    zipped = func.unnest(firsts, bindparam(f"{name}_b", type_=ARRAY(items[1]))).table_valued("a", "b").render_derived()
    return and_(first == any_(firsts), tuple_(first, second).in_(select(zipped.c.a, zipped.c.b)))


def _pair_params(name: str, pairs: Sequence[tuple[Any, Any]], postgresql: bool) -> dict[str, Any]:
    """The bind parameters of `_pairs_in(…, name, …)` for `pairs`."""
    if not postgresql:
        return {name: list(pairs)}
    return {f"{name}_a": [a for a, _ in pairs], f"{name}_b": [b for _, b in pairs]}


def _is_postgresql(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


#: The hot path's statements are built once: a statement built per call costs its
#: construction and its cache key at every call, more than the database's work on a small batch.
#: Each comes in two forms, for PostgreSQL (True) and SQLite (False): see `storage.binds.values_in`.
_LOCK_FILINGS = {
    postgresql: select(filings.c.id, filings.c.reference, filings.c.portal, filings.c.kind, filings.c.state)
    .where(values_in(filings.c.id, "ids", BigInteger, postgresql))
    .order_by(filings.c.id)
    .with_for_update()
    for postgresql in (True, False)
}
_LOCKED_COLUMNS = tuple(column.name for column in _LOCK_FILINGS[True].selected_columns)
_LOCK_FILINGS_BY_DRIVER = DriverStatement(_LOCK_FILINGS[True])  # rides a pipeline (`_read_batch`)
# Through the driver's executemany on PostgreSQL (`storage.row_inserts`).
_INSERT_EVENTS = RowsInsert(filing_events)
_INSERT_ATTEMPTS = RowsInsert(attempts)
_INSERT_JOBS = RowsInsert(outbox)


def lock_filings(conn: Connection, filing_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Lock the filings (PostgreSQL `FOR UPDATE`, in id order; SQLite holds the database) and
    return their id → {reference, portal, kind, state}."""
    ids = sorted(set(filing_ids))
    if not ids:
        return {}
    return {r.id: dict(r._mapping) for r in conn.execute(_LOCK_FILINGS[_is_postgresql(conn)], {"ids": ids}).all()}


def recipient_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    """A recipient as the events and the status API show it."""
    payload = {
        "agency": row["agency"],
        "operation": row["operation"],
        "deliveryId": row["id"],
        "messageId": row["message_id"],
        "state": row["state"],
        "protocolNumber": row.get("protocol_number"),
        "protocolledAt": agency_instant(row.get("protocolled_at")),
        "outcome": row.get("outcome"),
        "outcomeCode": row.get("outcome_code"),
        "outcomeText": row.get("outcome_text"),
        "references": row.get("references") or {},
    }
    if row.get("depends_on"):
        payload["waitsFor"] = row["depends_on"]
    if row.get("corrects_delivery_id"):
        payload["corrects"] = corrects_of(row)
    return payload


def corrects_of(row: Mapping[str, Any]) -> dict[str, str] | None:
    if not row.get("corrects_delivery_id"):
        return None
    corrects = {"deliveryId": row["corrects_delivery_id"]}
    header = (row.get("content") or {}).get("messageHeader") or {}
    if (header.get("corrects") or {}).get("messageId"):
        corrects["messageId"] = header["corrects"]["messageId"]
    if row.get("corrects_protocol_number"):
        corrects["protocolNumber"] = row["corrects_protocol_number"]
    return corrects


class EventLog:
    """Appends filing events inside the caller's transaction, numbering each filing's events.

    Use one log per transaction: it reads the last sequence numbers of all its filings at the
    first event, so events another log writes for them later in the transaction would clash.
    """

    def __init__(self, conn: Connection, filings_info: Mapping[int, Mapping[str, Any]], now: datetime,
                 epoch: float, *, new_filings: Iterable[int] = (), last_seqs: Mapping[int, int] | None = None,
                 ) -> None:
        self._conn = conn
        self._info = filings_info
        self._now = now
        self._epoch = epoch
        # Filings inserted in this transaction have no events yet: numbered from 1, unread.
        self._next: dict[int, int] = {fid: 1 for fid in new_filings}
        # Last sequence numbers the caller read already (under the filings' locks): not read again.
        self._next.update({fid: seq + 1 for fid, seq in (last_seqs or {}).items()})
        self._rows: list[dict[str, Any]] = []

    def _number_from_last(self, filing_id: int) -> None:
        # One grouped read for every filing of the transaction rather than one per filing.
        ids = {fid for fid in self._info if fid not in self._next} | {filing_id}
        last = {fid: seq for fid, seq in self._conn.execute(
            select(filing_events.c.filing_id, func.max(filing_events.c.seq))
            .where(filing_events.c.filing_id.in_(sorted(ids)))
            .group_by(filing_events.c.filing_id)
        )}
        for fid in ids:
            self._next[fid] = (last.get(fid) or 0) + 1

    def add(self, filing_id: int, type_: str, data: dict[str, Any]) -> None:
        if filing_id not in self._next:
            self._number_from_last(filing_id)
        seq = self._next[filing_id]
        self._next[filing_id] = seq + 1
        info = self._info[filing_id]
        self._rows.append({
            "id": uuid.uuid4().hex,
            "filing_id": filing_id,
            "portal": info["portal"],
            "seq": seq,
            "type": type_,
            "payload": {"reference": info["reference"], **data},
            "created_at": self._now,
            "next_attempt_at": self._epoch,
            "attempts": 0,
        })

    def recipient(self, row: Mapping[str, Any], previous: str | None, type_: str = RECIPIENT_CHANGED) -> None:
        self.add(row["filing_id"], type_, {"previousState": previous, "recipient": recipient_payload(row)})

    def flush(self) -> None:
        if self._rows:
            _INSERT_EVENTS(self._conn, self._rows)
            self._rows = []


@lru_cache(maxsize=64)
def _rows_update(table: Table, columns: tuple[str, ...], unread: str | None = None) -> Update:
    """`UPDATE table SET columns… WHERE id = …` with a bind parameter per column, to run as an
    executemany (the parameters are prefixed: SET-clause names are reserved). The `unread`
    column (one never NULL) keeps its value where the parameter is NULL: it was not read."""
    values: dict[str, Any] = {}
    for name in columns:
        # A JSON column read as SQL NULL must be written back as SQL NULL, not as JSON 'null'.
        type_ = JSON(none_as_null=True) if isinstance(table.c[name].type, JSON) else table.c[name].type
        values[name] = bindparam(f"b_{name}", type_=type_)
        if name == unread:
            values[name] = func.coalesce(values[name], table.c[name])
    return update(table).where(table.c.id == bindparam("b_id")).values(values)


@lru_cache(maxsize=64)
def _rows_writer(table: Table, columns: tuple[str, ...], unread: str | None = None) -> RowsUpdate:
    """`_rows_update` run over rows keyed by column name: on PostgreSQL through the driver's
    executemany (`storage.row_inserts`)."""
    keys = {"b_id": "id", **{f"b_{name}": name for name in columns}}
    return RowsUpdate(_rows_update(table, columns, unread), keys)


def _write_rows(conn: Connection, table: Table, columns: tuple[str, ...], rows: Iterable[Mapping[str, Any]],
                unread: str | None = None) -> None:
    """Write the same columns of many rows (by `id`) with one executemany (`unread`: see `_rows_update`)."""
    rows = list(rows)
    if rows:
        _rows_writer(table, columns, unread)(conn, rows)


#: Filings whose states a batch changed, past which `refresh_filings` writes them with an
#: executemany: one statement of its own for each count up to it.
_STATES_PER_UPDATE = 16


@lru_cache(maxsize=2 * (_STATES_PER_UPDATE + 1))
def _date_filings(moved: int, postgresql: bool) -> Update:
    """`UPDATE filings SET updated_at = :now, state = CASE WHEN id = :id_0 THEN :state_0 … ELSE
    state END WHERE id IN (:ids)`: dates the filings and sets the state of the `moved` ones
    (no CASE when none moved), in one statement rather than one per filing."""
    values: dict[str, Any] = {"updated_at": bindparam("now", type_=filings.c.updated_at.type)}
    if moved:
        values["state"] = case(*((filings.c.id == bindparam(f"id_{k}", type_=filings.c.id.type),
                                  bindparam(f"state_{k}", type_=filings.c.state.type)) for k in range(moved)),
                               else_=filings.c.state)
    return update(filings).where(values_in(filings.c.id, "ids", BigInteger, postgresql)).values(values)


def refresh_filings(conn: Connection, info: Mapping[int, dict[str, Any]], now: datetime, events: EventLog,
                    current: Iterable[Mapping[str, Any]] | None = None) -> None:
    """Re-derive each filing's state from its current deliveries; a change is an event.

    `current`: every delivery of the filings as the transaction leaves them, when the caller
    holds them all already (then they are not read again)."""
    if not info:
        return
    if current is None:
        rows: Iterable[Mapping[str, Any]] = [{"filing_id": r.filing_id, "state": r.state} for r in conn.execute(
            select(deliveries.c.filing_id, deliveries.c.state).where(
                deliveries.c.filing_id.in_(list(info)), deliveries.c.superseded_by.is_(None)
            )
        )]
    else:
        rows = (r for r in current if not r["superseded_by"])
    states: dict[int, list[str]] = {fid: [] for fid in info}
    for row in rows:
        states[row["filing_id"]].append(row["state"])
    moved = []
    for filing_id, delivery_states in states.items():
        new = aggregate_filing_state(delivery_states).value
        old = info[filing_id]["state"]
        if new != old:
            moved.append(filing_id)
            info[filing_id]["state"] = new
            events.add(filing_id, FILING_STATE_CHANGED, {"state": new, "previousState": old})
    if len(moved) > _STATES_PER_UPDATE:
        _write_rows(conn, filings, ("state", "updated_at"),
                    ({"id": filing_id, "state": i["state"], "updated_at": now} for filing_id, i in info.items()))
        return
    params: dict[str, Any] = {"ids": list(info), "now": now}
    for k, filing_id in enumerate(moved):
        params.update({f"id_{k}": filing_id, f"state_{k}": info[filing_id]["state"]})
    if by_driver(conn.dialect):  # through the driver: it may ride a pipeline (`apply_completions`)
        _filings_dater(len(moved))(conn, [params])
    else:
        conn.execute(_date_filings(len(moved), False), params)


@lru_cache(maxsize=_STATES_PER_UPDATE + 1)
def _filings_dater(moved: int) -> RowsUpdate:
    """`_date_filings` for PostgreSQL, run by the driver (its parameters are the row's keys)."""
    names = ["ids", "now", *(f"{name}_{k}" for k in range(moved) for name in ("id", "state"))]
    return RowsUpdate(_date_filings(moved, True), {name: name for name in names})


def _current(conn: Connection, filing_id: int, agency: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(deliveries).where(
            deliveries.c.filing_id == filing_id,
            deliveries.c.agency == agency,
            deliveries.c.superseded_by.is_(None),
        )
    ).first()
    return dict(row._mapping) if row is not None else None


def initial_state(conn: Connection, filing_id: int, depends_on: str | None) -> tuple[str, dict[str, Any] | None]:
    """Where a (re)started delivery begins, given the recipient it waits for: pending (and that
    recipient's row, to fill the hand-off), waiting, or held when that recipient failed."""
    pred = _current(conn, filing_id, depends_on) if depends_on else None
    if pred is None:
        return _S.PENDING.value, None
    if pred["state"] == _S.PROTOCOLLED.value:
        return _S.PENDING.value, pred
    if pred["state"] in _OPEN:
        return _S.WAITING.value, None
    return _S.HELD.value, None


class _Dependents:
    """The current deliveries of some filings that wait for another recipient, read once and
    kept up to date in memory while a transaction moves them; `write` stores the moved ones."""

    def __init__(self, conn: Connection, filing_ids: Iterable[int], states: Sequence[str],
                 current: Iterable[Mapping[str, Any]] | None = None) -> None:
        """`current`: all the filings' deliveries as the transaction has them, if the caller
        holds them already (then nothing is read)."""
        ids = sorted(set(filing_ids))
        if current is None:
            found = [dict(r._mapping) for r in conn.execute(
                select(deliveries).where(
                    deliveries.c.filing_id.in_(ids),
                    deliveries.c.depends_on.is_not(None),
                    deliveries.c.superseded_by.is_(None),
                    deliveries.c.state.in_(list(states)),
                )
            ).all()]
        else:
            wanted = set(ids)
            found = [dict(r) for r in current if r["filing_id"] in wanted and r["depends_on"] is not None
                     and not r["superseded_by"] and r["state"] in states]
        self.rows: dict[str, dict[str, Any]] = {}
        self._waiting_for: dict[tuple[int, str], list[str]] = {}
        # Agency order: the same events in the same order on every database and every run.
        for r in sorted(found, key=lambda r: (r["filing_id"], r["agency"])):
            self.rows[r["id"]] = r
            self._waiting_for.setdefault((r["filing_id"], r["depends_on"]), []).append(r["id"])
        self.moved: dict[str, dict[str, Any]] = {}

    def of(self, filing_id: int, agency: str, states: Sequence[str]) -> list[dict[str, Any]]:
        """The deliveries that wait for `agency` of the filing and are now in one of `states`."""
        found = (self.rows[i] for i in self._waiting_for.get((filing_id, agency), ()))
        return [row for row in found if row["state"] in states]

    def move(self, row: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
        moved = {**row, **values}
        self.rows[row["id"]] = self.moved[row["id"]] = moved
        return moved

    def write(self, conn: Connection, columns: tuple[str, ...]) -> None:
        _write_rows(conn, deliveries, columns, self.moved.values())


#: What settling a dependent may change: released ones get their content (hand-off) and a new
#: schedule origin, held or cancelled ones keep theirs (written back as read).
_SETTLE_COLUMNS = ("state", "content", "schedule_origin", "next_attempt_at", "last_error", "updated_at")
_SETTLING = {_S.PROTOCOLLED.value, _S.REJECTED.value, _S.UNDELIVERABLE.value, _S.CANCELLED.value, _S.HELD.value}


def settle_dependents(
    conn: Connection, changed: Sequence[Mapping[str, Any]], now: datetime, epoch: float, events: EventLog
) -> None:
    """After recipients changed state, move the deliveries that wait for them: release them
    with the hand-off when protocolled; hold or cancel them (route `on_reject`) when rejected;
    hold them when undeliverable (a resend may follow). Chains follow through.

    The dependents of all the recipients are read with one query and written with one
    executemany (plus one for the released ones' jobs)."""
    work = [pred for pred in changed if pred["state"] in _SETTLING]
    if not work:
        return
    deps = _Dependents(conn, (pred["filing_id"] for pred in work), (_S.WAITING.value, _S.HELD.value))
    jobs = _settle(deps, list(work), now, epoch, events)
    deps.write(conn, _SETTLE_COLUMNS)
    if jobs:
        _INSERT_JOBS(conn, jobs)


def _settle(deps: _Dependents, work: list[Any], now: datetime, epoch: float,
            events: EventLog) -> list[dict[str, Any]]:
    """Move the dependents of `work` in memory (in `deps`); returns the released ones' jobs."""
    jobs: list[dict[str, Any]] = []
    while work:
        pred = work.pop(0)
        if pred["state"] not in _SETTLING:
            continue
        for dep in deps.of(pred["filing_id"], pred["agency"], (_S.WAITING.value, _S.HELD.value)):
            previous = dep["state"]
            if pred["state"] == _S.PROTOCOLLED:
                if previous != _S.WAITING:
                    continue  # held ones resume (waiting) on the predecessor's resend first
                content, missing = fill_handoffs(dep["content"], dep.get("handoff"), handoff_sources(pred))
                dep = deps.move(dep, {
                    "state": _S.PENDING.value,
                    "content": content,
                    "schedule_origin": now,
                    "next_attempt_at": None,
                    "last_error": (f"{pred['agency']} gave no {', '.join(missing)}" if missing else None),
                    "updated_at": now,
                })
                jobs.append({"delivery_id": dep["id"], "agency": dep["agency"], "available_at": epoch,
                             "claims": 0, "created_at": epoch})
            else:
                rejected = pred["state"] in (_S.REJECTED, _S.CANCELLED)
                cancel = rejected and dep.get("on_reject") == "cancel" and previous == _S.WAITING
                new = _S.CANCELLED.value if cancel else _S.HELD.value
                if new == previous:
                    continue
                reason = f"{pred['agency']} is {pred['state']}"
                dep = deps.move(dep, {"state": new, "last_error": reason, "next_attempt_at": None, "updated_at": now})
                work.append(dep)
            events.recipient(dep, previous)
    return jobs


def resume_dependents(conn: Connection, pred: Mapping[str, Any], now: datetime, events: EventLog) -> None:
    """A held chain behind a recipient that is being resent or corrected waits again."""
    deps = _Dependents(conn, [pred["filing_id"]], (_S.HELD.value,))
    work = [pred["agency"]]
    while work:
        agency = work.pop(0)
        for dep in deps.of(pred["filing_id"], agency, (_S.HELD.value,)):
            updated = deps.move(dep, {"state": _S.WAITING.value, "last_error": None, "updated_at": now})
            events.recipient(updated, dep["state"])
            work.append(dep["agency"])
    deps.write(conn, ("state", "last_error", "updated_at"))


def flag_anomalies(conn: Connection, found: Sequence[Mapping[str, Any]], rows: Mapping[str, Mapping[str, Any]],
                   now: datetime, events: EventLog) -> int:
    """Keep anomalies (those not already kept) and tell the filing's feed about each one;
    `rows` are the deliveries concerned, by id. Returns how many were new."""
    stored = keep_anomalies(conn, found, now)
    for anomaly in stored:
        events.add(anomaly["filing_id"], RECIPIENT_ANOMALY,
                   {"recipient": recipient_payload(rows[anomaly["delivery_id"]]), "anomaly": anomaly_json(anomaly)})
    return len(stored)


def close_open_jobs(conn: Connection, delivery_id: str, epoch: float) -> None:
    """Close the delivery's jobs nobody holds (a callback check made moot by the callback)."""
    conn.execute(
        update(outbox)
        .where(outbox.c.delivery_id == delivery_id, outbox.c.done_at.is_(None),
               (outbox.c.leased_until.is_(None)) | (outbox.c.leased_until < epoch))
        .values(done_at=epoch)
    )


#: The delivery columns a batch may change (all but the key).
_DELIVERY_COLUMNS = tuple(column.name for column in deliveries.c if column.name != "id")


def _write_changed(conn: Connection, before: Mapping[str, Mapping[str, Any]],
                   after: Mapping[str, Mapping[str, Any]]) -> None:
    """Write the deliveries of `after` that differ from `before` (the rows as read, which the
    filings' locks keep so) with one executemany of the columns any of them changed: a column
    nobody changed is not sent, nor a row without changes."""
    changed: dict[str, set[str]] = {}
    for delivery_id, row in after.items():
        old = before[delivery_id]
        if row is not old and (names := {name for name in _DELIVERY_COLUMNS if row[name] != old[name]}):
            changed[delivery_id] = names
    columns = tuple(name for name in _DELIVERY_COLUMNS if any(name in names for names in changed.values()))
    # `_filing_deliveries` reads `content` only where it may be needed: elsewhere it is None, kept.
    _write_rows(conn, deliveries, columns, (after[delivery_id] for delivery_id in changed), unread="content")


def apply_completions(conn: Connection, completions: Sequence[Completion], now: datetime, epoch: float,
                      *, commit: bool = False) -> None:
    """Record a batch of worker passes: delivery rows, attempts, next jobs, dependents,
    events and filing states, all in the caller's transaction; with `commit`, the writes end
    it (on PostgreSQL the commit rides their round trip: `storage.pipelining.queue_commit`).

    The passes are applied in order in memory (two passes of one delivery build on each
    other); then each table gets one statement for the whole batch. Under the filings' locks
    one read brings every delivery of the batch's filings (and their last event numbers, and
    the deliveries that already hold the protocol numbers the passes bring): the passes, the
    dependents, the duplicate numbers and the filing states are all worked out from it.

    A pass whose outcome is not applied (stale, or its delivery settled meanwhile) still made
    its calls: its tries are recorded and counted, once, and nothing else of it.

    Everything is read first; the writes then go in one pipeline (one round trip on PostgreSQL)."""
    info, claims, found = _read_batch(conn, completions, epoch)
    own, stale = _own_passes(conn, completions, claims)
    if not own and not any(c.attempts for c in stale):
        return  # every pass was stale and made no call: nothing of theirs is written
    current, read = found.rows, dict(found.rows)
    events = EventLog(conn, info, now, epoch, last_seqs=found.last_seqs)
    touched: dict[str, dict[str, Any]] = {}
    attempt_rows: list[dict[str, Any]] = []
    job_rows: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    tries = _RecordedTries(conn, [c for c in stale if c.attempts])
    applied = {id(c) for c in own}
    for c in completions:  # in the batch's order: a pass builds on the ones before it
        row = current.get(c.job.delivery_id)
        if row is None:
            continue
        # A settled delivery never moves again, nor does one replaced or waiting, and a stale
        # pass moves none: only the calls such a pass made are added to the delivery's count.
        if id(c) not in applied or row["state"] in _TERMINAL or row["superseded_by"] or row["state"] == _S.WAITING:
            made = tries.new(c)
            if not made:
                continue
            row = {**row, "attempts": row["attempts"] + len(made)}
            attempt_rows.extend(_attempt_rows(row["id"], c.owner, made))
            current[row["id"]] = touched[row["id"]] = row
            continue
        if c.deferred:
            row = {**row, "next_attempt_at": c.next_attempt_at, "updated_at": now}
        else:
            previous = row["state"]
            row, moved = _record_pass(row, c, now)
            attempt_rows.extend(_attempt_rows(row["id"], c.owner, c.attempts))
            tries.add(c)
            if moved:
                events.recipient(row, previous)
                changed.append(row)
        current[row["id"]] = touched[row["id"]] = row
        if c.next_attempt_at is not None:
            job_rows.append({"delivery_id": row["id"], "agency": row["agency"], "available_at": c.next_attempt_at,
                             "claims": 0, "created_at": epoch})
    # A number the agency already gave another message is kept, and flagged (read before the
    # batch's own numbers are written, so that the later of two in one batch is the one flagged).
    numbered = [r for r in touched.values()
                if r["protocol_number"] and r["protocol_number"] != read[r["id"]]["protocol_number"]]
    duplicates = number_anomalies(numbered, found.holders, {fid: i["reference"] for fid, i in info.items()})
    flag_anomalies(conn, duplicates, touched, now, events)  # reads which were kept already: before the writes
    work = [pred for pred in changed if pred["state"] in _SETTLING]
    if work:
        deps = _Dependents(conn, (pred["filing_id"] for pred in work), (_S.WAITING.value, _S.HELD.value),
                           current.values())
        job_rows.extend(_settle(deps, work, now, epoch, events))
        current.update(deps.moved)
    with pipelined(conn):
        if attempt_rows:
            _INSERT_ATTEMPTS(conn, attempt_rows)
        _write_changed(conn, read, current)
        if job_rows:
            _INSERT_JOBS(conn, job_rows)
        refresh_filings(conn, info, now, events, current.values())
        events.flush()
        if commit:
            queue_commit(conn)


#: The deliveries' columns as `_filing_deliveries` reads them: `content` (JSON, the largest)
#: only of those that wait for another recipient (their hand-off fills it at release) or
#: correct one (their events name the corrected message); NULL for the others.
_READ_COLUMNS = [
    case((or_(deliveries.c.depends_on.is_not(None), deliveries.c.corrects_delivery_id.is_not(None)),
          column)).label("content") if column.name == "content" else column
    for column in deliveries.c
]
_FILING_DELIVERIES = {
    postgresql: select(
        *_READ_COLUMNS,
        select(func.max(filing_events.c.seq))
        .where(filing_events.c.filing_id == deliveries.c.filing_id)
        .scalar_subquery()
        .label("last_event_seq"),
        false().label("holder"),
        null().label("reference"),
    ).where(values_in(deliveries.c.filing_id, "ids", BigInteger, postgresql))
    for postgresql in (True, False)
}
#: The same read, and also the deliveries of any filing that hold some (agency, protocol
#: number) pairs, with their filing's reference: the duplicate-number check's holders, read
#: with the rest (before the batch writes its numbers) instead of by a statement of its own.
_WITH_NUMBER_HOLDERS = {
    postgresql: union_all(
        _FILING_DELIVERIES[postgresql],
        select(*_READ_COLUMNS, null(), true(), filings.c.reference)
        .join(filings, filings.c.id == deliveries.c.filing_id)
        # By number, then agency: looked up by agency, a young table's plan read every
        # delivery of the agency at every batch (1.8 million rows for 3,500 deliveries).
        .where(_pairs_in(deliveries.c.protocol_number, deliveries.c.agency, "pairs", (String, String), postgresql)),
    )
    for postgresql in (True, False)
}


class _Read(NamedTuple):
    """What `_filing_deliveries` read."""

    rows: dict[str, dict[str, Any]]  # every delivery of the filings, by id
    last_seqs: dict[int, int]  # each filing's last event number
    holders: list[dict[str, Any]]  # the holders of the numbers asked for, oldest first


def _deliveries_read(conn: Connection, filing_ids: Sequence[int],
                     numbers: Sequence[tuple[str, str]]) -> tuple[Any, dict[str, Any]]:
    """The statement and parameters of the read `_filing_deliveries` sorts."""
    postgresql = _is_postgresql(conn)
    params: dict[str, Any] = {"ids": list(filing_ids)}
    if numbers:
        params.update(_pair_params("pairs", [(number, agency) for agency, number in numbers], postgresql))
    return (_WITH_NUMBER_HOLDERS if numbers else _FILING_DELIVERIES)[postgresql], params


def _filing_deliveries(keys: Sequence[str], rows: Iterable[Sequence[Any]]) -> _Read:
    """Every delivery of the (locked) filings by id, each filing's last event number and the
    deliveries holding some (agency, protocol number) pairs, from one read (`_deliveries_read`,
    whose columns are `keys`); superseded ones too (a pass for one must see that it was
    replaced). `content` only where needed (`_READ_COLUMNS`)."""
    read = _Read({}, {}, [])
    for values in rows:
        row = dict(zip(keys, values))  # a third of dict(RowMapping)'s cost, for every column of every row
        seq, holder = row.pop("last_event_seq"), row.pop("holder")
        if holder:
            read.holders.append(row)
        else:
            del row["reference"]
            read.last_seqs[row["filing_id"]] = seq or 0
            read.rows[row["id"]] = row
    read.holders.sort(key=lambda h: (h["created_at"], h["id"]))
    return read


def _read_batch(conn: Connection, completions: Sequence[Completion],
                epoch: float) -> tuple[dict[int, dict[str, Any]], dict[int, int], _Read]:
    """Lock the batch's filings (`lock_filings`), close the open jobs its live passes hold,
    then read the filings' deliveries with the holders of the numbers the passes bring
    (`_filing_deliveries`; a stale pass's numbers too: their holders are simply not asked
    for). Returns the filings' id → {reference, portal, kind, state}, each closed job's claim
    count, and the read.

    One UPDATE … RETURNING both checks and closes the jobs. On PostgreSQL through psycopg the
    three statements ride one pipeline with the transaction's BEGIN: one round trip, not four
    (the server still runs them in order, so the read sees what the locks keep)."""
    ids = sorted({c.job.filing_id for c in completions})
    live = [c for c in completions if not c.stale]
    plain = sorted({c.job.job_id for c in live if c.job.lease_token is None})
    fenced = sorted({(c.job.job_id, c.job.lease_token) for c in live if c.job.lease_token is not None})
    postgresql = _is_postgresql(conn)
    params = {"plain": plain, **_pair_params("fenced", fenced, postgresql), "epoch": epoch}
    reading, read_params = _deliveries_read(conn, ids, number_pairs(
        {"agency": c.job.agency, "protocol_number": c.protocol_number} for c in live))
    if not by_driver(conn.dialect):
        info = lock_filings(conn, ids)
        claims = {r.id: r.claims for r in conn.execute(_close_jobs(bool(plain), bool(fenced), postgresql), params)
                  } if plain or fenced else {}
        result = conn.execute(reading, read_params)
        return info, claims, _filing_deliveries(tuple(result.keys()), result.all())
    cursors: dict[str, Any] = {}
    try:
        with pipelined(conn):
            cursors["locked"] = _LOCK_FILINGS_BY_DRIVER.send(conn, {"ids": ids})
            if plain or fenced:
                cursors["closed"] = _closing_by_driver(bool(plain), bool(fenced)).send(conn, params)
            cursors["read"] = _by_driver(reading).send(conn, read_params)
        info = {row[0]: dict(zip(_LOCKED_COLUMNS, row, strict=True)) for row in cursors["locked"].fetchall()}
        claims = dict(cursors["closed"].fetchall()) if "closed" in cursors else {}
        keys = tuple(column.name for column in cursors["read"].description)
        return info, claims, _filing_deliveries(keys, cursors["read"].fetchall())
    finally:
        for cursor in cursors.values():
            cursor.close()


def _own_passes(conn: Connection, completions: Sequence[Completion],
                claims: Mapping[int, int]) -> tuple[list[Completion], list[Completion]]:
    """The passes whose jobs this batch closed (`claims`: each closed job's claim count), and
    the stale ones (logged).

    A pass is stale when its job was closed already (another pass of it committed first, or
    came earlier in this batch), when the transport found it so (`Completion.stale`: its
    message was requeued under it) or, in the embedded queue, when the job was claimed again
    after this pass took it (its lease ran out under it): applying its outcome would overwrite
    what the newer pass does. The closed rows stay locked until the commit, so no claim can
    take them.
    """
    live = [c for c in completions if not c.stale]
    # Of each closed job, the first pass that held it (its current claim) is the one applied.
    own: list[Completion] = []
    taken: set[int] = set()
    stale: list[Completion] = []
    for c in live:
        job_id, token = c.job.job_id, c.job.lease_token
        if job_id in claims and job_id not in taken and (token is None or token == claims[job_id]):
            taken.add(job_id)
            own.append(c)
        else:
            stale.append(c)
    if stale:
        _log_stale(conn, stale, claims)
    return own, stale + [c for c in completions if c.stale]


@lru_cache(maxsize=4)
def _closing_by_driver(plain: bool, fenced: bool) -> DriverStatement:
    """`_close_jobs` on PostgreSQL, sent by the driver (`_read_batch`)."""
    return DriverStatement(_close_jobs(plain, fenced, True))


@lru_cache(maxsize=4)
def _by_driver(statement: Any) -> DriverStatement:
    """A statement built once (`_FILING_DELIVERIES`, `_WITH_NUMBER_HOLDERS`), sent by the driver."""
    return DriverStatement(statement)


@lru_cache(maxsize=8)
def _close_jobs(plain: bool, fenced: bool, postgresql: bool) -> Update:
    """`UPDATE outbox SET done_at … RETURNING id, claims` of the open jobs among the `plain`
    ids and the `fenced` (id, claims) pairs (whichever the flags say the batch has)."""
    conditions = []
    if plain:
        conditions.append(values_in(outbox.c.id, "plain", BigInteger, postgresql))
    if fenced:
        conditions.append(_pairs_in(outbox.c.id, outbox.c.claims, "fenced", (BigInteger, Integer), postgresql))
    return (update(outbox).where(or_(*conditions), outbox.c.done_at.is_(None)).values(done_at=bindparam("epoch"))
            .returning(outbox.c.id, outbox.c.claims))


def _attempt_rows(delivery_id: str, worker: str, tries: Iterable[AttemptRecord]) -> list[dict[str, Any]]:
    return [{"delivery_id": delivery_id, "number": a.number, "started_at": a.started_at,
             "duration_ms": a.duration_ms, "result": a.result, "error_code": a.error_code,
             "error_text": a.error_text, "worker": worker, "error_class": a.error_class,
             "http_status": a.http_status, "request_body": a.request_body, "reply_body": a.reply_body}
            for a in tries]


def _utc(at: datetime) -> datetime:
    """`at` as a naive UTC instant (SQLite gives back naive ones, PostgreSQL aware ones)."""
    return at.astimezone(timezone.utc).replace(tzinfo=None) if at.tzinfo is not None else at


class _RecordedTries:
    """The tries already recorded for the deliveries of some stale passes (a rare path: one
    read), so that a stale pass's tries are counted once however often it is offered: the
    same batch committed again after its commit's answer was lost finds all its passes stale."""

    def __init__(self, conn: Connection, passes: Sequence[Completion]) -> None:
        ids = sorted({c.job.delivery_id for c in passes})
        rows = conn.execute(
            select(attempts.c.delivery_id, attempts.c.worker, attempts.c.number, attempts.c.started_at)
            .where(attempts.c.delivery_id.in_(ids))
        ).all() if ids else []
        self._seen = {(r.delivery_id, r.worker, r.number, _utc(r.started_at)) for r in rows}

    def new(self, c: Completion) -> list[AttemptRecord]:
        """The tries of `c` not recorded yet (now marked recorded)."""
        fresh = []
        for a in c.attempts:
            key = _try_key(c, a)
            if key not in self._seen:
                self._seen.add(key)
                fresh.append(a)
        return fresh

    def add(self, c: Completion) -> None:
        """Mark the tries of `c`, recorded by this batch, as recorded."""
        self._seen.update(_try_key(c, a) for a in c.attempts)


def _try_key(c: Completion, a: AttemptRecord) -> tuple[str, str, int, datetime]:
    """What tells one recorded try from another: delivery, worker, number, start (naive UTC)."""
    return c.job.delivery_id, c.owner, a.number, _utc(a.started_at)


def _log_stale(conn: Connection, stale: Sequence[Completion], closed: Mapping[int, int]) -> None:
    """Say why each stale pass was dropped (a rare path: one more read). `closed`: the jobs
    this batch closed, with their claim counts."""
    jobs = {r.id: r for r in conn.execute(
        select(outbox.c.id, outbox.c.claims, outbox.c.done_at)
        .where(outbox.c.id.in_(sorted({c.job.job_id for c in stale})))
    ).all()}
    for c in stale:
        job, token = jobs.get(c.job.job_id), c.job.lease_token
        claims = closed.get(c.job.job_id, job.claims if job is not None else None)
        if job is None or (c.job.job_id not in closed and job.done_at is not None):
            reason = "job_already_closed"
        elif token is not None and token != claims:
            reason = "job_claimed_again"
        else:
            reason = "job_already_closed"  # its fresh pass came earlier in this batch
        _log.warning("stale_pass_dropped", job_id=c.job.job_id, delivery_id=c.job.delivery_id,
                     agency=c.job.agency, owner=c.owner, reason=reason, state=c.new_state)


def _record_pass(row: Mapping[str, Any], c: Completion, now: datetime) -> tuple[dict[str, Any], bool]:
    """The delivery row after the pass, and whether the pass changed its state or outcome."""
    values: dict[str, Any] = {
        "state": c.new_state,
        "last_error": c.last_error,
        "next_attempt_at": c.next_attempt_at,
        "updated_at": now,
        "attempts": row["attempts"] + len(c.attempts),
    }
    if c.polled:
        values["polls"] = row["polls"] + 1
    else:
        values["rounds"] = row["rounds"] + 1
    if c.protocol_number is not None:
        values.update(protocol_number=c.protocol_number, protocolled_at=c.protocolled_at,
                      references=c.references or {})
    if c.outcome is not None:
        values["outcome"] = c.outcome
    if c.outcome_code is not None:
        values.update(outcome_code=c.outcome_code, outcome_text=c.outcome_text)
    if c.new_state == _S.ACKNOWLEDGED.value:
        values.update(correlation_id=c.correlation_id, poll_url=c.poll_url)
        if row["state"] != _S.ACKNOWLEDGED.value:
            values.update(acknowledged_at=now, polls=0)
    changed = row["state"] != c.new_state or (c.outcome is not None and c.outcome != row.get("outcome"))
    return {**row, **values}, changed


#: The states in which an agency's callback may still be about the delivery: taken in charge
#: (its protocol number is due), or protocolled / rejected (a decision, or a repeat).
_CALLBACK_STATES = {_S.ACKNOWLEDGED.value, _S.PROTOCOLLED.value, _S.REJECTED.value}
#: States in which a send may be in flight: the agency can answer (and call back) before the
#: worker has recorded its acknowledgment, so a callback then is early, not wrong.
_IN_FLIGHT_STATES = {_S.PENDING.value, _S.RETRYING.value}


def apply_late_outcome(conn: Connection, delivery_id: str, receipt: Receipt, now: datetime, epoch: float) -> str:
    """Record an outcome the agency sent later (PUSH callback): the protocol number of an
    acknowledged delivery, or the decision on a protocolled one that has none yet.

    A protocol number once recorded is never overwritten and a final decision never reversed:
    a callback that contradicts them changes nothing but is kept as an anomaly (both sides).
    A number the agency already gave another message is recorded and flagged.

    Returns:
        "recorded"; "duplicate" (nothing new: a repeat); "conflict" (the delivery waits for no
        callback: nothing changes); "contradiction" (it contradicts a settled number or
        decision: only the anomaly is kept); "not_yet" (a send may be in flight and its
        acknowledgment is not recorded yet: nothing changes, the agency may try again later);
        "unknown" (no such delivery).
    """
    filing_id = conn.execute(select(deliveries.c.filing_id).where(deliveries.c.id == delivery_id)).scalar()
    if filing_id is None:
        return "unknown"
    info = lock_filings(conn, [filing_id])
    row = dict(conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).one()._mapping)
    state = row["state"]
    if state in _IN_FLIGHT_STATES and not row["superseded_by"]:
        return "not_yet"
    if state not in _CALLBACK_STATES or row["superseded_by"]:
        return "conflict"  # never taken in charge (or given up, or replaced by a correction)
    decision = ESITO_DECISIONS.get(receipt.outcome)
    number = receipt.protocol_number or None
    if receipt.acknowledged_only:
        return "duplicate"  # nothing new: the agency repeats that it has the message
    if state == _S.ACKNOWLEDGED:
        if number is None and decision is not Decision.REJECTED:
            return "duplicate"
    else:
        # Protocolled or rejected: the number (or its absence, for a refusal) is settled, and
        # so is the decision once there is one (a rejection is one, whatever `outcome` says).
        recorded = row["outcome"] or (Decision.REJECTED.value if state == _S.REJECTED else None)
        number_conflict = number is not None and number != row["protocol_number"]
        decision_conflict = recorded is not None and decision is not None and decision.value != recorded
        if number_conflict or decision_conflict:
            events = EventLog(conn, info, now, epoch)
            flag_anomalies(conn, [{
                "delivery_id": delivery_id, "filing_id": filing_id, "agency": row["agency"],
                "kind": DECISION_CONFLICT if decision_conflict else PROTOCOL_NUMBER_CONFLICT,
                "detail": {
                    "recorded": {"protocolNumber": row["protocol_number"], "outcome": recorded},
                    "received": {"protocolNumber": bounded(number), "outcome": decision.value if decision else None,
                                 "esito": bounded(receipt.outcome)},
                },
            }], {delivery_id: row}, now, events)
            events.flush()
            return "contradiction"
        if recorded is not None or decision is None:
            return "duplicate"  # the same number (and decision) again
    new_state = _S.REJECTED.value if decision is Decision.REJECTED else _S.PROTOCOLLED.value
    values: dict[str, Any] = {
        "state": new_state,
        "protocol_number": row["protocol_number"] or number,
        "protocolled_at": row["protocolled_at"] or receipt.protocolled_at or None,
        "references": {**receipt.references, **(row["references"] or {})},
        "outcome": decision.value if decision is not None else row["outcome"],
        "next_attempt_at": None,
        "updated_at": now,
    }
    if decision is Decision.REJECTED:
        values.update(outcome_code=receipt.outcome_code or "RESPINTA",
                      outcome_text=receipt.outcome_text or "rejected after protocol")
    updated = {**row, **values}
    newly_numbered = [updated] if values["protocol_number"] and not row["protocol_number"] else []
    duplicates = duplicate_number_anomalies(conn, newly_numbered, {filing_id: info[filing_id]["reference"]})
    conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(**values))
    close_open_jobs(conn, delivery_id, epoch)
    events = EventLog(conn, info, now, epoch)
    events.recipient(updated, state)
    flag_anomalies(conn, duplicates, {delivery_id: updated}, now, events)
    if new_state != state:
        settle_dependents(conn, [updated], now, epoch, events)
    refresh_filings(conn, info, now, events)
    events.flush()
    return "recorded"
