"""Anomalies: what an agency said that contradicts a settled fact, kept for operators.

The hub never overwrites a protocol number or reverses a final decision because a message from
outside says so (docs/DESIGN "Trust at the edges"); it keeps the contradiction here, with both
sides, and the filing's feed and status show it. A protocol number given to two different
messages of one agency is kept on both deliveries and flagged here on the later one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, RowMapping, bindparam, insert, select, tuple_

from domain.timestamps import rfc3339
from storage.delivery_tables import anomalies
from storage.tables import deliveries, filings

__all__ = [
    "DECISION_CONFLICT",
    "DUPLICATE_PROTOCOL_NUMBER",
    "PROTOCOL_NUMBER_CONFLICT",
    "anomaly_json",
    "bounded",
    "duplicate_number_anomalies",
    "filing_anomalies",
    "keep_anomalies",
    "list_anomalies",
    "number_anomalies",
    "number_pairs",
]

#: A callback gave a protocol number other than the one recorded (or one for a refused message).
PROTOCOL_NUMBER_CONFLICT = "protocol_number_conflict"
#: A callback's decision contradicts the final decision recorded.
DECISION_CONFLICT = "decision_conflict"
#: The agency gave this message a protocol number it had already given another message.
DUPLICATE_PROTOCOL_NUMBER = "duplicate_protocol_number"

#: Received values are cut to this many characters before they are stored (bounded input).
MAX_VALUE_CHARS = 128
#: At most this many other holders of a duplicated number are named in one anomaly.
MAX_OTHERS = 10


def bounded(value: str | None) -> str | None:
    """A value read from outside, cut to what an anomaly keeps."""
    if value is None or len(value) <= MAX_VALUE_CHARS:
        return value
    return value[:MAX_VALUE_CHARS] + "…"


def anomaly_json(row: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    """An anomaly as the status API and the event feed show it."""
    created = row["created_at"]
    return {"kind": row["kind"], "detail": row["detail"],
            "createdAt": rfc3339(created) if isinstance(created, datetime) else created}


def _key(delivery_id: str, kind: str, detail: Mapping[str, Any]) -> tuple[str, str, bytes]:
    return delivery_id, kind, orjson.dumps(detail, option=orjson.OPT_SORT_KEYS)


def keep_anomalies(conn: Connection, items: Sequence[Mapping[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Store anomalies (`delivery_id`, `filing_id`, `agency`, `kind`, `detail`) with one
    executemany, except those already kept: an agency that repeats a refused callback adds
    no new line. Returns the rows stored, in order."""
    if not items:
        return []
    ids = sorted({item["delivery_id"] for item in items})
    seen = {_key(r.delivery_id, r.kind, r.detail) for r in conn.execute(
        select(anomalies.c.delivery_id, anomalies.c.kind, anomalies.c.detail).where(anomalies.c.delivery_id.in_(ids))
    )}
    rows: list[dict[str, Any]] = []
    for item in items:
        key = _key(item["delivery_id"], item["kind"], item["detail"])
        if key in seen:
            continue
        seen.add(key)
        rows.append({"delivery_id": item["delivery_id"], "filing_id": item["filing_id"], "agency": item["agency"],
                     "kind": item["kind"], "detail": dict(item["detail"]), "created_at": now})
    if rows:
        conn.execute(insert(anomalies), rows)
    return rows


#: The deliveries holding some (agency, protocol number) pairs, but for some ids, oldest first.
_NUMBER_HOLDERS = (
    select(deliveries.c.id, deliveries.c.message_id, deliveries.c.agency, deliveries.c.protocol_number,
           filings.c.reference)
    .join(filings, filings.c.id == deliveries.c.filing_id)
    .where(tuple_(deliveries.c.agency, deliveries.c.protocol_number).in_(bindparam("pairs", expanding=True)),
           deliveries.c.id.not_in(bindparam("ids", expanding=True)))
    .order_by(deliveries.c.created_at, deliveries.c.id)
)


def duplicate_number_anomalies(
    conn: Connection, numbered: Sequence[Mapping[str, Any]], references: Mapping[int, str]
) -> list[dict[str, Any]]:
    """The anomalies of deliveries that have just been given a protocol number which another
    message of the same agency already has (read before the new numbers are written).

    `numbered` are the delivery rows as they will be written, in the order they got their
    numbers: of two in one batch, the later one is flagged. A delivery with the same message
    id is the same message (a repeat), never a conflict. `references` maps the batch's filing
    ids to their references. One query for the whole batch (index on agency, protocol number).
    """
    pairs = number_pairs(numbered)
    if not pairs:
        return []
    holders = [dict(r._mapping) for r in conn.execute(
        _NUMBER_HOLDERS, {"pairs": pairs, "ids": [r["id"] for r in numbered]})]
    return number_anomalies(numbered, holders, references)


def number_pairs(numbered: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The (agency, protocol number) pairs of these rows, to look their holders up."""
    return sorted({(r["agency"], r["protocol_number"]) for r in numbered if r.get("protocol_number")})


def number_anomalies(numbered: Sequence[Mapping[str, Any]], holders: Iterable[Mapping[str, Any]],
                     references: Mapping[int, str]) -> list[dict[str, Any]]:
    """`duplicate_number_anomalies` given the deliveries (`id`, `message_id`, `agency`,
    `protocol_number`, `reference` of the filing) that held the numbers before, oldest first;
    `numbered` ones among them are not holders."""
    ids = {r["id"] for r in numbered}
    found_holders: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for h in holders:
        if h["id"] not in ids:
            found_holders.setdefault((h["agency"], h["protocol_number"]), []).append(
                {"deliveryId": h["id"], "messageId": h["message_id"], "filingReference": h["reference"]})
    found: list[dict[str, Any]] = []
    for row in numbered:
        if not row.get("protocol_number"):
            continue
        pair = (row["agency"], row["protocol_number"])
        others = [h for h in found_holders.get(pair, []) if h["messageId"] != row["message_id"]]
        if others:
            found.append({
                "delivery_id": row["id"], "filing_id": row["filing_id"], "agency": row["agency"],
                "kind": DUPLICATE_PROTOCOL_NUMBER,
                "detail": {"protocolNumber": row["protocol_number"], "messageId": row["message_id"],
                           "alsoGivenTo": others[:MAX_OTHERS]},
            })
        found_holders.setdefault(pair, []).append({"deliveryId": row["id"], "messageId": row["message_id"],
                                                   "filingReference": references.get(row["filing_id"])})
    return found


def filing_anomalies(
    conn: Connection, filing_id: int,
    as_json: Callable[[RowMapping], dict[str, Any]] = anomaly_json,
) -> dict[str, list[dict[str, Any]]]:
    """delivery id → its anomalies (as `as_json` gives each row, `anomaly_json` by default),
    oldest first."""
    found: dict[str, list[dict[str, Any]]] = {}
    for r in conn.execute(
        select(anomalies).where(anomalies.c.filing_id == filing_id).order_by(anomalies.c.id)
    ):
        found.setdefault(r.delivery_id, []).append(as_json(r._mapping))
    return found


def list_anomalies(conn: Connection, agency: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The latest anomalies, newest first, with the filing reference and message id."""
    query = (
        select(anomalies, filings.c.reference, deliveries.c.message_id, deliveries.c.state)
        .join(filings, filings.c.id == anomalies.c.filing_id)
        .join(deliveries, deliveries.c.id == anomalies.c.delivery_id)
        .order_by(anomalies.c.id.desc())
        .limit(limit)
    )
    if agency is not None:
        query = query.where(anomalies.c.agency == agency)
    return [
        {**anomaly_json(r._mapping), "agency": r.agency, "filingReference": r.reference, "deliveryId": r.delivery_id,
         "messageId": r.message_id, "state": r.state}
        for r in conn.execute(query)
    ]
