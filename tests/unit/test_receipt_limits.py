"""Receipt limits as the agency file declares them (`[contracts.<v>.receipt.limits]`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.base import ErrorContext
from adapters.contracts import ContractConfigError, ReceiptLimits, load_agency_catalog
from adapters.receipts import check_acknowledgment, check_receipt
from domain.errors import AgencyProtocolError, DeliveryError
from domain.messages import Receipt

CTX = ErrorContext("acme", "Op", "dlv-1")
AGENCY = """
[contracts.v1]
kind = "rest"
openapi = "acme.yaml"
[contracts.v1.receipt]
protocol_number = "protocollo"
"""


def _limits(tmp_path: Path, text: str) -> ReceiptLimits:
    (tmp_path / "acme.toml").write_text(AGENCY + "[contracts.v1.receipt.limits]\n" + text)
    catalog = load_agency_catalog(tmp_path, project_root=tmp_path, external_dir=tmp_path)
    return catalog.contract("acme").receipt.limits


def test_an_agency_without_limits_gets_the_defaults(tmp_path: Path) -> None:
    """64 characters (the column), 64 references of 256 characters, 32 KiB stored, 1 MiB read."""
    assert _limits(tmp_path, "") == ReceiptLimits()
    assert ReceiptLimits().max_receipt_bytes == 32 * 1024 and ReceiptLimits().max_reply_bytes == 1 << 20


@pytest.mark.parametrize(("text", "message"), [
    ("protocol_number_max_length = 65", "at most 64"),
    ("max_references = 0", "positive integer"),
    ("max_reply_bytes = 1.5", "positive integer"),
    ('protocol_number_pattern = "[A-Z"', "not a regular expression"),
    ("max_refs = 3", "unknown keys"),
])
def test_a_malformed_limit_is_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    """Start-up fails on a limit that cannot work, with the file and key in the message."""
    with pytest.raises(ContractConfigError, match=message) as caught:
        _limits(tmp_path, text)
    assert "acme.toml" in str(caught.value)


def test_the_checks_name_the_first_limit_exceeded() -> None:
    """Each bound has its own code; a receipt within them is returned as it is."""
    limits = ReceiptLimits(protocol_number_pattern=r"P-[0-9]+", max_references=1)
    good = Receipt("P-1", references={"a": "b"})
    assert check_receipt(good, limits, CTX) is good
    cases = {
        "PROTOCOL_NUMBER_INVALID": Receipt("Q-1"),
        "PROTOCOL_NUMBER_TOO_LONG": Receipt("P-" + "1" * 70),
        "TOO_MANY_REFERENCES": Receipt("P-1", references={"a": "1", "b": "2"}),
        "RECEIPT_FIELD_TOO_LONG": Receipt("P-1", outcome="A" * 33),
    }
    for code, receipt in cases.items():
        with pytest.raises(AgencyProtocolError) as caught:
            check_receipt(receipt, limits, CTX)
        assert caught.value.code == code


def test_an_acknowledgment_keeps_to_its_columns() -> None:
    """A correlation id beyond 128 characters (its column) is a protocol error."""
    assert check_acknowledgment(Receipt.acknowledgment(correlation_id="c" * 128), CTX)
    with pytest.raises(AgencyProtocolError):
        check_acknowledgment(Receipt.acknowledgment(correlation_id="c" * 129), CTX)


def test_an_agencys_code_and_text_are_bounded_in_every_error() -> None:
    """Codes go to a 64-character column: a fault's code of any length is cut there."""
    error = DeliveryError("x" * 10_000, code="R" * 1000)
    assert len(error.code) == 64 and len(error.text) <= 2001
