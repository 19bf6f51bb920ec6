"""The portal API's OpenAPI 3.1 document, assembled from the YAML fragments beside this module,
and the routes that serve it: `/openapi.json`, `/openapi.yaml` and `/docs` (Swagger UI).

Each fragment (`*.yaml` here) holds `paths` and optionally `components`; `common.yaml` also the
document's head (info, servers, tags, the problem types). Components are merged by name, and
a name defined twice with different content is an error: two areas cannot silently disagree.
The JSON Schema of a filing's JSON form (`schemas/filing/v1/filing.schema.json`) becomes
`#/components/schemas/Filing`, its `$defs` beside it; the filing examples of
`schemas/filing/v1/examples` become `components/examples`, in XML and in JSON.

The document is built on its first request (YAML parsing and the JSON examples cost a few
hundred milliseconds that no filing should wait for) and kept.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api.problems import PROBLEM_TYPE_BASE

__all__ = ["FRAGMENTS", "OpenApiDocument", "OpenApiError", "build_document", "openapi_routes"]

#: Where the fragments live (shipped as package data).
FRAGMENTS = Path(__file__).resolve().parent
_ROOT = FRAGMENTS.parents[1]
#: The filing's JSON Schema and examples (another area owns them; they may be absent).
FILING_SCHEMA = _ROOT / "schemas" / "filing" / "v1" / "filing.schema.json"
FILING_EXAMPLES = _ROOT / "schemas" / "filing" / "v1" / "examples"
_COMPONENT_KINDS = ("schemas", "parameters", "responses", "examples", "headers", "securitySchemes",
                    "requestBodies")
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
#: A filing example's media type marker in a fragment: replaced by the examples themselves.
_EXAMPLES_MARK = "x-filing-examples"

#: Turns an XML filing into its JSON form (`FilingValidator.xml_to_json`), for the JSON examples.
JsonOf = Callable[[bytes], Mapping[str, Any]]


class OpenApiError(Exception):
    """The fragments do not make one document (a name defined twice, a path served twice)."""


def _merge(target: dict[str, Any], name: str, value: Any, where: str) -> None:
    if name in target and target[name] != value:
        raise OpenApiError(f"{where}: {name!r} is defined twice with different content")
    target[name] = value


def _merge_path_item(paths: dict[str, Any], route: str, item: Mapping[str, Any], where: str) -> None:
    """A path item that several fragments share (`GET /v1/filings` is the desk's search, `POST`
    the intake's): merged per key, each operation defined once."""
    target = paths.setdefault(route, {})
    for key, value in item.items():
        _merge(target, key, value, f"{where} {route}")


def _load(path: Path) -> dict[str, Any]:
    import yaml  # only the document's builder reads YAML

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise OpenApiError(f"{path.name}: a fragment is a mapping")
    return data


def _rewrite_refs(node: Any) -> Any:
    """`#/$defs/X` of the filing schema → `#/components/schemas/X`."""
    if isinstance(node, dict):
        out = {k: _rewrite_refs(v) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out["$ref"] = "#/components/schemas/" + ref[len("#/$defs/"):]
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def _filing_schemas(path: Path) -> dict[str, Any]:
    """`Filing` and its `$defs`, from the JSON Schema file (a placeholder when it is missing)."""
    if not path.exists():
        return {"Filing": {"type": "object", "description": "A filing in its JSON form."}}
    schema = orjson.loads(path.read_bytes())
    defs = schema.pop("$defs", {})
    # `$id` would rebase the rewritten references onto the schema's own URI.
    for key in ("$id", "$schema"):
        schema.pop(key, None)
    out = {"Filing": _rewrite_refs(schema)}
    for name, definition in defs.items():
        out[name] = _rewrite_refs(definition)
    return out


def _filing_examples(folder: Path, json_of: JsonOf | None) -> tuple[dict[str, Any], list[str], list[str]]:
    """components/examples of every filing example, and the names of the XML and JSON ones."""
    examples: dict[str, Any] = {}
    xml_names: list[str] = []
    json_names: list[str] = []
    for path in sorted(folder.glob("*.xml")) if folder.exists() else []:
        stem = path.stem
        xml = path.read_text(encoding="utf-8")
        examples[f"filing_{stem}_xml"] = {"summary": f"{stem} (XML)", "value": xml}
        xml_names.append(f"filing_{stem}_xml")
        given = path.with_suffix(".json")
        value: Any = None
        if given.exists():
            value = orjson.loads(given.read_bytes())
        elif json_of is not None:
            value = dict(json_of(path.read_bytes()))
        if value is not None:
            examples[f"filing_{stem}_json"] = {"summary": f"{stem} (JSON)", "value": value}
            json_names.append(f"filing_{stem}_json")
    return examples, xml_names, json_names


def _problem_table(types: Mapping[str, Any]) -> str:
    lines = ["", "## Problem types", "", "| type | status | meaning |", "|---|---|---|"]
    for slug, info in types.items():
        statuses = ", ".join(str(s) for s in info.get("status", []))
        lines.append(f"| `{PROBLEM_TYPE_BASE}{slug}` | {statuses} | {info.get('description', '')} |")
    return "\n".join(lines) + "\n"


def _operations(paths: Mapping[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for path, item in paths.items():
        for method in _METHODS:
            if method in item:
                yield path, method, item[method]


def _finish_operation(op: dict[str, Any], modi: Mapping[str, list[str]], xml_names: list[str],
                      json_names: list[str]) -> None:
    """Expand the `modi` requirement into its schemes, and the filing examples markers."""
    body = op.get("requestBody")
    security = op.get("security")
    if security:
        expanded = []
        for requirement in security:
            if "modi" in requirement:
                names = list(modi.get("always", ["modi"]))
                if body is not None:
                    names += list(modi.get("withBody", []))
                requirement = {name: [] for name in names}
            expanded.append(requirement)
        op["security"] = expanded
    for media in (body or {}).get("content", {}).values():
        mark = media.pop(_EXAMPLES_MARK, None)
        names = xml_names if mark == "xml" else json_names if mark == "json" else []
        if names:
            media["examples"] = {n: {"$ref": f"#/components/examples/{n}"} for n in names}


def build_document(*, folder: Path = FRAGMENTS, filing_schema: Path = FILING_SCHEMA,
                   filing_examples: Path = FILING_EXAMPLES, json_of: JsonOf | None = None) -> dict[str, Any]:
    """The whole document from the fragments in `folder` (`common.yaml` first).

    Raises:
        OpenApiError: a component or path defined twice with different content.
    """
    document = _load(folder / "common.yaml")
    document.setdefault("paths", {})
    components = document.setdefault("components", {})
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "common.yaml":
            continue
        fragment = _load(path)
        for route, item in (fragment.get("paths") or {}).items():
            _merge_path_item(document["paths"], route, item, path.name)
        for kind, named in (fragment.get("components") or {}).items():
            if kind not in _COMPONENT_KINDS:
                raise OpenApiError(f"{path.name}: unknown component kind {kind!r}")
            for name, value in (named or {}).items():
                _merge(components.setdefault(kind, {}), name, value, f"{path.name} components.{kind}")
    for name, value in _filing_schemas(filing_schema).items():
        _merge(components.setdefault("schemas", {}), name, value, filing_schema.name)
    examples, xml_names, json_names = _filing_examples(filing_examples, json_of)
    for name, value in examples.items():
        _merge(components.setdefault("examples", {}), name, value, "filing examples")
    modi = document.pop("x-modi-requirement", {})
    for _, _, op in _operations(document["paths"]):
        _finish_operation(op, modi, xml_names, json_names)
    document["info"]["description"] += _problem_table(document.get("x-problem-types", {}))
    document["paths"] = dict(sorted(document["paths"].items()))
    return document


class OpenApiDocument:
    """The document, built once on first use (thread-safe) and kept as JSON and YAML bytes."""

    def __init__(self, json_of: JsonOf | None = None, **options: Any) -> None:
        self._json_of = json_of
        self._options = options
        self._lock = threading.Lock()
        self._document: dict[str, Any] | None = None
        self._json: bytes | None = None
        self._yaml: bytes | None = None

    def document(self) -> dict[str, Any]:
        """A copy of the document (blocking on first use)."""
        return copy.deepcopy(self._built())

    def _built(self) -> dict[str, Any]:
        with self._lock:
            if self._document is None:
                self._document = build_document(json_of=self._json_of, **self._options)
            return self._document

    def as_json(self) -> bytes:
        if self._json is None:
            self._json = orjson.dumps(self._built(), option=orjson.OPT_INDENT_2)
        return self._json

    def as_yaml(self) -> bytes:
        if self._yaml is None:
            import yaml

            self._yaml = yaml.safe_dump(self._built(), sort_keys=False, allow_unicode=True).encode()
        return self._yaml


_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Crocevia portal API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""

#: Swagger UI's start, served as a file so the page needs no inline script.
_DOCS_INIT = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
                               validatorUrl: null, tryItOutEnabled: false});
});
"""


def _swagger_ui_dir() -> Path:
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]  # ships no types

    return Path(str(swagger_ui_path))


def openapi_routes(json_of: JsonOf | None = None) -> list[BaseRoute]:
    """`GET /openapi.json`, `/openapi.yaml`, `/docs` and its assets: unauthenticated, GET only."""
    source = OpenApiDocument(json_of)

    async def as_json(_: Request) -> Response:
        return Response(await run_in_threadpool(source.as_json), media_type="application/json")

    async def as_yaml(_: Request) -> Response:
        return Response(await run_in_threadpool(source.as_yaml), media_type="application/yaml")

    async def docs(_: Request) -> Response:
        return HTMLResponse(_DOCS_PAGE)

    async def docs_init(_: Request) -> Response:
        return Response(_DOCS_INIT, media_type="text/javascript")

    return [
        Route("/openapi.json", as_json, methods=["GET"]),
        Route("/openapi.yaml", as_yaml, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/init.js", docs_init, methods=["GET"]),
        Mount("/docs/assets", app=StaticFiles(directory=_swagger_ui_dir()), name="docs-assets"),
    ]
