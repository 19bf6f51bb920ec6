"""The PDF receipt of a settled filing: what a person keeps of what each agency answered.

A4, Italian with English labels beside. Identifiers (reference, tax codes, protocol numbers) are
set in Courier (regular: bold reads back worse) at 12 pt: a monospaced face keeps look-alike characters apart for the eye and for
OCR. Dates are Rome's civil time with their UTC offset written out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fpdf import FPDF

from domain.timestamps import ROME, as_utc, parse_agency_instant
from service.ports import DeliveryView, FilingView

__all__ = ["ReceiptLine", "receipt_lines", "render_receipt"]

#: How the receipt names a filing kind (Italian / English).
_KINDS = {
    "business_start": "Avvio d'impresa (ComUnica) / Business start",
    "runts_registration": "Iscrizione al RUNTS / Third-sector registration",
    "durc_request": "Richiesta DURC / Contribution regularity certificate",
    "responsibility_declaration": "Dichiarazione di responsabilità (DiResCo) / Declaration of responsibility",
}
#: How the receipt names an agency.
_AGENCIES = {
    "inps": "INPS",
    "inail": "INAIL",
    "cciaa": "Registro Imprese (CCIAA)",
    "runts": "RUNTS",
}
#: The delivery states a receipt names without a decision (Italian / English).
_STATES = {
    "undeliverable": "Non recapitata / Undeliverable",
    "held": "Sospesa / Held (waits for another agency)",
    "cancelled": "Annullata / Cancelled (another agency refused)",
}
_LABEL_WIDTH = 62.0  # mm: the label column of each block
_IDENT_SIZE = 12  # pt: identifiers, large enough to read back at 300 dpi
_TEXT_SIZE = 11


@dataclass(frozen=True, slots=True)
class ReceiptLine:
    """One agency's line of the receipt, as a person reads it."""

    agency: str
    protocol_number: str
    protocolled_at: str
    outcome: str


def _local(moment: datetime) -> str:
    """A Rome-time date with its offset written out, e.g. `05/12/2026 10:14:03 (UTC+01:00)`."""
    local = as_utc(moment).astimezone(ROME)
    offset = local.strftime("%z")
    return f"{local:%d/%m/%Y %H:%M:%S} (UTC{offset[:3]}:{offset[3:]})"


def _date(text: str | None) -> str:
    moment = parse_agency_instant(text)
    if moment is not None:
        return _local(moment)
    return text or "-"


def _outcome(d: DeliveryView) -> str:
    if d.state in _STATES:
        return _STATES[d.state]
    if d.outcome == "rejected" or d.state == "rejected":
        reason = " - ".join(x for x in (d.outcome_code, d.outcome_text) if x)
        return "Respinta / Rejected" + (f": {reason}" if reason else "")
    if d.outcome == "accepted":
        return "Accolta / Accepted"
    return "Protocollata, esito in attesa / Protocolled, decision pending"


def receipt_lines(view: FilingView) -> list[ReceiptLine]:
    """Each agency's protocol number, date and outcome, in the receipt's words."""
    return [
        ReceiptLine(agency=_AGENCIES.get(d.agency, d.agency.upper()),
                    protocol_number=d.protocol_number or "-",
                    protocolled_at=_date(d.protocolled_at) if d.protocol_number else "-",
                    outcome=_outcome(d))
        for d in view.deliveries
    ]


#: Typography agencies write that the Latin-1 core fonts lack, spelled in plain ASCII.
_PLAIN = str.maketrans({"\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"',
                        "\u201d": '"', "\u2026": "...", "\u20ac": "EUR"})


def _latin1(text: str) -> str:
    """The core PDF fonts are Latin-1: typography becomes ASCII, anything else beyond becomes `?`."""
    return text.translate(_PLAIN).encode("latin-1", "replace").decode("latin-1")


class _Receipt(FPDF):
    def __init__(self, generated: str) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self._generated = generated

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("Helvetica", size=8)
        self.cell(0, 5, _latin1(f"Generata il / Generated on {self._generated} - pagina / page "
                                f"{self.page_no()}/{{nb}}"), align="C")


def _row(pdf: FPDF, label: str, value: str, *, ident: bool = False) -> None:
    """A label and its value on one line (the value wraps)."""
    pdf.set_font("Helvetica", size=9)
    y = pdf.get_y()
    pdf.multi_cell(_LABEL_WIDTH, 6, _latin1(label), new_x="RIGHT", new_y="TOP")
    label_bottom = pdf.get_y() if pdf.get_y() > y else y + 6
    if ident:
        pdf.set_font("Courier", size=_IDENT_SIZE)
    else:
        pdf.set_font("Helvetica", size=_TEXT_SIZE)
    pdf.multi_cell(0, 6, _latin1(value), align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.set_y(max(pdf.get_y(), label_bottom))


def render_receipt(view: FilingView, generated_at: datetime) -> bytes:
    """The receipt of `view` (a settled filing) as PDF bytes, dated `generated_at`."""
    generated = _local(generated_at)
    pdf = _Receipt(generated)
    pdf.set_title(f"Ricevuta pratica {view.reference}")
    pdf.set_author("Crocevia")
    pdf.set_creator("Crocevia")
    pdf.set_subject("Ricevuta di presentazione / Filing receipt")
    pdf.set_lang("it-IT")
    pdf.set_creation_date(as_utc(generated_at))
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.add_page()

    pdf.set_font("Helvetica", style="B", size=16)
    pdf.cell(0, 9, "Ricevuta di presentazione", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    pdf.cell(0, 6, "Filing receipt", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    _row(pdf, "Numero di riferimento / Reference", view.reference, ident=True)
    _row(pdf, "Adempimento / Filing kind", _KINDS.get(view.kind, view.kind))
    _row(pdf, "Soggetto / Subject", view.subject_name or "-")
    _row(pdf, "Codice fiscale / Tax code", view.subject_tax_code or "-", ident=True)
    _row(pdf, "Dichiarante / Declarant", view.declarant_tax_code or "-", ident=True)
    if view.declarant_role:
        _row(pdf, "In qualità di / As", view.declarant_role.replace("_", " "))
    _row(pdf, "Presentata il / Filed on", _local(view.created_at))
    pdf.ln(3)

    pdf.set_font("Helvetica", style="B", size=13)
    pdf.cell(0, 8, "Enti destinatari / Recipient agencies", new_x="LMARGIN", new_y="NEXT")
    for line in receipt_lines(view):
        pdf.ln(2)
        pdf.set_draw_color(160, 160, 160)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
        pdf.ln(1)
        pdf.set_font("Helvetica", style="B", size=12)
        pdf.cell(0, 7, _latin1(line.agency), new_x="LMARGIN", new_y="NEXT")
        _row(pdf, "Numero di protocollo / Protocol number", line.protocol_number, ident=True)
        _row(pdf, "Data di protocollo / Protocol date", line.protocolled_at)
        _row(pdf, "Esito / Outcome", line.outcome)

    pdf.ln(6)
    pdf.set_font("Helvetica", size=8)
    pdf.multi_cell(0, 4, align="L", text=_latin1(
        "Le date sono nell'ora di Roma (Europe/Rome), con lo scostamento da UTC tra parentesi. "
        "Dates are Rome time (Europe/Rome), with the offset from UTC in brackets."))
    return bytes(pdf.output())
