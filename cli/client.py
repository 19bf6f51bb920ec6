"""A small portal client for the hub's HTTP API (used by the CLI, the demo and benchmarks).

Every request is ModI-signed (`security.modi.ModiSigner`) and names the user the portal
vouches for. Like the demo portal it stands for, the client can vouch for a filing's own
declarant, as if they had just logged in with SPID level 2 (`demo_user`): a real portal names
the user its SPID/CIE/CNS login authenticated.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from lxml import etree

from domain.identity import User, level_from_loa, normalise_user_id
from security.modi import ModiSigner, body_digest_of_hash

__all__ = ["DEMO_OPERATOR", "PortalClient", "TERMINAL_FILING_STATES", "declarant_of", "demo_user"]

#: Who the demo portal vouches for when a document names no readable declarant (a fictitious
#: person: the operator at the portal's desk).
DEMO_OPERATOR = "DMOPRT80A01H501I"

TERMINAL_FILING_STATES = frozenset({"protocolled", "partially_rejected", "rejected", "undeliverable"})


def demo_user(tax_code: str, auth: str = "SPID2", location: str = "127.0.0.1") -> User:
    """A user as a portal would vouch for them: `auth` is SPID1..3, CIE or CNS."""
    upper = auth.strip().upper()
    method = "SPID" if upper.startswith("SPID") else upper[:3]
    level = upper[4:] if upper.startswith("SPID") else upper[3:]
    auth_method, number = level_from_loa(method, level or None)
    return User(tax_code=normalise_user_id(tax_code), auth_method=auth_method, level=number,
                idp="https://demo.spid.example/idp" if auth_method.value == "SPID" else "",
                location=location)


def declarant_of(document: bytes, content_type: str = "application/xml") -> str:
    """The declarant's tax code in a unified filing (XML or JSON), or "" when absent."""
    try:
        if content_type.split(";")[0].strip() == "application/json":
            data = orjson.loads(document)
            return str(((data or {}).get("declarant") or {}).get("taxCode") or "")
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        root = etree.fromstring(document, parser)
        return (root.findtext("{urn:crocevia:filing:v1}declarant/{urn:crocevia:filing:v1}taxCode") or "").strip()
    except (etree.XMLSyntaxError, orjson.JSONDecodeError, ValueError, AttributeError):
        return ""


class PortalClient:
    """Talks to the hub as one portal.

    Args:
        base_url: the hub's address.
        signer: the portal's ModI signer.
        user: the user every request names; when None, a submit vouches for the filing's
            declarant (`demo_user`; `DEMO_OPERATOR` when it names none) and a status read
            names whoever submitted that filing through this client.
    """

    def __init__(self, base_url: str, signer: ModiSigner, *, user: User | None = None,
                 timeout: float = 10.0) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, trust_env=False)
        self.signer = signer
        self.user = user
        self._submitted_by: dict[str, User] = {}

    def _send(self, method: str, path: str, *, user: User | None, content: bytes = b"",
              headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> httpx.Response:
        headers = dict(headers or {})
        headers.update(self.signer.headers(body=content, content_type=headers.get("Content-Type"), user=user))
        return self._http.request(method, path, content=content or None, headers=headers, params=params)

    def _json(self, method: str, path: str, body: dict[str, Any] | None, user: User | None) -> httpx.Response:
        content = orjson.dumps(body) if body is not None else b""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        return self._send(method, path, user=user or self.user, content=content, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PortalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, document: bytes, *, content_type: str = "application/xml",
               idempotency_key: str | None = None, user: User | None = None) -> httpx.Response:
        headers = {"Content-Type": content_type}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        who = user or self.user
        if who is None:
            declarant = declarant_of(document, content_type)
            try:
                who = demo_user(declarant)
            except ValueError:  # unreadable document or declarant: the desk's operator files it
                who = demo_user(DEMO_OPERATOR)
        response = self._send("POST", "/v1/filings", user=who, content=document, headers=headers)
        if response.status_code == 202 and who is not None:
            self._submitted_by[response.json()["reference"]] = who
        return response

    def upload_attachment(self, path: Path, *, media_type: str, user: User, file_name: str | None = None,
                          chunk_size: int = 65_536) -> httpx.Response:
        """`POST /v1/attachments`: hash the file in one pass, then stream it (never read whole)."""
        digest = hashlib.sha256()
        with path.open("rb") as source:
            for chunk in iter(lambda: source.read(chunk_size), b""):
                digest.update(chunk)
        headers = {"Content-Type": media_type}
        if file_name is not None:
            headers["Content-Disposition"] = f'attachment; filename="{file_name}"'
        headers.update(self.signer.headers(content_type=media_type, user=user,
                                           digest=body_digest_of_hash(digest.digest())))

        def stream() -> Iterator[bytes]:
            with path.open("rb") as source:
                yield from iter(lambda: source.read(chunk_size), b"")

        return self._http.post("/v1/attachments", content=stream(), headers=headers)

    def attachment(self, attachment_id: str, *, user: User) -> httpx.Response:
        """`GET /v1/attachments/{attachmentId}`: one of the user's uploads."""
        return self._send("GET", f"/v1/attachments/{attachment_id}", user=user)

    def status(self, reference: str, *, user: User | None = None) -> httpx.Response:
        who = user or self.user or self._submitted_by.get(reference)
        return self._send("GET", f"/v1/filings/{reference}", user=who)

    def receipt(self, reference: str, *, user: User | None = None) -> httpx.Response:
        """The settled filing's PDF receipt (409 problem while agencies are still answering)."""
        who = user or self.user or self._submitted_by.get(reference)
        return self._send("GET", f"/v1/filings/{reference}/receipt.pdf", user=who)
    # -- the desk: search and archive (api/desk.py) ----------------------------------------------
    def search(self, params: dict[str, str] | None = None, *, user: User | None = None) -> httpx.Response:
        """`GET /v1/filings`: the user's filings, newest first (`nextCursor` for the next page)."""
        return self._send("GET", "/v1/filings", user=user or self.user, params=dict(params or {}))

    def archive(self, reference: str, *, user: User | None = None) -> httpx.Response:
        """Archive a settled filing: it leaves the default search list."""
        who = user or self.user or self._submitted_by.get(reference)
        return self._send("POST", f"/v1/filings/{reference}/archive", user=who)

    def unarchive(self, reference: str, *, user: User | None = None) -> httpx.Response:
        who = user or self.user or self._submitted_by.get(reference)
        return self._send("POST", f"/v1/filings/{reference}/unarchive", user=who)

    # -- one recipient, events, agencies ----------------------------------------------------------
    def resend(self, reference: str, agency: str, *, corrected: bytes | None = None,
               content_type: str = "application/xml", user: User | None = None) -> httpx.Response:
        """Resend one recipient (same message); with `corrected`, a corrected filing: the
        recipient's refused message is replaced by one mapped from it (a new message id)."""
        who = user or self.user or self._submitted_by.get(reference)
        headers = {"Content-Type": content_type} if corrected else {}
        return self._send("POST", f"/v1/filings/{reference}/recipients/{agency}/resend", user=who,
                          content=corrected or b"", headers=headers)

    def events(self, reference: str, *, after: int = 0, user: User | None = None) -> httpx.Response:
        """The filing's event feed (the same events its portal callback receives)."""
        who = user or self.user or self._submitted_by.get(reference)
        return self._send("GET", f"/v1/filings/{reference}/events", user=who, params={"after": str(after)})

    def agencies(self, *, user: User | None = None) -> httpx.Response:
        """Each agency's circuit breaker."""
        return self._send("GET", "/v1/agencies", user=user or self.user or demo_user(DEMO_OPERATOR))

    def agency_health(self, *, user: User | None = None) -> httpx.Response:
        """Each agency's state for the portal's users (up, degraded, down, maintenance)."""
        return self._send("GET", "/v1/agencies/health", user=user or self.user or demo_user(DEMO_OPERATOR))

    # -- delegations --------------------------------------------------------------------------
    def grant_delegation(self, *, subject: str, delegate: str, agencies: list[str], valid_to: str,
                         valid_from: str | None = None, user: User | None = None) -> httpx.Response:
        body: dict[str, Any] = {"subject": subject, "delegate": delegate, "agencies": agencies, "validTo": valid_to}
        if valid_from:
            body["validFrom"] = valid_from
        return self._json("POST", "/v1/delegations", body, user)

    def subdelegate(self, delegation_id: str, *, collaborator: str, agencies: list[str] | None = None,
                    valid_from: str | None = None, valid_to: str | None = None,
                    user: User | None = None) -> httpx.Response:
        body: dict[str, Any] = {"collaborator": collaborator}
        for key, value in (("agencies", agencies), ("validFrom", valid_from), ("validTo", valid_to)):
            if value is not None:
                body[key] = value
        return self._json("POST", f"/v1/delegations/{delegation_id}/subdelegations", body, user)

    def revoke_delegation(self, delegation_id: str, *, user: User | None = None) -> httpx.Response:
        return self._json("POST", f"/v1/delegations/{delegation_id}/revoke", None, user)

    def delegations(self, subject: str, *, user: User | None = None) -> httpx.Response:
        return self._send("GET", "/v1/delegations", user=user or self.user, params={"subject": subject})

    # -- drafts -------------------------------------------------------------------------------
    def create_draft(self, document: bytes, *, content_type: str = "application/xml",
                     user: User | None = None) -> httpx.Response:
        """Save a (possibly incomplete) filing as a draft; its open points come back as warnings."""
        return self._send("POST", "/v1/drafts", user=user or self.user, content=document,
                          headers={"Content-Type": content_type})

    def update_draft(self, draft_id: str, document: bytes, *, content_type: str = "application/xml",
                     if_match: str | None = None, user: User | None = None) -> httpx.Response:
        headers = {"Content-Type": content_type}
        if if_match is not None:
            headers["If-Match"] = if_match
        return self._send("PUT", f"/v1/drafts/{draft_id}", user=user or self.user, content=document,
                          headers=headers)

    def draft(self, draft_id: str, *, accept: str = "application/json", user: User | None = None) -> httpx.Response:
        return self._send("GET", f"/v1/drafts/{draft_id}", user=user or self.user, headers={"Accept": accept})

    def drafts(self, *, cursor: str | None = None, limit: int | None = None,
               user: User | None = None) -> httpx.Response:
        params = {k: str(v) for k, v in (("cursor", cursor), ("limit", limit)) if v is not None}
        return self._send("GET", "/v1/drafts", user=user or self.user, params=params or None)

    def delete_draft(self, draft_id: str, *, user: User | None = None) -> httpx.Response:
        return self._send("DELETE", f"/v1/drafts/{draft_id}", user=user or self.user)

    def check_draft(self, draft_id: str, *, user: User | None = None) -> httpx.Response:
        return self._send("POST", f"/v1/drafts/{draft_id}/check", user=user or self.user)

    def submit_draft(self, draft_id: str, *, idempotency_key: str | None = None,
                     user: User | None = None) -> httpx.Response:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._send("POST", f"/v1/drafts/{draft_id}/submit", user=user or self.user, headers=headers)

    def wait_settled(self, references: list[str], *, timeout: float = 60.0, interval: float = 0.1) -> dict[str, Any]:
        """Poll until every filing is in a final state (or `timeout`); returns the last views."""
        deadline = time.monotonic() + timeout
        views: dict[str, Any] = {}
        pending = list(references)
        while pending:
            for reference in list(pending):
                view = self.status(reference).json()
                views[reference] = view
                if view.get("state") in TERMINAL_FILING_STATES:
                    pending.remove(reference)
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(interval)
        return views
