"""The PDF receipt of a settled filing, over real HTTP: fetched, rendered to an image at 300 dpi
(poppler's `pdftoppm`) and read back by OCR (`tesseract`), so what is asserted is what a person
sees on the page, not what the PDF's text layer says.

OCR normalisation: whitespace is dropped before matching, because tesseract reads the wide
Courier advance around `-`, `.` and `/` as spaces ("CRV - 2026 -0000123"). Nothing else is
normalised.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.client import PortalClient, demo_user
from config.settings import PROJECT_ROOT, load_settings
from tests.conftest import IN_CI
from tests.support import OTHER_PORTAL_KEY, TEST_PORTAL_KEY, RunningHub, free_port, hub_settings

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"
BUSINESS_START = (EXAMPLES / "business_start.xml").read_bytes()
#: Someone else, whom the portal vouches for but who has no part in the filing.
STRANGER = "DMOPRT80A01H501I"


def _require_tools() -> None:
    """Skip locally, fail under CI=true (`.ci/run` installs them) when OCR tools are missing."""
    missing = [tool for tool in ("pdftoppm", "tesseract", "pdfinfo") if shutil.which(tool) is None]
    if missing:
        message = f"{', '.join(missing)} not installed (Debian: poppler-utils, tesseract-ocr)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def _ocr(pdf: bytes, workdir: Path) -> str:
    """The receipt's first page as a person sees it: rendered at 300 dpi, read by tesseract."""
    (workdir / "receipt.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "300", "-gray", "-png", "-singlefile", "-f", "1", "-l", "1",
                    str(workdir / "receipt.pdf"), str(workdir / "page")], check=True, timeout=60)
    done = subprocess.run(["tesseract", str(workdir / "page.png"), "-", "--psm", "4"],
                          check=True, timeout=60, capture_output=True, text=True)
    return done.stdout


def _pdfinfo(pdf: bytes, workdir: Path) -> dict[str, str]:
    (workdir / "info.pdf").write_bytes(pdf)
    done = subprocess.run(["pdfinfo", str(workdir / "info.pdf")], check=True, timeout=30, capture_output=True,
                          text=True)
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in done.stdout.splitlines())}


def _submit(client: PortalClient) -> str:
    response = client.submit(BUSINESS_START)
    assert response.status_code == 202, response.text
    return str(response.json()["reference"])


def test_the_receipt_shows_each_agencys_protocol_number_read_back_by_ocr(
    client: PortalClient, sims, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    """Three agencies, one of which refuses: the page shows the reference, each protocol number the
    status API gives, the refusal's reason, and Rome-time dates with their offset."""
    _require_tools()
    sims.set_faults("inail", [{"kind": "reject", "code": "R100", "text": "posizione non ammessa"}])
    reference = _submit(client)
    view = client.wait_settled([reference], timeout=30)[reference]
    assert view["state"] == "partially_rejected", view
    numbers = {r["agency"]: r["protocolNumber"] for r in view["recipients"] if r["protocolNumber"]}
    assert set(numbers) == {"inps", "cciaa"}, view

    response = client.receipt(reference)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["cache-control"] == "no-store"
    assert response.content.startswith(b"%PDF-")

    info = _pdfinfo(response.content, tmp_path)
    assert info["Title"] == f"Ricevuta pratica {reference}"
    assert info["Author"] == "Crocevia"
    assert info["CreationDate"] and info["Pages"] == "1"
    assert info["Page size"].startswith("595.28 x 841.89")  # A4

    text = _ocr(response.content, tmp_path)
    flat = re.sub(r"\s+", "", text)
    assert reference in flat, text
    for agency, number in numbers.items():
        assert re.sub(r"\s+", "", number) in flat, f"{agency} {number} not read back:\n{text}"
    assert "INPS" in text and "INAIL" in text and "Registro Imprese" in text
    assert "R100" in text and "posizione non ammessa" in text
    assert "Respinta / Rejected" in text
    assert re.search(r"\d\d/\d\d/20\d\d \d\d:\d\d:\d\d \(UTC\+0[12]:00\)", text), text
    assert "FTTMRC85C14H501X" in flat  # the declarant


def test_a_receipt_is_refused_while_agencies_are_still_answering(
    database_url: str, sims  # type: ignore[no-untyped-def]
) -> None:
    """No worker runs: the filing stays in progress and its receipt is a 409 problem."""
    endpoints = {agency: sims.soap_endpoint(agency) for agency in sims.urls}
    with RunningHub(hub_settings(database_url, endpoints), with_workers=False) as running, \
            PortalClient(running.base_url, TEST_PORTAL_KEY) as client:
        reference = _submit(client)
        response = client.receipt(reference)
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["type"] == "urn:crocevia:problem:filing-not-settled"
        assert body["state"] == "in_progress" and reference in body["detail"]


def test_another_users_or_portals_filing_has_no_receipt(hub: RunningHub, client: PortalClient) -> None:
    """Someone with no part in the filing, or another portal, gets 404 as for an unknown one."""
    reference = _submit(client)
    assert client.wait_settled([reference], timeout=30)[reference]["state"] == "protocolled"
    assert client.receipt(reference).status_code == 200

    stranger = client.receipt(reference, user=demo_user(STRANGER))
    assert stranger.status_code == 404 and stranger.json()["type"] == "urn:crocevia:problem:not-found"
    with PortalClient(hub.base_url, OTHER_PORTAL_KEY) as other:
        declarant = demo_user("FTTMRC85C14H501X")
        assert other.receipt(reference, user=declarant).status_code == 404
    assert client.receipt("CRV-2000-999999").status_code in (401, 404)


def test_hub_py_receipt_saves_the_pdf_or_says_why_in_one_line(
    database_url: str, sims, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    """`hub.py receipt REF -o FILE` with the demo portal's credentials writes the PDF; an unknown
    reference (exit 1) or an unreachable hub (exit 69) is one line on stderr."""
    from hub import cli
    from wiring.identity import portal_signer

    endpoints = {agency: sims.soap_endpoint(agency) for agency in sims.urls}
    settings = hub_settings(database_url, endpoints)
    base = load_settings()
    settings = settings.model_copy(update={"portals": {**settings.portals, "demo": base.portals["demo"]}})
    with RunningHub(settings) as running, \
            PortalClient(running.base_url, portal_signer(base, "demo")) as demo:
        reference = _submit(demo)
        assert demo.wait_settled([reference], timeout=30)[reference]["state"] == "protocolled"
        runner = CliRunner()
        target = tmp_path / "ricevuta.pdf"
        saved = runner.invoke(cli, ["receipt", reference, "-o", str(target), "--url", running.base_url,
                                    "--user", "FTTMRC85C14H501X"])
        assert saved.exit_code == 0, saved.output + saved.stderr
        assert target.read_bytes().startswith(b"%PDF-") and reference in saved.output

        missing = runner.invoke(cli, ["receipt", "CRV-2000-999999", "-o", str(tmp_path / "x.pdf"),
                                      "--url", running.base_url, "--user", "FTTMRC85C14H501X"])
        assert missing.exit_code == 1
        assert missing.stderr.startswith("error: 404 ") and missing.stderr.strip().endswith("no filing CRV-2000-999999")
        assert not (tmp_path / "x.pdf").exists()

    unreachable = CliRunner().invoke(cli, ["receipt", reference, "-o", str(tmp_path / "y.pdf"), "--url",
                                           f"http://127.0.0.1:{free_port()}", "--user", "FTTMRC85C14H501X"])
    assert unreachable.exit_code == 69 and unreachable.stderr.count("\n") == 1
    assert unreachable.stderr.startswith("error: cannot reach the hub") and "Traceback" not in unreachable.output
