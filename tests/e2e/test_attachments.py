"""Attachments over real HTTP: streamed, size-capped, hash-checked uploads to a live hub.

Each test runs on SQLite and on PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import select

from cli.client import PortalClient, demo_user
from security.modi import body_digest_of_hash
from storage.attachment_tables import attachments
from storage.tables import audit_log
from tests.support import OTHER_PORTAL_KEY, TEST_PORTAL_KEY, RunningHub, hub_settings

#: The test hubs' cap: above the memory test's 30 MB, small enough to pass it quickly.
CAP = 40 * 1024 * 1024
USER = demo_user("PRVCHR70T45F839G")  # the RUNTS example's declarant and legal representative


def _settings(database_url: str, blobs: Path, endpoints: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    settings = hub_settings(database_url, endpoints or {})
    return settings.model_copy(update={"attachments": settings.attachments.model_copy(
        update={"max_bytes": CAP, "blob_dir": str(blobs)})})


@pytest.fixture
def blobs(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
def hub(database_url: str, blobs: Path) -> Iterator[RunningHub]:
    with RunningHub(_settings(database_url, blobs), with_workers=False) as running:
        yield running


@pytest.fixture
def client(hub: RunningHub) -> Iterator[PortalClient]:
    with PortalClient(hub.base_url, TEST_PORTAL_KEY, timeout=60) as c:
        yield c


def make_file(path: Path, size: int, *, head: bytes = b"%PDF-1.7\n") -> Path:
    """A generated file of `size` bytes (incompressible, so no layer can shrink it)."""
    with path.open("wb") as out:
        out.write(head)
        left = size - len(head)
        while left > 0:
            block = os.urandom(min(left, 1 << 20))
            out.write(block)
            left -= len(block)
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def kept_blobs(blobs: Path) -> list[Path]:
    return [p for p in blobs.rglob("*") if p.is_file()]


def test_a_several_megabyte_upload_is_stored_under_its_hash(client: PortalClient, hub: RunningHub,
                                                           blobs: Path, tmp_path: Path) -> None:
    """201 with id, hash, size, type, name and an RFC 3339 time; the blob is the same bytes, 0600."""
    source = make_file(tmp_path / "statuto.pdf", 6 * 1024 * 1024 + 123)
    response = client.upload_attachment(source, media_type="application/pdf", user=USER, file_name="statuto.pdf")
    assert response.status_code == 201, response.text
    body = response.json()
    expected = sha256_of(source)
    assert body["sha256"] == expected
    assert body["size"] == source.stat().st_size
    assert body["mediaType"] == "application/pdf"
    assert body["fileName"] == "statuto.pdf"
    assert body["attachmentId"].startswith("att_")
    assert body["createdAt"].endswith("+00:00")
    assert response.headers["location"] == f"/v1/attachments/{body['attachmentId']}"
    stored = blobs / "sha256" / expected[:2] / expected[2:4] / expected
    assert sha256_of(stored) == expected
    assert stored.stat().st_mode & 0o777 == 0o600
    assert not list((blobs / "tmp").iterdir())
    with hub.hub.engine.connect() as conn:
        row = conn.execute(select(attachments).where(attachments.c.id == body["attachmentId"])).one()
    assert (row.owner, row.portal, row.size) == (USER.tax_code, "test", source.stat().st_size)
    read = client.attachment(body["attachmentId"], user=USER)
    assert read.status_code == 200 and read.json() == body
    assert client.attachment(body["attachmentId"], user=demo_user("RSSMRA80A01H501U")).status_code == 404
    with PortalClient(hub.base_url, OTHER_PORTAL_KEY) as other:
        assert other.attachment(body["attachmentId"], user=USER).status_code == 404


def test_a_body_that_does_not_match_its_signed_digest_is_422_and_nothing_is_kept(
        client: PortalClient, hub: RunningHub, blobs: Path, tmp_path: Path) -> None:
    """The portal signed one hash and sent other bytes: 422, no row, no blob, one audit line."""
    source = make_file(tmp_path / "atto.pdf", 2 * 1024 * 1024)
    headers = {"Content-Type": "application/pdf"}
    headers.update(client.signer.headers(content_type="application/pdf", user=USER,
                                         digest=body_digest_of_hash(hashlib.sha256(b"other bytes").digest())))
    response = httpx.post(f"{hub.base_url}/v1/attachments", content=source.read_bytes(), headers=headers,
                          timeout=30, trust_env=False)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:crocevia:problem:attachment-digest-mismatch"
    assert hub.count(attachments) == 0
    assert kept_blobs(blobs) == []
    with hub.hub.engine.connect() as conn:
        outcomes = [r.outcome for r in conn.execute(
            select(audit_log).where(audit_log.c.action == "attachment_refused"))]
    assert outcomes == ["attachment-digest-mismatch"]


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_an_upload_over_the_cap_is_answered_413_before_the_rest_is_sent(
        client: PortalClient, hub: RunningHub, blobs: Path, declare_length: bool) -> None:
    """The client offers 3x the cap and keeps sending: the 413 arrives while it still has most to send."""
    total = 3 * CAP
    chunk = os.urandom(256 * 1024)
    signed = client.signer.headers(content_type="application/pdf", user=USER,
                                   digest=body_digest_of_hash(hashlib.sha256(b"unused").digest()))
    head = [f"POST /v1/attachments HTTP/1.1", f"Host: 127.0.0.1:{hub.port}", "Content-Type: application/pdf",
            *(f"{k}: {v}" for k, v in signed.items()),
            f"Content-Length: {total}" if declare_length else "Transfer-Encoding: chunked"]
    received = bytearray()
    answered = threading.Event()

    with socket.create_connection(("127.0.0.1", hub.port), timeout=30) as sock:
        def read() -> None:
            while True:
                try:
                    data = sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                received.extend(data)
                if b"\r\n\r\n" in received:
                    answered.set()
            answered.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sent = 0
        try:
            while sent < total and not answered.is_set():
                data = chunk if declare_length else b"%x\r\n%s\r\n" % (len(chunk), chunk)
                sock.sendall(data)
                sent += len(chunk)
        except OSError:
            pass  # the hub closed the connection after answering
        assert answered.wait(30), "no answer"
        reader.join(30)
    assert bytes(received).startswith(b"HTTP/1.1 413"), bytes(received[:200])
    assert sent < 2 * CAP  # it did not wait for the whole body
    assert b"attachment-too-large" in received
    assert hub.count(attachments) == 0
    assert kept_blobs(blobs) == []


def test_wrong_media_type_unsigned_and_bad_file_name_are_refused(client: PortalClient, hub: RunningHub,
                                                                 blobs: Path, tmp_path: Path) -> None:
    """415 for a type outside the list, 401 without a signature, 400 for a path as file name."""
    source = make_file(tmp_path / "a.exe", 1000, head=b"MZ")
    assert client.upload_attachment(source, media_type="application/octet-stream",
                                    user=USER).status_code == 415
    unsigned = httpx.post(f"{hub.base_url}/v1/attachments", content=source.read_bytes(),
                          headers={"Content-Type": "application/pdf"}, trust_env=False)
    assert unsigned.status_code == 401
    bad = client.upload_attachment(source, media_type="application/pdf", user=USER, file_name="../../etc/passwd")
    assert bad.status_code == 400
    assert bad.json()["type"] == "urn:crocevia:problem:invalid-file-name"
    assert hub.count(attachments) == 0
    assert kept_blobs(blobs) == []


def test_a_content_disposition_the_parser_cannot_take_is_a_bad_file_name_not_a_500(
        client: PortalClient, hub: RunningHub, blobs: Path) -> None:
    """Nested comments (`((((…`, found by schemathesis: the stdlib parser recursed until it
    failed, a 500) and a header longer than the document's 1024 characters: 400
    invalid-file-name, nothing kept."""
    body = b"%PDF-1.7\n%%EOF\n"
    for disposition in ("attachment; filename=" + "(" * 1000, "attachment; filename=" + "a" * 1100 + ".pdf"):
        headers = {"Content-Type": "application/pdf", "Content-Disposition": disposition,
                   **client.signer.headers(body=body, content_type="application/pdf", user=USER)}
        refused = httpx.post(f"{hub.base_url}/v1/attachments", content=body, headers=headers, trust_env=False)
        assert refused.status_code == 400, (disposition[:40], refused.text)
        assert refused.json()["type"] == "urn:crocevia:problem:invalid-file-name"
    assert hub.count(attachments) == 0
    assert kept_blobs(blobs) == []


# ----- referenced by a filing, delivered in each contract's form -----

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "filing" / "v1" / "examples"


def filing_with(attachments_xml: str, *, social_enterprise: bool = True) -> bytes:
    """The RUNTS example with these attachments: as shipped, a social enterprise (registered at
    the Registro Imprese, which tells RUNTS); otherwise the same body as an APS, which registers
    at RUNTS itself."""
    document = (EXAMPLES / "runts_registration.xml").read_text(encoding="utf-8")
    start, end = document.index("<attachments>"), document.index("</attachments>") + len("</attachments>")
    document = document[:start] + f"<attachments>{attachments_xml}</attachments>" + document[end:]
    if not social_enterprise:
        document = (document.replace("<legalForm>IS</legalForm>", "<legalForm>APS</legalForm>")
                    .replace("<section>impresa_sociale</section>", "<section>aps</section>")
                    .replace("<socialEnterprise>true</socialEnterprise>", "<socialEnterprise>false</socialEnterprise>"))
    return document.encode()


def attachment_xml(upload: dict, *, name: str, document_type: str, sha256: str | None = None,
                   attachment_id: str | None = None) -> str:
    return (f"<attachment><name>{name}</name><mediaType>{upload['mediaType']}</mediaType>"
            f"<sha256>{sha256 or upload['sha256']}</sha256><documentType>{document_type}</documentType>"
            f"<attachmentId>{attachment_id or upload['attachmentId']}</attachmentId></attachment>")


@pytest.fixture
def delivering_hub(database_url: str, blobs: Path, sims) -> Iterator[RunningHub]:  # type: ignore[no-untyped-def]
    endpoints = {agency: sims.soap_endpoint(agency) for agency in sims.urls}
    with RunningHub(_settings(database_url, blobs, endpoints)) as running:
        yield running


def test_a_filing_delivers_its_attachments_by_mtom_and_multipart_intact_once(
        delivering_hub: RunningHub, sims, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The statute of a social enterprise goes to the Registro Imprese as MTOM; an APS's statute
    and accounts go to RUNTS as multipart/form-data; each simulator's ledger shows every document
    once, with its hash and size."""
    with PortalClient(delivering_hub.base_url, TEST_PORTAL_KEY, timeout=60) as client:
        statute_file = make_file(tmp_path / "statuto.pdf", 5 * 1024 * 1024 + 7)
        accounts_file = make_file(tmp_path / "bilancio.p7m", 3 * 1024 * 1024 + 1, head=b"0\x82")

        def upload_both() -> tuple[dict, dict]:
            statute = client.upload_attachment(statute_file, media_type="application/pdf", user=USER,
                                               file_name="statuto.pdf").json()
            accounts = client.upload_attachment(accounts_file, media_type="application/pkcs7-mime", user=USER,
                                                file_name="bilancio.p7m").json()
            return statute, accounts

        references: dict[str, str] = {}
        uploads: dict[str, tuple[dict, dict]] = {}
        for agency, social in (("cciaa", True), ("runts", False)):
            statute, accounts = uploads[agency] = upload_both()
            document = filing_with(attachment_xml(statute, name="statuto.pdf", document_type="statuto")
                                   + attachment_xml(accounts, name="bilancio-2025.pdf.p7m", document_type="bilancio"),
                                   social_enterprise=social)
            response = client.submit(document, user=USER)
            assert response.status_code == 202, response.text
            references[agency] = response.json()["reference"]
        views = client.wait_settled(list(references.values()), timeout=60)
    assert {views[r]["state"] for r in references.values()} == {"protocolled"}, views

    def documents(agency: str) -> list[dict]:
        effects = [e for e in sims.ledger(agency)["effects"] if e["filingReference"] == references[agency]]
        assert len(effects) == 1 and effects[0]["duplicates"] == 0
        return effects[0]["attachments"]

    # The register takes deeds (statute, deed of incorporation), not the accounts.
    statute, _ = uploads["cciaa"]
    assert documents("cciaa") == [
        {"nome": "statuto.pdf", "mediaType": "application/pdf", "sha256": statute["sha256"],
         "size": statute_file.stat().st_size, "form": "mtom"}]
    statute, accounts = uploads["runts"]
    assert documents("runts") == [
        {"nome": "statuto.pdf", "mediaType": "application/pdf", "sha256": statute["sha256"],
         "size": statute_file.stat().st_size, "form": "multipart"},
        {"nome": "bilancio-2025.pdf.p7m", "mediaType": "application/pkcs7-mime", "sha256": accounts["sha256"],
         "size": accounts_file.stat().st_size, "form": "multipart"}]
    with delivering_hub.hub.engine.connect() as conn:
        referenced = {r.id: r.referenced_by for r in conn.execute(select(attachments))}
    assert referenced == {upload["attachmentId"]: references[agency]
                          for agency, pair in uploads.items() for upload in pair}


def test_a_filing_naming_an_unknown_foreign_or_altered_attachment_is_422_naming_each(
        client: PortalClient, hub: RunningHub, tmp_path: Path) -> None:
    """Unknown id, another user's upload, another portal's upload, a different hash: one error each,
    located at its attachmentId, and no filing stored."""
    from storage.tables import filings

    mine = client.upload_attachment(make_file(tmp_path / "a.pdf", 10_000), media_type="application/pdf",
                                    user=USER).json()
    someone_else = client.upload_attachment(make_file(tmp_path / "b.pdf", 10_000), media_type="application/pdf",
                                            user=demo_user("RSSMRA80A01H501U")).json()
    with PortalClient(hub.base_url, OTHER_PORTAL_KEY) as other:
        other_portal = other.upload_attachment(make_file(tmp_path / "c.pdf", 10_000), media_type="application/pdf",
                                               user=USER).json()
    document = filing_with(
        attachment_xml(mine, name="ok.pdf", document_type="statuto")
        + attachment_xml(mine, name="unknown.pdf", document_type="bilancio", attachment_id="att_" + "0" * 24)
        + attachment_xml(someone_else, name="foreign.pdf", document_type="verbale")
        + attachment_xml(other_portal, name="other-portal.pdf", document_type="procura")
        + attachment_xml(mine, name="altered.pdf", document_type="altro", sha256="f" * 64))
    # Each error is located in the sender's own terms: an XML path, or a JSON Pointer.
    for content_type, body, where in (
            ("application/xml", document, "/f:filing/f:attachments/f:attachment[{}]/f:attachmentId"),
            ("application/json", orjson.dumps(hub.hub.validator.xml_to_json(document)),
             "/attachments/attachment/{}/attachmentId")):
        response = client.submit(body, content_type=content_type, user=USER)
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["type"] == "urn:crocevia:problem:attachment-invalid"
        errors = {e["location"]: e["code"] for e in problem["errors"]}
        position = (lambda n: n) if content_type == "application/xml" else (lambda n: n - 1)
        assert errors == {
            where.format(position(2)): "attachment-unknown",
            where.format(position(3)): "attachment-unknown",
            where.format(position(4)): "attachment-unknown",
            where.format(position(5)): "attachment-hash-mismatch",
        }, content_type
        assert mine["attachmentId"] in problem["detail"] or "attachment" in problem["detail"]
    assert hub.count(filings) == 0
    with hub.hub.engine.connect() as conn:
        assert {r.referenced_by for r in conn.execute(select(attachments))} == {None}


def test_uploading_30_mb_takes_no_more_memory_than_3_mb(client: PortalClient, hub: RunningHub,
                                                       tmp_path: Path) -> None:
    """Peak Python allocations (client and hub share this process) stay flat as the file grows tenfold."""
    small = make_file(tmp_path / "small.pdf", 3 * 1024 * 1024)
    large = make_file(tmp_path / "large.pdf", 30 * 1024 * 1024)
    client.upload_attachment(small, media_type="application/pdf", user=USER)  # warm every code path once

    def peak_of(source: Path) -> int:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            response = client.upload_attachment(source, media_type="application/pdf", user=USER)
            assert response.status_code == 201, response.text
            return tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()

    small_peak, large_peak = peak_of(small), peak_of(large)
    assert large_peak < 4 * 1024 * 1024, (small_peak, large_peak)  # far below the 30 MB it moved
    assert large_peak < small_peak + 2 * 1024 * 1024, (small_peak, large_peak)


def test_an_unreferenced_attachment_expires_and_a_referenced_one_stays(database_url: str, blobs: Path,
                                                                      tmp_path: Path) -> None:
    """After the configured time an upload no filing names is gone, row and blob; one a filing names stays."""
    from tests.support import FakeClock, portal_signer

    clock = FakeClock()
    settings = _settings(database_url, blobs)
    ttl = settings.attachments.unreferenced_ttl
    with RunningHub(settings, clock=clock, with_workers=False) as running, \
            PortalClient(running.base_url, portal_signer("test", clock=clock)) as client:
        def upload(name: str) -> dict:
            response = client.upload_attachment(make_file(tmp_path / name, 20_000), media_type="application/pdf",
                                                user=USER)
            assert response.status_code == 201, response.text
            return response.json()

        forgotten, kept = upload("forgotten.pdf"), upload("kept.pdf")
        filed = client.submit(filing_with(attachment_xml(kept, name="statuto.pdf", document_type="statuto")),
                              user=USER)
        assert filed.status_code == 202, filed.text
        clock.advance(ttl + 120)
        later = upload("later.pdf")
        with running.hub.engine.connect() as conn:
            left = {r.id for r in conn.execute(select(attachments))}
    assert left == {kept["attachmentId"], later["attachmentId"]}
    assert {p.name for p in kept_blobs(blobs)} == {kept["sha256"], later["sha256"]}


def test_a_business_start_sends_the_deed_inline_in_base64_to_inail_and_by_mtom_to_the_register(
        delivering_hub: RunningHub, sims, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """INAIL's contract takes attachments inline (base64, streamed into the envelope); the
    Registro Imprese's as MTOM; INPS's mapping takes none: each ledger shows exactly its documents."""
    founder = demo_user("FTTMRC85C14H501X")  # the business_start example's declarant
    with PortalClient(delivering_hub.base_url, TEST_PORTAL_KEY, timeout=60) as client:
        deed_file = make_file(tmp_path / "atto.pdf", 4 * 1024 * 1024 + 5)
        statute_file = make_file(tmp_path / "statuto.pdf", 1024 * 1024 + 3)
        deed = client.upload_attachment(deed_file, media_type="application/pdf", user=founder).json()
        statute = client.upload_attachment(statute_file, media_type="application/pdf", user=founder).json()
        document = (EXAMPLES / "business_start.xml").read_text(encoding="utf-8")
        start, end = document.index("<attachments>"), document.index("</attachments>") + len("</attachments>")
        document = (document[:start] + "<attachments>"
                    + attachment_xml(deed, name="atto-costitutivo.pdf", document_type="atto_costitutivo")
                    + attachment_xml(statute, name="statuto.pdf", document_type="statuto")
                    + "</attachments>" + document[end:])
        response = client.submit(document.encode(), user=founder)
        assert response.status_code == 202, response.text
        reference = response.json()["reference"]
        view = client.wait_settled([reference], timeout=60)[reference]
    assert view["state"] == "protocolled", view

    def documents(agency: str) -> list[tuple[str, str, int, str]]:
        effects = [e for e in sims.ledger(agency)["effects"] if e["filingReference"] == reference]
        assert len(effects) == 1 and effects[0]["duplicates"] == 0
        return [(a["nome"], a["sha256"], a["size"], a["form"]) for a in effects[0]["attachments"]]

    deed_entry = ("atto-costitutivo.pdf", deed["sha256"], deed_file.stat().st_size)
    assert documents("inail") == [(*deed_entry, "base64")]
    assert documents("cciaa") == [(*deed_entry, "mtom"),
                                  ("statuto.pdf", statute["sha256"], statute_file.stat().st_size, "mtom")]
    assert documents("inps") == []


def test_delivering_30_mb_takes_no_more_memory_than_3_mb(delivering_hub: RunningHub, sims,
                                                         tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Upload, intake and delivery (MTOM to the register, multipart to RUNTS) of one statute: the
    peak of Python allocations in this process (client, API and worker) stays flat as it grows tenfold."""
    with PortalClient(delivering_hub.base_url, TEST_PORTAL_KEY, timeout=120) as client:
        def peak_of(size: int, name: str) -> int:
            source = make_file(tmp_path / name, size)
            tracemalloc.start()
            try:
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
                upload = client.upload_attachment(source, media_type="application/pdf", user=USER).json()
                response = client.submit(filing_with(attachment_xml(upload, name=name, document_type="statuto")),
                                         user=USER)
                assert response.status_code == 202, response.text
                reference = response.json()["reference"]
                assert client.wait_settled([reference], timeout=90)[reference]["state"] == "protocolled"
                return tracemalloc.get_traced_memory()[1] - base
            finally:
                tracemalloc.stop()

        peak_of(512 * 1024, "warm.pdf")  # every code path once
        small, large = peak_of(3 * 1024 * 1024, "small.pdf"), peak_of(30 * 1024 * 1024, "large.pdf")
    assert large < 8 * 1024 * 1024, (small, large)
    assert large < small + 3 * 1024 * 1024, (small, large)


def test_an_agency_refuses_a_document_that_does_not_hash_as_declared(
        delivering_hub: RunningHub, sims, blobs: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A blob altered on disk after upload reaches each agency with its declared hash: the
    register (MTOM) and RUNTS (multipart) both refuse it, record no effect, and say why (ALLEGATO)."""
    with PortalClient(delivering_hub.base_url, TEST_PORTAL_KEY, timeout=60) as client:
        statute = client.upload_attachment(make_file(tmp_path / "statuto.pdf", 300_000),
                                           media_type="application/pdf", user=USER).json()
        digest = statute["sha256"]
        stored = blobs / "sha256" / digest[:2] / digest[2:4] / digest
        stored.write_bytes(b"%PDF-1.7\n" + os.urandom(300_000 - 9))  # same size, other bytes
        references = {}
        for agency, social in (("cciaa", True), ("runts", False)):
            response = client.submit(filing_with(attachment_xml(statute, name="statuto.pdf", document_type="statuto"),
                                                 social_enterprise=social), user=USER)
            assert response.status_code == 202, response.text
            references[agency] = response.json()["reference"]
        views = client.wait_settled(list(references.values()), timeout=60)
    # The register answers a business refusal (SOAP Client fault), RUNTS a 400: a message the
    # agency holds invalid, not to be sent again as it is.
    states = {agency: {r["agency"]: r["state"] for r in views[reference]["recipients"]}
              for agency, reference in references.items()}
    assert states["cciaa"]["cciaa"] == "rejected", views
    assert states["runts"] == {"runts": "undeliverable"}, views
    for agency, reference in references.items():
        ledger = sims.ledger(agency)
        assert not [e for e in ledger["effects"] if e["filingReference"] == reference]
        assert [i["codice"] for i in ledger["invalid"]] == ["ALLEGATO"], ledger["invalid"]
        assert digest in ledger["invalid"][0]["errore"]
