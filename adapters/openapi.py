"""Loading a stored OpenAPI 3.0 document as declared in an agency file: operations, request and
receipt schemas, receipt mapping.

One `OpenApiContract` per declared contract version, shared by the REST adapter, the start-up
check and `hub.py contracts check`. Schema objects are validated as JSON Schema draft 4, whose
keywords OpenAPI 3.0 extends; references resolve inside the document.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
import yaml
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from adapters.base import ErrorContext
from adapters.contracts import ContractError, ContractSpec
from adapters.json_check import SchemaCheck
from adapters.receipts import JsonReceiptReader
from domain.errors import AdapterMisconfigured, MessageRejectedAsInvalid

__all__ = ["OpenApiContract", "RestOperation", "load_openapi_contract", "read_openapi"]

#: Statuses whose body is the receipt when the contract names none (201 created, 200 again).
DEFAULT_RECEIPT_STATUSES = (201, 200)
_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
#: Numeric keywords PyYAML may leave as strings (`1e+20` is not a YAML 1.1 float).
_NUMERIC_KEYWORDS = frozenset({"maximum", "minimum", "multipleOf", "exclusiveMaximum",
                               "exclusiveMinimum"})
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True, slots=True)
class RestOperation:
    """One operation of the document, with its validators."""

    name: str
    method: str
    path: str
    request: SchemaCheck | None  #: None: the operation takes no JSON body
    receipts: Mapping[int, SchemaCheck]  #: receipt statuses that carry a JSON body
    receipt_statuses: frozenset[int]
    path_parameters: tuple[str, ...]
    required_query: tuple[str, ...]


def _normalise(node: Any) -> Any:
    """Stringify response codes (`200:` is an int in YAML) and fix numeric keywords."""
    if isinstance(node, dict):
        fixed = {}
        for key, value in node.items():
            if key in _NUMERIC_KEYWORDS and isinstance(value, str) and _NUMBER.fullmatch(value):
                value = float(value)
            fixed[str(key)] = _normalise(value)
        return fixed
    if isinstance(node, list):
        return [_normalise(item) for item in node]
    return node


def read_openapi(path: Any) -> dict[str, Any]:
    """The document at `path`, parsed safely and normalised.

    Raises:
        OSError, yaml.YAMLError, ValueError: unreadable, or not an OpenAPI 3 document.
    """
    with open(path, "rb") as fh:
        document = _normalise(yaml.safe_load(fh))
    if not isinstance(document, dict) or not str(document.get("openapi", "")).startswith("3."):
        raise ValueError("not an OpenAPI 3 document (no `openapi: 3.x`)")
    return document


def _pointer(*parts: str) -> str:
    # RFC 6901: "~" then "/" are escaped inside a reference token.
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


class _NotInlinable(Exception):
    """A reference that `_inlined` leaves to the validator: a cycle, a scope change (`id`),
    a target outside the document or missing, or a schema too large to expand."""


#: Draft 4 keywords whose value is one subschema, a list of them, or a map of name → subschema;
#: any other keyword's value is data (`enum`, `default`, OpenAPI's `example`) and is kept as is.
_SCHEMA_KEYWORDS = frozenset({"additionalItems", "additionalProperties", "items", "not"})
_SCHEMA_LIST_KEYWORDS = frozenset({"allOf", "anyOf", "oneOf"})
_SCHEMA_MAP_KEYWORDS = frozenset({"properties", "patternProperties", "definitions", "dependencies"})
#: Nodes an inlined schema may have; a larger expansion keeps its references.
_INLINE_BUDGET = 50_000


def _resolve_local(document: Any, ref: str, base: str) -> Any:
    """The target of `ref` (`#/pointer`, or `<base>#/pointer`) inside `document`."""
    uri, _, fragment = ref.partition("#")
    if uri not in ("", base) or (fragment and not fragment.startswith("/")):
        raise _NotInlinable(ref)
    target = document
    for token in unquote(fragment).split("/")[1:] if fragment else ():
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(target, list) and token.isdigit() and int(token) < len(target):
            target = target[int(token)]
        elif isinstance(target, Mapping) and token in target:
            target = target[token]
        else:
            raise _NotInlinable(ref)
    return target


def _inlined(document: Any, schema: Any, base: str) -> Any:
    """`schema` with every `$ref` replaced by a copy of its target, recursively.

    Draft 4 ignores the siblings of `$ref` (jsonschema's `ignore_ref_siblings`), so the result
    validates exactly as the original does, without resolving references on every call.

    Raises:
        _NotInlinable: the schema's references must stay references.
    """
    budget = [_INLINE_BUDGET]

    def walk(node: Any, seen: tuple[str, ...]) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise _NotInlinable("too large")
        if not isinstance(node, Mapping):
            return node  # a boolean `additionalProperties`, or a malformed schema left as it is
        if "$ref" in node:
            ref = node["$ref"]
            if not isinstance(ref, str) or ref in seen:
                raise _NotInlinable(str(ref))
            return walk(_resolve_local(document, ref, base), (*seen, ref))
        if isinstance(node.get("id"), str):
            raise _NotInlinable("id")  # Draft 4 `id` changes where references resolve
        copied: dict[str, Any] = {}
        for key, value in node.items():
            if key in _SCHEMA_KEYWORDS:
                value = ([walk(v, seen) for v in value] if isinstance(value, list)
                         else walk(value, seen))
            elif key in _SCHEMA_LIST_KEYWORDS and isinstance(value, list):
                value = [walk(v, seen) for v in value]
            elif key in _SCHEMA_MAP_KEYWORDS and isinstance(value, Mapping):
                # `dependencies` may also map a name to a list of names: data, kept.
                value = {k: v if isinstance(v, list) else walk(v, seen) for k, v in value.items()}
            copied[key] = value
        return copied

    return walk(schema, ())


class OpenApiContract:
    """A REST contract, loaded: use `load_openapi_contract(spec)`, which caches it.

    Raises (constructor):
        ContractError: missing or invalid document, a declared operationId missing.
    """

    def __init__(self, spec: ContractSpec) -> None:
        self.spec = spec
        if not spec.document.is_file():
            raise spec.error(f"OpenAPI document not found at {spec.document}")
        try:
            self.document = read_openapi(spec.document)
        except (OSError, yaml.YAMLError, ValueError) as exc:
            raise spec.error(f"the OpenAPI document does not load: {exc}") from exc
        base = f"urn:crocevia:openapi:{spec.agency}:{spec.version}"
        self._base = base
        self._registry = Registry().with_resource(base, DRAFT4.create_resource(self.document))
        self.receipt_statuses = spec.receipt.http_statuses or DEFAULT_RECEIPT_STATUSES
        self.operations = self._operations()
        for name in spec.operations:
            if name not in self.operations:
                raise spec.error(self._missing(), operation=name)
        self.receipt = JsonReceiptReader(spec.receipt)

    def __repr__(self) -> str:
        return f"OpenApiContract({self.spec.ref!r}, {self.spec.document_text!r})"

    def _validator(self, *parts: str) -> SchemaCheck:
        schema: Any = {"$ref": f"{self._base}#{_pointer(*parts)}"}
        try:
            # Resolving references costs about half of each validation's CPU: do it once.
            schema = _inlined(self.document, schema, self._base)
        except _NotInlinable:
            pass  # the registry resolves them on each call, as jsonschema does
        # Compiled once by fastjsonschema too, which vouches for the valid messages.
        return SchemaCheck(Draft4Validator(schema, registry=self._registry,
                                           format_checker=Draft4Validator.FORMAT_CHECKER))

    def _parameters(self, item: Mapping[str, Any], spec: Mapping[str, Any]) -> list[dict]:
        found = []
        for param in [*(item.get("parameters") or []), *(spec.get("parameters") or [])]:
            if isinstance(param, Mapping) and "$ref" in param:
                ref = str(param["$ref"]).removeprefix("#/").split("/")
                resolved: Any = self.document
                for part in ref:
                    resolved = resolved.get(part, {}) if isinstance(resolved, Mapping) else {}
                param = resolved
            if isinstance(param, Mapping):
                found.append(dict(param))
        return found

    def _operations(self) -> dict[str, RestOperation]:
        operations: dict[str, RestOperation] = {}
        for path, item in (self.document.get("paths") or {}).items():
            if not isinstance(item, Mapping):
                continue
            for method, spec in item.items():
                if method not in _METHODS or not isinstance(spec, Mapping):
                    continue
                name = spec.get("operationId")
                if not name:
                    continue
                responses = spec.get("responses") or {}
                receipts = {
                    status: self._validator("paths", path, method, "responses", str(status),
                                            "content", "application/json", "schema")
                    for status in self.receipt_statuses
                    if "application/json" in (((responses.get(str(status)) or {})
                                               .get("content")) or {})
                }
                body = ((spec.get("requestBody") or {}).get("content") or {})
                params = self._parameters(item, spec)
                operations[str(name)] = RestOperation(
                    name=str(name),
                    method=method.upper(),
                    path=path,
                    request=(self._validator("paths", path, method, "requestBody", "content",
                                             "application/json", "schema")
                             if "application/json" in body else None),
                    receipts=receipts,
                    receipt_statuses=frozenset(self.receipt_statuses),
                    path_parameters=tuple(p.get("name", "") for p in params if p.get("in") == "path"),
                    required_query=tuple(p.get("name", "") for p in params
                                         if p.get("in") == "query" and p.get("required")),
                )
        return operations

    def _missing(self) -> str:
        return f"no such operationId in the document; it has {sorted(self.operations)}"

    def operation(self, name: str) -> RestOperation:
        """The operation `name`, checked to be one the hub can deliver a filing with.

        Raises:
            ContractError: unknown, not declared, or needing what a filing cannot give (no
                JSON body, path or required query parameters).
        """
        operation = self.operations.get(name)
        if operation is None:
            raise self.spec.error(self._missing(), operation=name)
        if self.spec.operations and name not in self.spec.operations:
            raise self.spec.error(f"in the document, but not among the contract's operations "
                                  f"{list(self.spec.operations)}", operation=name)
        if operation.request is None:
            raise self.spec.error(f"{operation.method} {operation.path} takes no JSON body: the "
                                  f"hub delivers a filing as one", operation=name)
        if operation.path_parameters or operation.required_query:
            needed = [*operation.path_parameters, *operation.required_query]
            raise self.spec.error(f"{operation.path} needs parameters {needed}, which a mapping "
                                  f"cannot fill yet", operation=name)
        return operation

    def serialize(self, name: str, content: Mapping[str, Any], ctx: ErrorContext) -> bytes:
        """The JSON body of one call, validated against the operation's request schema.

        Raises:
            AdapterMisconfigured: the operation cannot be called; nothing was built.
            MessageRejectedAsInvalid: the content fails the schema, or is not JSON.
        """
        try:
            operation = self.operation(name)
        except ContractError as exc:
            raise ctx.build(AdapterMisconfigured, str(exc), code="UNKNOWN_OPERATION") from exc
        assert operation.request is not None
        invalid = operation.request.error(content)
        if invalid is not None:
            raise ctx.build(MessageRejectedAsInvalid,
                            f"the message fails the {self.spec.ref} contract at "
                            f"{invalid.json_path}: {invalid.message}") from invalid
        try:
            return orjson.dumps(content)
        except TypeError as exc:
            raise ctx.build(MessageRejectedAsInvalid, f"the message is not JSON: {exc}") from exc


_LOCK = threading.Lock()
_LOADED: dict[ContractSpec, OpenApiContract] = {}


def load_openapi_contract(spec: ContractSpec) -> OpenApiContract:
    """The loaded contract of `spec`, built once per process.

    Raises:
        ContractError: see `OpenApiContract`.
    """
    with _LOCK:
        loaded = _LOADED.get(spec)
        if loaded is None:
            loaded = _LOADED[spec] = OpenApiContract(spec)
        return loaded
