"""Content checks on a schema-valid filing: check digits, dates, coherence, uniqueness.

The XSD says what shape a filing has; these checks say whether what it states can be true.
They run only on documents that passed the schema, so every element they read exists and has
the right lexical form. Choices where the rules leave room:

- The partita IVA must equal an 11-digit tax code only for companies (`COMPANY_FORMS`):
  associations, foundations and third-sector entities usually got their tax code (starting
  with 8 or 9) long before a VAT position, so theirs legitimately differ.
- A 16-character subject tax code identifies a natural person: only a ditta individuale (DI)
  may file under one.
- A declarant with role `legal_representative` must be the legal representative.
- A birth date matches its tax code when year modulo 100, month and day agree: the code keeps
  two digits of the year, so the century is never contradicted.
- Attachment names are compared case-insensitively: they become file names at the agencies.
- Section `impresa_sociale` in the RUNTS requires `socialEnterprise` true.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

from lxml import etree

from domain.intake import Violation
from schemas.child_paths import FILING_NAMESPACES, child_path
from domain.taxcode import (
    birth_date_from_tax_code,
    compute_check_character,
    compute_numeric_check_digit,
    tax_code_error,
)

__all__ = [
    "COMPANY_FORMS",
    "FILING_NS",
    "NSMAP",
    "REPEATED_ELEMENTS",
    "check_content",
    "location_of",
]

#: Prefix map used in every location and XPath query (the walked paths' own).
NSMAP = FILING_NAMESPACES

#: Namespace of the unified filing, version 1.
FILING_NS = NSMAP["f"]

#: Elements that may repeat: their locations always carry an index, even when there is one.
REPEATED_ELEMENTS = frozenset({"ateco", "employee", "attachment"})

#: Legal forms whose partita IVA is the same number as their 11-digit tax code.
COMPANY_FORMS = frozenset({"SRL", "SRLS", "SPA", "SAPA", "SNC", "SAS", "COOP"})

#: Legal form of a sole proprietorship, the only subject identified by a personal tax code.
SOLE_PROPRIETORSHIP = "DI"

_EARLIEST_ACTIVITY_START = date(1900, 1, 1)
_ACTIVITY_START_HORIZON = timedelta(days=365)
_HIRE_DATE_HORIZON = timedelta(days=60)
_AGE_OF_MAJORITY = 18


def _step(element: etree._Element) -> str:
    """One step of a location: prefixed name plus an index where the element can repeat."""
    qname = etree.QName(element)
    if qname.namespace == FILING_NS:
        name = f"f:{qname.localname}"
    elif qname.namespace:
        name = f"Q{{{qname.namespace}}}{qname.localname}"
    else:
        name = qname.localname
    parent = element.getparent()
    if parent is None:
        return name
    tag = qname.text  # the element's own `{namespace}name`
    before = sum(1 for _ in element.itersiblings(tag, preceding=True))
    repeated = qname.namespace == FILING_NS and qname.localname in REPEATED_ELEMENTS
    if repeated or before or next(element.itersiblings(tag), None) is not None:
        return f"{name}[{before + 1}]"
    return name


def location_of(element: etree._Element) -> str:
    """The XPath-like location of `element`, e.g. /f:filing/f:employees/f:employee[2]."""
    steps = [_step(node) for node in (element, *element.iterancestors())]
    return "/" + "/".join(reversed(steps))


class _Findings:
    """Collects violations, each located at the element it is about."""

    def __init__(self) -> None:
        self.items: list[Violation] = []

    def add(self, code: str, element: etree._Element, detail: str) -> None:
        self.items.append(Violation(code, location_of(element), detail, element.sourceline))


def _find(parent: etree._Element, path: str) -> etree._Element | None:
    return child_path(path).first(parent)


def _text(parent: etree._Element, path: str) -> str | None:
    element = _find(parent, path)
    return None if element is None else (element.text or "")


def _date_of(element: etree._Element | None) -> date | None:
    """The element's xs:date value; None when absent (the schema vouches for the form)."""
    if element is None or not element.text:
        return None
    try:
        return date.fromisoformat(element.text.strip())
    except ValueError:
        return None


def _dated(parent: etree._Element, path: str) -> tuple[etree._Element, date] | None:
    """The element at `path` with its xs:date value, to report a finding at that element."""
    element = _find(parent, path)
    value = _date_of(element)
    return None if element is None or value is None else (element, value)


def _only_check_is_wrong(code: str) -> bool:
    """True when fixing the last character alone would make `code` valid."""
    try:
        if len(code) == 16:
            fixed = code[:15] + compute_check_character(code[:15])
        elif len(code) == 11:
            fixed = code[:10] + compute_numeric_check_digit(code[:10])
        else:
            return False
    except ValueError:
        return False
    return fixed != code and tax_code_error(fixed) is None


def _check_code(found: _Findings, element: etree._Element, *, what: str = "tax_code") -> bool:
    """Report an invalid tax code (or partita IVA with `what="vat_number"`); True if valid."""
    code = (element.text or "").strip()
    reason = tax_code_error(code)
    if reason is None:
        return True
    kind = "check_digit" if _only_check_is_wrong(code) else "format"
    label = "partita IVA" if what == "vat_number" else "tax code"
    found.add(f"{what}_{kind}", element, f"Invalid {label}: {reason}.")
    return False


def _valid_code(
    found: _Findings, parent: etree._Element, path: str, *, what: str = "tax_code"
) -> etree._Element | None:
    """The code element at `path` when present and valid; an invalid one is reported."""
    element = _find(parent, path)
    return element if element is not None and _check_code(found, element, what=what) else None


def _age_on(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def _check_subject(found: _Findings, root: etree._Element, today: date) -> None:
    subject = _find(root, "f:subject")
    assert subject is not None  # guaranteed by the schema
    legal_form = _text(subject, "f:legalForm") or ""
    tax_code = _valid_code(found, subject, "f:taxCode")
    vat = _valid_code(found, subject, "f:vatNumber", what="vat_number")
    if tax_code is not None and len(tax_code.text or "") == 16 and legal_form != SOLE_PROPRIETORSHIP:
        found.add(
            "tax_code_kind",
            tax_code,
            f"A 16-character personal tax code identifies a natural person; a subject with legal "
            f"form {legal_form} needs its 11-digit tax code (only DI may use a personal one).",
        )
    if (
        tax_code is not None
        and vat is not None
        and len(tax_code.text or "") == 11
        and legal_form in COMPANY_FORMS
        and vat.text != tax_code.text
    ):
        found.add(
            "vat_number_mismatch",
            vat,
            f"For a company ({legal_form}) the partita IVA must be the same number as its "
            f"11-digit tax code.",
        )
    dated = _dated(subject, "f:activityStartDate")
    if dated is None:
        return
    start_element, start = dated
    if start > today + _ACTIVITY_START_HORIZON:
        found.add(
            "activity_start_too_far",
            start_element,
            f"The activity start date is more than {_ACTIVITY_START_HORIZON.days} days ahead.",
        )
    if start < _EARLIEST_ACTIVITY_START:
        found.add(
            "activity_start_too_early", start_element, "The activity start date is before 1900."
        )


def _check_birth(found: _Findings, person: etree._Element, code_ok: bool, today: date) -> None:
    """Birth date in the past, of age, and the one encoded in the person's tax code."""
    dated = _dated(person, "f:birthDate")
    if dated is None:
        return
    birth_element, birth = dated
    if birth >= today:
        found.add("birth_date_not_past", birth_element, "The birth date is not in the past.")
        return
    if _age_on(birth, today) < _AGE_OF_MAJORITY:
        found.add(
            "legal_representative_underage",
            birth_element,
            f"The legal representative must be at least {_AGE_OF_MAJORITY} years old.",
        )
    code = _text(person, "f:taxCode") or ""
    encoded = birth_date_from_tax_code(code, today) if code_ok else None
    if encoded is not None and (encoded.year % 100, encoded.month, encoded.day) != (
        birth.year % 100,
        birth.month,
        birth.day,
    ):
        found.add(
            "birth_date_mismatch",
            birth_element,
            f"The birth date differs from the one encoded in the tax code "
            f"({encoded.day:02d}/{encoded.month:02d}/..{encoded.year % 100:02d}).",
        )


def _check_people(found: _Findings, root: etree._Element, today: date) -> None:
    representative = _find(root, "f:legalRepresentative")
    declarant = _find(root, "f:declarant")
    assert representative is not None and declarant is not None  # guaranteed by the schema
    rep_code = _valid_code(found, representative, "f:taxCode")
    _check_birth(found, representative, rep_code is not None, today)
    declarant_code = _valid_code(found, declarant, "f:taxCode")
    role = _text(declarant, "f:role")
    if rep_code is not None and declarant_code is not None and role == "legal_representative":
        if declarant_code.text != rep_code.text:
            found.add(
                "declarant_not_legal_representative",
                declarant_code,
                "The declarant signs as legal representative but is not the legal "
                "representative named in the filing.",
            )


def _check_employees(found: _Findings, root: etree._Element, today: date) -> None:
    start = _date_of(_find(root, "f:subject/f:activityStartDate"))
    first_seen: dict[str, int] = {}
    for index, employee in enumerate(child_path("f:employees/f:employee")(root), start=1):
        code_element = _valid_code(found, employee, "f:taxCode")
        if code_element is not None:
            code = code_element.text or ""
            if code in first_seen:
                found.add(
                    "duplicate_tax_code",
                    code_element,
                    f"The same tax code is already given for employee {first_seen[code]}.",
                )
            else:
                first_seen[code] = index
        dated = _dated(employee, "f:hireDate")
        if dated is None:
            continue
        hire_element, hired = dated
        if start is not None and hired < start:
            found.add(
                "hire_date_before_activity_start",
                hire_element,
                "The hire date is before the subject's activity start date.",
            )
        if hired > today + _HIRE_DATE_HORIZON:
            found.add(
                "hire_date_too_far",
                hire_element,
                f"The hire date is more than {_HIRE_DATE_HORIZON.days} days ahead.",
            )


def _check_attachments(found: _Findings, root: etree._Element, _today: date) -> None:
    first_seen: dict[str, int] = {}
    for index, attachment in enumerate(child_path("f:attachments/f:attachment")(root), 1):
        name_element = _find(attachment, "f:name")
        if name_element is None:
            continue
        key = (name_element.text or "").strip().casefold()
        if key in first_seen:
            found.add(
                "duplicate_attachment_name",
                name_element,
                f"Attachment {first_seen[key]} already has this name.",
            )
        else:
            first_seen[key] = index


def _check_kind_blocks(found: _Findings, root: etree._Element, today: date) -> None:
    period_element = _find(root, "f:responsibilityDeclaration/f:referencePeriod")
    if period_element is not None and period_element.text:
        year, _, month = period_element.text.strip().partition("-")
        period = (int(year), int(month) if month else 1)
        if period > (today.year, today.month if month else 1):
            found.add(
                "reference_period_future", period_element, "The reference period is in the future."
            )
    runts = _find(root, "f:runtsRegistration")
    if runts is not None and _text(runts, "f:section") == "impresa_sociale":
        flag = _find(runts, "f:socialEnterprise")
        if flag is not None and (flag.text or "").strip() not in ("true", "1"):
            found.add(
                "social_enterprise_mismatch",
                flag,
                "Section impresa_sociale is only for social enterprises (socialEnterprise true).",
            )
    elif runts is not None and (_text(runts, "f:socialEnterprise") or "").strip() in ("true", "1"):
        # The RUNTS enters a social enterprise only in its section, fed by the Registro Imprese
        # (art. 11 c. 3 D.Lgs. 117/2017): another section would be a registration it never gets.
        section = _find(runts, "f:section")
        if section is not None:
            found.add("social_enterprise_section", section,
                      "A social enterprise is registered in section impresa_sociale.")
    start = _find(root, "f:businessStart/f:registrationSection")
    if start is not None and _text(root, "f:subject/f:legalForm") == "IS" and (start.text or "") != "speciale":
        found.add("social_enterprise_section", start,
                  "A social enterprise (legal form IS) is registered in the special section.")


def _check_runts_deposit(found: _Findings, root: etree._Element, today: date) -> None:
    """An act cannot be dated in the future; accounts are approved after their year closes."""
    accounts = _find(root, "f:runtsDeposit/f:annualAccounts")
    if accounts is not None:
        year_element = _find(accounts, "f:financialYear")
        year = int((year_element.text or "0").strip()) if year_element is not None else 0
        if year_element is not None and year >= today.year + 1:
            found.add("financial_year_future", year_element, "The financial year has not begun yet.")
        approved = _dated(accounts, "f:approvalDate")
        if approved is not None and approved[1] > today:
            found.add("approval_date_future", approved[0], "The approval date is in the future.")
        elif approved is not None and approved[1].year <= year:
            found.add("approval_before_year_end", approved[0],
                      f"Accounts of {year} can be approved only after the year has closed.")
    resolved = _dated(root, "f:runtsDeposit/f:statuteChange/f:resolutionDate")
    if resolved is not None and resolved[1] > today:
        found.add("resolution_date_future", resolved[0], "The date of the deliberation is in the future.")


_CHECKS: tuple[Callable[[_Findings, etree._Element, date], None], ...] = (
    _check_subject,
    _check_people,
    _check_employees,
    _check_attachments,
    _check_kind_blocks,
    _check_runts_deposit,
)


def check_content(root: etree._Element, *, today: date) -> list[Violation]:
    """Every content violation of a schema-valid filing, in document order.

    `today` is the date the rules are judged against (Europe/Rome in production), passed in so
    that tests and replays are deterministic.
    """
    found = _Findings()
    for check in _CHECKS:
        check(found, root, today)
    # sorted() is stable: violations on the same line keep the order of the checks.
    return sorted(found.items, key=lambda v: v.line or 0)
