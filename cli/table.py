"""Render filings and their recipients as a plain-text table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["filings_table", "render_table"]


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    text_rows = [[("" if cell is None else str(cell)) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), line]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in text_rows]
    return "\n".join(out)


def filings_table(views: Iterable[dict[str, Any]]) -> str:
    rows = []
    for view in views:
        for r in view.get("recipients", []):
            note = r.get("outcomeText") or r.get("lastError") or ""
            refs = ", ".join(f"{k}={v}" for k, v in (r.get("references") or {}).items())
            rows.append([
                view["reference"], view["kind"], view["state"], r["agency"], r["state"],
                r.get("protocolNumber") or "-", r["attempts"], refs or note[:60],
            ])
    return render_table(
        ["filing", "kind", "filing state", "recipient", "state", "protocol number", "attempts", "notes"], rows
    )
