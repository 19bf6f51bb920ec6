"""The portal API described (issue 14, item 1): the OpenAPI 3.1 document the hub serves, its
consistency with the routes and the problem types the code answers, the /docs page, and
schemathesis against the live hub with ModI-signed requests.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Mount, Route

from api.openapi import OpenApiError, build_document
from api.problems import PROBLEM_TYPE_BASE
from cli.client import PortalClient, declarant_of, demo_user
from config.settings import PROJECT_ROOT
from domain.identity import User
from security.modi import ModiSigner
from tests.browser import browser  # noqa: F401 - fixture
from tests.support import TEST_PORTAL_KEY, RunningHub, hub_settings, wait_for

#: A valid tax code at SPID level 2: the legal representative of the examples' business.
USER = demo_user("FTTMRC85C14H501X", "SPID2")
_METHODS = {"get", "put", "post", "delete", "patch"}
EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"


@pytest.fixture
def hub(database_url: str, sims) -> Iterator[RunningHub]:  # type: ignore[no-untyped-def]
    endpoints = {agency: sims.soap_endpoint(agency) for agency in sims.urls}
    with RunningHub(hub_settings(database_url, endpoints)) as running:
        yield running


@pytest.fixture(scope="module")
def sqlite_hub(simulators, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:  # type: ignore[no-untyped-def]
    """One hub on SQLite for the read-only checks of the document (no state between tests)."""
    endpoints = {agency: simulators.soap_endpoint(agency) for agency in simulators.urls}
    url = f"sqlite:///{tmp_path_factory.mktemp('openapi') / 'crocevia.db'}"
    with RunningHub(hub_settings(url, endpoints)) as running:
        yield running


def _document(hub: RunningHub) -> dict[str, Any]:
    response = httpx.get(hub.base_url + "/openapi.json", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def test_the_document_is_valid_openapi_31_in_json_and_yaml(sqlite_hub: RunningHub) -> None:
    """/openapi.json validates as OpenAPI 3.1, and /openapi.yaml is the same document."""
    document = _document(sqlite_hub)
    assert document["openapi"].startswith("3.1")
    validate(document)
    as_yaml = httpx.get(sqlite_hub.base_url + "/openapi.yaml", timeout=30)
    assert as_yaml.status_code == 200
    assert yaml.safe_load(as_yaml.text) == document


def test_the_document_is_public_and_read_only(sqlite_hub: RunningHub) -> None:
    """No signature is needed to read it; it cannot be posted to."""
    for path in ("/openapi.json", "/openapi.yaml", "/docs"):
        assert httpx.get(sqlite_hub.base_url + path, timeout=30).status_code == 200
        refused = httpx.post(sqlite_hub.base_url + path, content=b"{}", timeout=30)
        assert refused.status_code == 405
        assert refused.headers["content-type"] == "application/problem+json"


def _served_routes(hub: RunningHub) -> set[tuple[str, str]]:
    """(path, method) of every route of the app the hub serves under /v1, but /v1/ops."""
    from bootstrap import build_api
    from service.metrics import HubMetrics

    async def ready() -> dict[str, str]:
        return {}

    app = build_api(hub.hub, readers={}, on_accepted=lambda: None, ready=ready, metrics=HubMetrics())
    served: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, Mount) or not isinstance(route, Route):
            continue  # /v1/ops, the console and the docs' assets
        if route.path.startswith("/v1/") and not route.path.startswith("/v1/ops"):
            served |= {(route.path, m.lower()) for m in route.methods or () if m != "HEAD"}
    return served


def test_every_route_under_v1_is_documented_and_every_documented_one_is_served(sqlite_hub: RunningHub) -> None:
    """Routes and document agree path by path and method by method (/v1/ops aside)."""
    document = _document(sqlite_hub)
    documented = {(path, method) for path, item in document["paths"].items() for method in item
                  if method in _METHODS and path.startswith("/v1/")}
    served = _served_routes(sqlite_hub)
    assert served, "no route found"
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"
    assert not any(path.startswith("/v1/ops") for path, _ in documented)


def test_every_portal_operation_carries_the_modi_schemes_and_every_answer_code(sqlite_hub: RunningHub) -> None:
    """Portal operations name the three ModI schemes (signature only with a body) and 401."""
    document = _document(sqlite_hub)
    schemes = document["components"]["securitySchemes"]
    assert schemes["modiTrackingEvidence"] == {**schemes["modiTrackingEvidence"], "type": "apiKey",
                                               "in": "header", "name": "Agid-JWT-TrackingEvidence"}
    assert schemes["modiSignature"]["name"] == "Agid-JWT-Signature"
    assert schemes["modi"]["scheme"] == "bearer"
    for path, item in document["paths"].items():
        if not path.startswith("/v1/") or path.startswith("/v1/callbacks"):
            continue
        for method, op in item.items():
            requirement = op["security"][0]
            expected = {"modi", "modiTrackingEvidence"} | ({"modiSignature"} if "requestBody" in op else set())
            assert set(requirement) == expected, (path, method)
            assert {"401", "429", "503"} <= set(op["responses"]), (path, method)
            assert op["responses"], (path, method)


def test_each_filing_kind_has_an_xml_and_a_json_example(sqlite_hub: RunningHub) -> None:
    """Every example filing is in the document in both forms, and the submission refers to them."""
    document = _document(sqlite_hub)
    examples = document["components"]["examples"]
    folder = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"
    stems = sorted(p.stem for p in folder.glob("*.xml"))
    assert len(stems) >= 4
    body = document["paths"]["/v1/filings"]["post"]["requestBody"]["content"]
    for stem in stems:
        assert examples[f"filing_{stem}_xml"]["value"].startswith("<?xml")
        assert isinstance(examples[f"filing_{stem}_json"]["value"]["subject"], dict)
        assert f"filing_{stem}_xml" in body["application/xml"]["examples"]
        assert f"filing_{stem}_json" in body["application/json"]["examples"]


# -- problem types ------------------------------------------------------------------------------
#: Where the code names a problem type: problem_response's slug, and the refusals whose slug
#: becomes one (ModI, callbacks, delegations, operators, the intake's refusal classes).
_SLUG_PATTERNS = [
    re.compile(r'problem_response\(\s*[^,()]+,\s*"([a-z0-9-]+)"', re.S),
    re.compile(r'\b(?:ModiRefused|CallbackRefused|_signed|_unauthorized)\(\s*"([a-z0-9-]+)"'),
    re.compile(r'\b(?:AuthRefused|DelegationRefused|DraftRefused|_BadRequest)\(\s*\d{3},\s*"([a-z0-9-]+)"'),
    # The ModI claim checks name their types per token, in a table.
    re.compile(r'"([a-z-]+-claim-(?:missing|invalid))"'),
    # The operators' guard's refusals carry a title; the ops search's name a parameter instead.
    re.compile(r'\b_Refused\(\s*\d{3},\s*"([a-z0-9-]+)",\s*"[A-Z]'),
    re.compile(r'\bOperatorError\(\s*"([a-z0-9-]+)"'),
    re.compile(r'\bslug\s*=\s*"([a-z0-9-]+)"'),
    re.compile(r'^\s+problem(?::\s*str)?\s*=\s*"([a-z0-9-]+)"', re.M),
    re.compile(r'problem="([a-z0-9-]+)"'),
    re.compile(r'_refuse\([^)]*?\d{3},\s*"([a-z0-9-]+)"', re.S),
]
#: Session refusals are returned as plain strings by the operator accounts.
_SESSION_SLUGS = re.compile(r'"(session-[a-z-]+)"')


def _slugs_in_code() -> set[str]:
    found: set[str] = set()
    files = [*(PROJECT_ROOT / "api").rglob("*.py"), PROJECT_ROOT / "domain" / "intake.py",
             PROJECT_ROOT / "service" / "identity.py", PROJECT_ROOT / "service" / "operators.py",
             PROJECT_ROOT / "service" / "drafts.py", PROJECT_ROOT / "service" / "attachments.py"]
    for path in files:
        text = path.read_text(encoding="utf-8")
        for pattern in _SLUG_PATTERNS:
            found |= set(pattern.findall(text))
        if path.name == "operators.py":
            found |= {s for s in _SESSION_SLUGS.findall(text) if s != "session-unknown"}
    # Starlette's own refusals (`http-{status}`): unknown route and method.
    return found | {"http-404", "http-405"}


def test_every_problem_type_the_code_answers_is_described(sqlite_hub: RunningHub) -> None:
    """Each slug used with problem_response (directly or through a refusal) has a description."""
    document = _document(sqlite_hub)
    described = document["x-problem-types"]
    used = _slugs_in_code()
    # The patterns do find what they should: a few slugs of each kind of source.
    assert {"schema-violation", "token-expired", "invalid-delegation", "store-unavailable",
            "delivery-not-acknowledged-yet", "weak-password", "session-idle", "tracking-evidence-claim-missing",
            "draft-expired", "attachment-too-large", "attachment-invalid", "filing-not-settled"} <= used
    missing = sorted(used - set(described))
    assert missing == [], f"problem types used by the code but not described: {missing}"
    # Each refusal an operation lists is one of them (no slug misspelt in a response's text).
    for path, item in document["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    listed = set(re.findall(r"`([a-z0-9]+(?:-[a-z0-9]+)+)`", response.get("description", "")))
                    assert listed <= set(described), (path, method, status, listed - set(described))
    for slug, info in described.items():
        assert info["description"].strip() and info["status"], slug
        assert f"`{PROBLEM_TYPE_BASE}{slug}`" in document["info"]["description"]


# -- the fragments' contract ----------------------------------------------------------------
def _fragment(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text, encoding="utf-8")


def test_a_component_defined_twice_with_different_content_stops_the_build(tmp_path: Path) -> None:
    """Two fragments may share a name only when they agree on its content."""
    common = (Path(__file__).resolve().parents[2] / "api" / "openapi" / "common.yaml").read_text()
    _fragment(tmp_path, "common.yaml", common)
    _fragment(tmp_path, "a.yaml", "paths: {}\ncomponents:\n  schemas:\n    Thing: {type: string}\n")
    _fragment(tmp_path, "b.yaml", "paths: {}\ncomponents:\n  schemas:\n    Thing: {type: string}\n")
    assert build_document(folder=tmp_path)["components"]["schemas"]["Thing"] == {"type": "string"}
    _fragment(tmp_path, "b.yaml", "paths: {}\ncomponents:\n  schemas:\n    Thing: {type: integer}\n")
    with pytest.raises(OpenApiError, match="Thing"):
        build_document(folder=tmp_path)


def test_the_filing_schema_definitions_become_components(tmp_path: Path) -> None:
    """`#/$defs/X` of the filing's JSON Schema is rewritten to `#/components/schemas/X`."""
    schema = tmp_path / "filing.schema.json"
    schema.write_text('{"$id": "urn:x", "type": "object", "properties": {"subject": {"$ref": "#/$defs/Subject"}},'
                      ' "$defs": {"Subject": {"type": "object", "properties": {"o": {"$ref": "#/$defs/Office"}}},'
                      ' "Office": {"type": "object"}}}')
    document = build_document(filing_schema=schema)
    schemas = document["components"]["schemas"]
    assert schemas["Filing"]["properties"]["subject"] == {"$ref": "#/components/schemas/Subject"}
    assert schemas["Subject"]["properties"]["o"] == {"$ref": "#/components/schemas/Office"}
    assert "$id" not in schemas["Filing"]
    validate(document)


# -- /docs ------------------------------------------------------------------------------------
class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_the_docs_page_loads_only_assets_the_hub_serves(sqlite_hub: RunningHub) -> None:
    """Every script and stylesheet of /docs is a local path the hub answers; none is a CDN's."""
    page = httpx.get(sqlite_hub.base_url + "/docs", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    links = _Links()
    links.feed(page.text)
    assert any(u.endswith("swagger-ui-bundle.js") for u in links.urls)
    assert any(u.endswith("swagger-ui.css") for u in links.urls)
    assert "http://" not in page.text and "https://" not in page.text and "//" not in "".join(
        u[:2] for u in links.urls)
    for url in links.urls:
        assert url.startswith("/"), url
        asset = httpx.get(sqlite_hub.base_url + url, timeout=30)
        assert asset.status_code == 200 and len(asset.content) > 100 or url.endswith("init.js"), url
    init = httpx.get(sqlite_hub.base_url + "/docs/init.js", timeout=30)
    assert '"/openapi.json"' in init.text


# -- schemathesis against the live hub --------------------------------------------------------
class SigningSession(requests.Session):
    """A requests session that ModI-signs every request as the test portal, for `USER`, just
    before it leaves: the signature covers the exact bytes schemathesis generated."""

    def __init__(self, signer: ModiSigner, user: User = USER) -> None:
        super().__init__()
        self.signer = signer
        self.user = user

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        for name in ("Agid-JWT-Signature", "Agid-JWT-TrackingEvidence", "Digest", "Authorization"):
            request.headers.pop(name, None)
        if request.path_url.startswith("/v1/"):
            request.headers.update(self.signer.headers(body=body, content_type=request.headers.get("Content-Type"),
                                                       user=self.user))
        return super().send(request, **kwargs)


@schemathesis.serializer("application/xml", "text/xml", "application/soap+xml")
def _xml_as_written(ctx: Any, value: Any) -> bytes:
    """XML bodies are documents, sent as written (schemathesis would wrap a string in an element)."""
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
           response_headers_conformance]


def _response_text(document: dict[str, Any], operation: Any, status: int) -> str:
    """What the document says of `status` at `operation`: the reference's own description, else
    the shared response's (each lists the problem types it carries)."""
    response = document["paths"][operation.path][operation.method.lower()]["responses"].get(str(status), {})
    if "description" in response:
        return str(response["description"])
    ref = str(response.get("$ref", ""))
    shared = document["components"]["responses"].get(ref.rsplit("/", 1)[-1], {})
    return str(shared.get("description", ""))


#: For a longer hunt by hand: CROCEVIA_SCHEMATHESIS_SCALE=8 multiplies the examples, and
#: CROCEVIA_SCHEMATHESIS_EXPLORE=1 draws new ones each run (CI keeps the seeded, bounded run).
_SCALE = int(os.environ.get("CROCEVIA_SCHEMATHESIS_SCALE", "1"))
_EXPLORE = bool(os.environ.get("CROCEVIA_SCHEMATHESIS_EXPLORE"))


#: A path parameter → a function that makes a real resource of that kind and returns its id.
RealIds = dict[str, Callable[[], str]]


def _strategies(operation: Any, real: RealIds) -> list[tuple[str, int, Any]]:
    """Positive and negative cases, plus (where the path names a filing, a draft or an
    attachment) cases about a real one, made afresh for each operation (a delete or a submit
    of one operation leaves the next one's intact)."""
    out = [("positive", 12, operation.as_strategy(GenerationMode.POSITIVE)),
           ("negative", 8, operation.as_strategy(GenerationMode.NEGATIVE))]
    for name, make in real.items():
        if "{" + name + "}" in operation.path:
            out.append((f"real {name}", 5, operation.as_strategy(GenerationMode.POSITIVE,
                                                                 path_parameters={name: make()})))
    return out


def _real_ids(hub: RunningHub, client: PortalClient, reference: str, folder: Path) -> RealIds:
    """Makers of a real filing (the one submitted), draft (a complete filing saved) and attachment."""
    document = (EXAMPLES / "business_start.xml").read_bytes()
    upload = folder / "statuto.pdf"
    upload.write_bytes(b"%PDF-1.7\n% a statute for the schemathesis run\n%%EOF\n")

    def draft() -> str:
        saved = client.create_draft(document, user=USER)
        assert saved.status_code == 201, saved.text
        return str(saved.json()["draftId"])

    def attachment() -> str:
        stored = client.upload_attachment(upload, media_type="application/pdf", user=USER, file_name="statuto.pdf")
        assert stored.status_code == 201, stored.text
        return str(stored.json()["attachmentId"])

    return {"reference": lambda: reference, "draftId": draft, "attachmentId": attachment}


def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(hub: RunningHub,
                                                                            tmp_path: Path) -> None:
    """Generated requests (positive, negative, and about a real filing; seeded), each ModI-signed:
    no 5xx, every problem type described, and every answer's status, content type, headers and
    body are the document's."""
    client = PortalClient(hub.base_url, TEST_PORTAL_KEY, user=USER)
    accepted = client.submit((EXAMPLES / "business_start.xml").read_bytes())
    assert accepted.status_code == 202, accepted.text
    real = _real_ids(hub, client, accepted.json()["reference"], tmp_path)
    schema = schemathesis.openapi.from_url(hub.base_url + "/openapi.json")
    # Agencies' callbacks carry the agency's credential, which no portal has: they are still
    # generated, and their refusals checked against the document like every other answer.
    session = SigningSession(TEST_PORTAL_KEY)
    failures: list[str] = []
    seen: dict[str, set[int]] = {}
    problem_types: set[str] = set()
    described = set(schema.raw_schema["x-problem-types"])
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, examples, strategy in _strategies(operation, real):

            @given(case=strategy)
            @settings(max_examples=examples * _SCALE, derandomize=not _EXPLORE, database=None, deadline=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            def run(case: schemathesis.Case) -> None:
                response = case.call(base_url=hub.base_url, session=session, timeout=30)
                seen.setdefault(operation.label, set()).add(response.status_code)
                if (response.headers.get("content-type") or [""])[0].startswith("application/problem+json"):
                    slug = str(response.json().get("type", ""))[len(PROBLEM_TYPE_BASE):]
                    problem_types.add(slug)
                    assert slug in described, f"undocumented problem type {slug}"
                    listed = _response_text(schema.raw_schema, operation, response.status_code)
                    assert f"`{slug}`" in listed, f"{slug} not listed for {response.status_code}: {listed}"
                case.validate_response(response, checks=_CHECKS, transport_kwargs={"base_url": hub.base_url})

            try:
                run()
            except Unsatisfiable:
                assert mode == "negative", operation.label  # nothing to get wrong: no parameter, no body
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - all operations reported together
                # A group (several failures, or hypothesis's flaky report) is told by its members.
                parts = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
                # hypothesis wraps a BaseException (schemathesis's failure group) in one of its own.
                parts = tuple(e.__cause__ if type(e).__name__ == "_WrappedBaseException" and e.__cause__ else e
                              for e in parts)
                told = "; ".join(f"{type(e).__name__}: {str(e)[:2500]}" for e in parts)
                failures.append(f"{operation.label} ({mode}): {type(exc).__name__}: {told}")
    client.close()
    assert failures == [], "\n\n".join(failures)
    # The signed requests got past the signature checks: filings were refused for their content,
    # and the real filing was read.
    assert problem_types & {"schema-violation", "malformed-json", "malformed-xml"}, problem_types
    assert 201 in seen["POST /v1/delegations"], seen  # the documented example grants one
    assert 200 in seen["GET /v1/filings/{reference}"], seen
    assert 200 in seen["GET /v1/filings/{reference}/events"], seen
    # The desk's areas were reached with real resources, not only refused.
    assert 201 in seen["POST /v1/drafts"] and 200 in seen["GET /v1/drafts/{draftId}"], seen
    assert 200 in seen["POST /v1/drafts/{draftId}/check"] and 202 in seen["POST /v1/drafts/{draftId}/submit"], seen
    assert 200 in seen["GET /v1/filings"] and 200 in seen["POST /v1/filings/{reference}/unarchive"], seen
    assert 200 in seen["GET /v1/attachments/{attachmentId}"], seen


def test_an_event_sequence_beyond_the_store_is_refused_as_a_bad_request(hub: RunningHub) -> None:
    """`after` past the store's integers was a 503 on PostgreSQL (found by schemathesis): now 400."""
    with PortalClient(hub.base_url, TEST_PORTAL_KEY, user=USER) as client:
        reference = client.submit((EXAMPLES / "business_start.xml").read_bytes()).json()["reference"]
        for after in ("3512975233319754", "-1", "1e3"):
            refused = client._send("GET", f"/v1/filings/{reference}/events", user=USER, params={"after": after})
            assert refused.status_code == 400, refused.text
            assert refused.json()["type"] == PROBLEM_TYPE_BASE + "invalid-request"
        fine = client._send("GET", f"/v1/filings/{reference}/events", user=USER, params={"after": "2147483647"})
        assert fine.status_code == 200 and fine.json()["events"] == []


def test_an_identifier_no_resource_has_is_not_found_on_either_store(hub: RunningHub) -> None:
    """A path identifier longer than any the hub hands out, or with a control character, names
    nothing: 404 `not-found` at every operation that reads one, never a 503 because the store
    (PostgreSQL) refused to look it up or to audit it."""
    odd = ["A" * 300, "CRV-2026-000001%00", "x%01y"]
    paths = ["/v1/filings/{}", "/v1/filings/{}/events", "/v1/filings/{}/receipt.pdf", "/v1/drafts/{}",
             "/v1/attachments/{}"]
    with PortalClient(hub.base_url, TEST_PORTAL_KEY, user=USER) as client:
        for template in paths:
            for ident in odd:
                answer = client._send("GET", template.format(ident), user=USER)
                assert answer.status_code == 404, (template, ident, answer.text)
                assert answer.json()["type"] == PROBLEM_TYPE_BASE + "not-found"
        for template in ("/v1/filings/{}/archive", "/v1/filings/{}/unarchive", "/v1/drafts/{}/check",
                         "/v1/drafts/{}/submit"):
            for ident in odd:
                answer = client._send("POST", template.format(ident), user=USER)
                assert answer.status_code == 404, (template, ident, answer.text)
        for ident in odd:
            answer = client._send("DELETE", f"/v1/drafts/{ident}", user=USER)
            assert answer.status_code == 404, (ident, answer.text)


def test_every_filing_example_of_the_document_is_accepted_as_documented(sqlite_hub: RunningHub) -> None:
    """Each filing example the document shows (XML and JSON, every kind), sent as it stands by its
    declarant, is accepted: 202, with an answer that conforms to the document."""
    schema = schemathesis.openapi.from_url(sqlite_hub.base_url + "/openapi.json")
    operation = schema["/v1/filings"]["POST"]
    content = schema.raw_schema["paths"]["/v1/filings"]["post"]["requestBody"]["content"]
    examples = schema.raw_schema["components"]["examples"]
    # An intermediary files under the legal representative's delegation, granted first.
    with PortalClient(sqlite_hub.base_url, TEST_PORTAL_KEY) as client:
        for name, example in examples.items():
            value = example["value"]
            if not (name.startswith("filing_") and isinstance(value, dict)):
                continue
            representative = (value.get("legalRepresentative") or {}).get("taxCode")
            declarant = (value.get("declarant") or {}).get("taxCode")
            if representative and declarant and representative != declarant:
                granted = client.grant_delegation(
                    subject=value["subject"]["taxCode"], delegate=declarant,
                    agencies=["cciaa", "inps", "inail", "runts"], valid_to="2099-12-31T00:00:00+00:00",
                    user=demo_user(representative, "SPID2"))
                assert granted.status_code in (201, 422), granted.text
    sent = 0
    for media_type, media in content.items():
        for name in media["examples"]:
            value = examples[name]["value"]
            raw = value.encode() if isinstance(value, str) else orjson.dumps(value)
            session = SigningSession(TEST_PORTAL_KEY, demo_user(declarant_of(raw, media_type), "SPID2"))
            case = operation.Case(body=value, media_type=media_type)
            response = case.call(base_url=sqlite_hub.base_url, session=session, timeout=30)
            assert response.status_code == 202, (name, response.text)
            case.validate_response(response, checks=_CHECKS, transport_kwargs={"base_url": sqlite_hub.base_url})
            sent += 1
    assert sent >= 8


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _media_examples(document: dict[str, Any]) -> Iterator[tuple[str, Any, list[str]]]:
    """(where, example value, JSON pointer parts of its schema) for every JSON example."""
    for path, item in document["paths"].items():
        for method, op in item.items():
            places: list[tuple[list[str], dict[str, Any]]] = []
            for media_type, media in op.get("requestBody", {}).get("content", {}).items():
                places.append((["paths", path, method, "requestBody", "content", media_type], media))
            for status, response in op["responses"].items():
                base = ["paths", path, method, "responses", status]
                if "$ref" in response:
                    name = response["$ref"].rsplit("/", 1)[-1]
                    base, response = ["components", "responses", name], document["components"]["responses"][name]
                for media_type, media in response.get("content", {}).items():
                    places.append(([*base, "content", media_type], media))
            for where, media in places:
                if "json" not in where[-1] or "schema" not in media:
                    continue
                values = [media["example"]] if "example" in media else []
                for example in media.get("examples", {}).values():  # shared ($ref) or written in place
                    if "$ref" in example:
                        example = document["components"]["examples"][example["$ref"].rsplit("/", 1)[-1]]
                    values.append(example["value"])
                for value in values:
                    yield f"{method.upper()} {path} {where[-3] if 'responses' in where else 'body'}", value, \
                        [*where, "schema"]


def test_every_json_example_in_the_document_matches_its_schema() -> None:
    """Request and response examples (filings in JSON, problems, views) follow their own schemas,
    date-times included: the document never shows what the hub would not send or take."""
    import jsonschema

    from schemas.filing import FilingValidator

    document = build_document(json_of=FilingValidator().xml_to_json)
    checked = 0
    for where, value, schema_at in _media_examples(document):
        # The document itself is the root, so `#/components/...` references resolve.
        root = {**{k: v for k, v in document.items() if k in ("components", "paths")},
                "$ref": _pointer(*schema_at)}
        validator = jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())
        errors = [e.message for e in validator.iter_errors(value)]
        assert errors == [], (where, errors[:3])
        checked += 1
    assert checked >= 20


def test_swagger_ui_renders_every_operation_from_the_hub_alone(sqlite_hub: RunningHub, browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """In a browser, /docs shows each operation of the document (Swagger UI reads OpenAPI 3.1),
    and every resource the page loaded came from the hub."""
    from selenium.webdriver.common.by import By

    document = _document(sqlite_hub)
    operations = sum(1 for item in document["paths"].values() for m in item if m in _METHODS)
    browser.get(sqlite_hub.base_url + "/docs")
    blocks = wait_for(lambda: (found := browser.find_elements(By.CSS_SELECTOR, ".opblock"))
                      and len(found) >= operations and found, timeout=30, what="Swagger UI's operations")
    assert len(blocks) == operations
    assert "Crocevia portal API" in browser.find_element(By.CSS_SELECTOR, ".title").text
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(sqlite_hub.base_url + "/") for url in loaded), loaded
