"""Agencies as data: the contract declarations of `config/agencies/<agency>.toml`, by version.

A declaration names the agency's interface document (a WSDL or an OpenAPI document), what the
hub calls in it, how the reply becomes a `Receipt`, how faults are classified and how the
agency's sandbox behaves. Loading a catalog reads only the TOML files: the WSDL and OpenAPI
documents are opened when a contract is loaded (`adapters.wsdl`, `adapters.rest`), so an
agency nobody routes to costs nothing at start-up. The format is documented in
docs/agencies-as-configuration.md.

The spec classes are pydantic dataclasses: the same classes validate an agency file (unknown
keys refused, closed choices as `Literal`s) and are what the adapters read, so the file's
format is declared once.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, get_args

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from adapters.base import OVERRIDE_KINDS

__all__ = [
    "EXTERNAL_PREFIX",
    "PATTERNS",
    "PROTOCOL_NUMBER_COLUMN",
    "AgencyCatalog",
    "AgencySpec",
    "AttachmentSpec",
    "CALLBACK_PROFILES",
    "CallbackSpec",
    "ContractConfigError",
    "ContractError",
    "ContractSpec",
    "NonBlockingSpec",
    "ReceiptLimits",
    "ReceiptSpec",
    "SandboxSpec",
    "StatusSpec",
    "ValueSpec",
    "default_catalog",
    "load_agency_catalog",
    "split_contract_ref",
]

#: A document path starting with this is read under the configured `external_dir`
#: (default `../shared/external`), where third-party interface files stay in place.
EXTERNAL_PREFIX = "external:"
Kind = Literal["soap", "rest"]
#: The AgID interaction patterns a contract may declare (ModI: blocking, PULL, PUSH).
Pattern = Literal["blocking", "pull", "push"]
PATTERNS = frozenset(get_args(Pattern))
#: How an agency signs its callbacks: ModI (REST: bearer JWT, Digest, Agid-JWT-Signature) or
#: WS-Security (SOAP: an XML signature over Body and Timestamp by the agency's certificate).
CallbackProfile = Literal["modi", "wss"]
CALLBACK_PROFILES = frozenset(get_args(CallbackProfile))
#: `envelope = "crocevia"`: the hub adds the crv:messageHeader; "none": the message as mapped.
Envelope = Literal["crocevia", "none"]
#: The width of the stored protocol number (`deliveries.protocol_number`): no limit may exceed it.
PROTOCOL_NUMBER_COLUMN = 64

#: Every spec refuses keys it does not declare, from a file and from code alike.
_STRICT = ConfigDict(extra="forbid")
#: The error type whose `key` (in its context) names the offending key below the error's place.
_FILE_ERROR = "agency_file"


class ContractConfigError(ValueError):
    """An agency file is not well formed; the message names the file and the key."""


class ContractError(ValueError):
    """A contract cannot serve what is asked of it (missing document, binding or operation).

    The message names the agency file, the interface document and, when there is one, the
    operation, so `hub.py contracts check` and start-up can say exactly what to fix.
    """

    def __init__(self, text: str, *, source: Path | str = "", document: str = "",
                 operation: str = "") -> None:
        where = " → ".join(_shown(p) for p in (source, document) if p)
        what = f"operation {operation!r}: " if operation else ""
        super().__init__(f"{where}: {what}{text}" if where else f"{what}{text}")
        self.source = str(source)
        self.document = document
        self.operation = operation


def _shown(path: Path | str) -> str:
    """A path relative to the working directory when it is below it (shorter messages)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


# ---------------------------------------------------------------------------------------------
# How a file's values become spec values (each passes through what code built already)
# ---------------------------------------------------------------------------------------------


def _fail(text: str, key: str = "") -> PydanticCustomError:
    """An error naming `key` below the place pydantic reports it at (empty: that place)."""
    return PydanticCustomError(_FILE_ERROR, "{text}", {"text": text, "key": key})


def _refuse_keys(table: Mapping[str, Any], refused: frozenset[str]) -> None:
    """Refuse those of `refused` that a file's table holds, reported as unknown keys.

    Used where a validator reshapes the table first: names the loader fills in itself
    (`agency`, `version`, ...) must not be smuggled in from the file.
    """
    clash = sorted(set(table) & refused)
    if clash:
        raise PydanticCustomError("unknown_keys", "unknown keys {keys}", {"keys": clash})


def _value(raw: Any, key: str = "") -> Any:
    """`"path"`, `{ path | header | const = ... }` or `{ own = "message_id" }` → `ValueSpec`."""
    if isinstance(raw, ValueSpec):
        return raw
    if isinstance(raw, str):
        return ValueSpec(path=raw)
    if isinstance(raw, Mapping) and len(raw) == 1:
        (kind, value), = raw.items()
        if kind in ("path", "header", "const") and isinstance(value, (str, int)) \
                and not isinstance(value, bool):
            return ValueSpec(**{kind: str(value)})
        if kind == "own" and value == "message_id":
            return ValueSpec(own="message_id")
    raise _fail("expected a path string or one of { path | header | const = ... } or "
                f"{{ own = \"message_id\" }}, got {raw!r}", key)


def _values(raw: Any) -> Any:
    """A table of name → value (`references`) → pairs, each value named in its error."""
    if isinstance(raw, Mapping):
        return tuple((str(name), _value(item, str(name))) for name, item in raw.items())
    return raw


def _pairs(raw: Any) -> Any:
    """A table of name → text (`namespaces`, sandbox `values`) → pairs."""
    if isinstance(raw, Mapping):
        return tuple((str(k), str(v)) for k, v in raw.items())
    return raw


def _kinds(raw: Any) -> Any:
    """A table of code → error kind (`fault_overrides`, status `errors`) → pairs, kinds lowered."""
    if not isinstance(raw, Mapping):
        return raw
    pairs = []
    for code, kind in raw.items():
        if not isinstance(kind, str) or kind.lower() not in OVERRIDE_KINDS:
            raise _fail(f"unknown kind {kind!r}; expected one of {sorted(OVERRIDE_KINDS)}",
                        str(code))
        pairs.append((str(code), kind.lower()))
    return tuple(pairs)


def _each(raw: Any) -> Any:
    """`references_each = { nodes, name, value }` → the three paths."""
    if not isinstance(raw, Mapping):
        return raw
    _refuse_keys(raw, frozenset(raw) - {"nodes", "name", "value"})
    for key in ("nodes", "name", "value"):
        if not isinstance(raw.get(key), str):
            raise _fail("missing" if key not in raw else "expected a string", key)
    return raw["nodes"], raw["name"], raw["value"]


def _envelope(raw: Any) -> Any:
    """`envelope = "crocevia" | "none"` → whether the hub adds its header."""
    if isinstance(raw, bool):
        return raw
    if raw not in get_args(Envelope):
        raise _fail("expected \"crocevia\" (the hub adds crv:messageHeader) or \"none\"")
    return raw == "crocevia"


def _resolve(raw: Any, info: ValidationInfo) -> Any:
    """A document path of a file: `external:` under external_dir, relative under the project."""
    if not isinstance(raw, str) or not isinstance(info.context, Mapping):
        return raw
    if raw.startswith(EXTERNAL_PREFIX):
        return Path(info.context["external_dir"]) / raw[len(EXTERNAL_PREFIX):]
    path = Path(raw)
    return path if path.is_absolute() else Path(info.context["project_root"]) / path


def _positive_int(raw: Any) -> Any:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
        raise _fail(f"expected a positive integer, got {raw!r}")
    return raw


_Value = Annotated["ValueSpec", BeforeValidator(_value)]
_Kinds = Annotated[tuple[tuple[str, str], ...], BeforeValidator(_kinds)]
_Pairs = Annotated[tuple[tuple[str, str], ...], BeforeValidator(_pairs)]
_Resolved = Annotated[Path, BeforeValidator(_resolve)]
_PositiveInt = Annotated[int, BeforeValidator(_positive_int)]


# ---------------------------------------------------------------------------------------------
# The specs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, config=_STRICT)
class ValueSpec:
    """Where one receipt field comes from: a path into the reply, an HTTP header or a constant.

    `path` is an XPath 1.0 expression (SOAP; evaluated with the reply's body element as
    context, prefixes from the receipt's `namespaces`) or a dotted path into the JSON body
    (REST).
    """

    path: str | None = None
    header: str | None = None
    const: str | None = None
    own: str | None = None  #: `message_id`: the hub's own message id (a reply with no id)


@dataclass(frozen=True, slots=True, config=_STRICT)
class StatusSpec:
    """A business status inside a successful reply (e.g. the ISEE `Esito`).

    `code` points at the agency's own code beside a status that is not ok (pagoPA's
    `fault/faultCode`): a code named in the contract's `fault_overrides` picks the error kind,
    any other code leaves it to `errors`. In the file `value` is written `path`.
    """

    value: _Value
    ok: tuple[str, ...]
    errors: _Kinds = ()  #: value → kind of `adapters.base.OVERRIDE_KINDS`
    text: _Value | None = None
    code: _Value | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_file(cls, data: Any) -> Any:
        """The file names the status's own value `path` (code passes `value`)."""
        if isinstance(data, Mapping):
            _refuse_keys(data, frozenset({"value"}))
            return {("value" if k == "path" else k): v for k, v in data.items()}
        return data

    @field_validator("ok")
    @classmethod
    def _some_ok(cls, ok: tuple[str, ...]) -> tuple[str, ...]:
        if not ok:
            raise _fail("name at least one value that means success")
        return ok


@dataclass(frozen=True, slots=True, config=_STRICT)
class ReceiptLimits:
    """What a reply may hold before it is stored (`[contracts.<v>.receipt.limits]`).

    Everything an agency sends is bounded before it reaches the store (DESIGN, "Trust at the
    edges"): a reply beyond `max_reply_bytes` is not even parsed, and a receipt beyond the
    others is a protocol error (transient: retried, then undeliverable). The defaults fit the
    columns the receipt is stored in and leave room for any sane receipt.
    """

    protocol_number_max_length: _PositiveInt = PROTOCOL_NUMBER_COLUMN  #: characters
    #: What a protocol number may look like (the whole value, Python `re` syntax); by default
    #: printable ASCII without leading or trailing blanks.
    protocol_number_pattern: str = r"[!-~](?:[ -~]*[!-~])?"
    max_references: _PositiveInt = 64
    reference_max_length: _PositiveInt = 256  #: characters, of a reference's name and of its value
    max_receipt_bytes: _PositiveInt = 32 * 1024  #: the receipt as stored (UTF-8 of all its fields)
    max_reply_bytes: _PositiveInt = 1024 * 1024  #: the reply body read at all, decoded

    @field_validator("protocol_number_max_length")
    @classmethod
    def _fits_the_column(cls, length: int) -> int:
        if length > PROTOCOL_NUMBER_COLUMN:
            raise _fail(f"at most {PROTOCOL_NUMBER_COLUMN} (the stored protocol number's width)")
        return length

    @field_validator("protocol_number_pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _fail(f"not a regular expression: {exc}") from exc
        return pattern

    @property
    def protocol_number_re(self) -> re.Pattern[str]:
        """The compiled pattern (cached by `re`)."""
        return re.compile(self.protocol_number_pattern)


@dataclass(frozen=True, slots=True, config=_STRICT)
class ReceiptSpec:
    """How a successful reply becomes a `Receipt`.

    `acknowledgment` says that the agency returns no protocol number and that
    `protocol_number` points at what stands for it (a request id, an echoed value): the hub
    records it in the protocol number's place, and the docs explain each choice.
    """

    protocol_number: _Value
    protocolled_at: _Value | None = None
    outcome: _Value | None = None
    outcome_code: _Value | None = None  #: a decision's code (a late RESPINTA, say)
    outcome_text: _Value | None = None
    message_id: _Value | None = None
    references: Annotated[tuple[tuple[str, ValueSpec], ...], BeforeValidator(_values)] = ()
    #: (nodes, name, value) paths; the file writes `{ nodes = ..., name = ..., value = ... }`.
    references_each: Annotated[tuple[str, str, str] | None, BeforeValidator(_each)] = None
    references_object: str | None = None  #: REST: a JSON object of name → value
    status: StatusSpec | None = None
    acknowledgment: bool = Field(default=False, strict=True)
    namespaces: _Pairs = ()
    http_statuses: tuple[Annotated[int, Field(strict=True)], ...] = ()  #: REST: statuses whose body is the receipt
    limits: ReceiptLimits = ReceiptLimits()

    def paths(self) -> list[str]:
        """Every path the mapping reads, for the sandbox to materialise in its replies."""
        specs = [self.protocol_number, self.protocolled_at, self.outcome, self.outcome_code,
                 self.outcome_text, self.message_id, *(v for _, v in self.references)]
        if self.status is not None:
            specs.append(self.status.value)
            specs.append(self.status.code)
        return [s.path for s in specs if s is not None and s.path]


@dataclass(frozen=True, slots=True, config=_STRICT)
class SandboxSpec:
    """How the schema-driven sandbox plays this contract (simulators/sandbox.py).

    `dedupe` picks what makes two requests "the same message": `field:<localName>` (the
    first element or key of that name), `header:<HTTP header>`, or `digest` (the canonical
    body); empty means the contract's message-id header, else the envelope's `messageId`,
    else the digest. `values` fixes fields of generated replies (path → text).
    """

    dedupe: str = ""
    prefix: str = ""  #: protocol numbers `<PREFIX>-<year>-<seq>`; default the agency name
    values: _Pairs = ()
    faults: tuple[Mapping[str, Any], ...] = dataclasses.field(default=(), compare=False,
                                                              hash=False)
    #: PULL/PUSH: how many status polls answer "pending" before the outcome is ready.
    pending_polls: int = Field(default=1, ge=0, strict=True)

    @field_validator("dedupe")
    @classmethod
    def _dedupe(cls, dedupe: str) -> str:
        if dedupe and dedupe != "digest" and not dedupe.startswith(("field:", "header:")):
            raise _fail("expected digest, field:<name> or header:<name>")
        return dedupe

    @field_validator("faults")
    @classmethod
    def _plain_faults(cls, faults: tuple[Mapping[str, Any], ...]) -> tuple[Mapping[str, Any], ...]:
        """Fault rules stay plain dicts: the simulators match and copy them as such."""
        return tuple(dict(f) for f in faults)


@dataclass(frozen=True, slots=True, config=_STRICT)
class NonBlockingSpec:
    """The operations of a non-blocking contract besides the request (AgID ModI).

    PULL (SOAP): `status_operation` answers the processing state (at `status_path`) for an
    `X-Correlation-ID`, `result_operation` the outcome once it is one of `done_values`; the
    contract's `receipt` reads that outcome. PUSH (SOAP): the request carries `X-ReplyTo`, and
    the agency calls back the `callback_operation` of `callback_wsdl` with the
    `X-Correlation-ID`; the `receipt` reads the callback's body. Over plain HTTP (202 +
    Location, 303 See Other) nothing needs naming: the adapters follow the headers.
    """

    correlation_header: str = "X-Correlation-ID"
    reply_to_header: str = "X-ReplyTo"
    status_operation: str | None = None
    result_operation: str | None = None
    status_path: str | None = None
    done_values: tuple[str, ...] = ()
    failed_values: tuple[str, ...] = ()
    callback_wsdl: _Resolved | None = None
    callback_operation: str | None = None


@dataclass(frozen=True, slots=True, config=_STRICT)
class AttachmentSpec:
    """How this contract carries a message's attachments (README, "Attachments").

    The mapping lists them in the message as `element` records (a list of `element` elements
    in SOAP, an array property in REST) holding their `sha256`; the adapter streams each one's
    content from the blob store in the contract's form: `mtom` (SOAP: multipart/related, the
    `content` element holding an xop:Include), `base64` (SOAP: inline in the `content`
    element) or `multipart` (REST: multipart/form-data, the JSON message in part `message`,
    each file in a part named `file_part`).
    """

    form: Literal["mtom", "base64", "multipart"]
    element: str = "allegato"
    content: str = "contenuto"
    file_part: str = "allegato"


class _Declared(NamedTuple):
    """A contract table as read from a file, with what the loader knows around it."""

    agency: str
    version: str
    source: Path
    table: Any


@dataclass(frozen=True, slots=True, config=_STRICT)
class ContractSpec:
    """One version of one agency's contract, as declared."""

    agency: str
    version: str
    kind: Kind
    document: _Resolved  #: the WSDL or OpenAPI document (the file's `wsdl` or `openapi`)
    source: Path  #: the agency file that declares it
    document_text: str  #: the document as written in the file, for messages
    receipt: ReceiptSpec
    operations: tuple[str, ...] = ()  #: allow-list; empty means every operation
    binding: str | None = None  #: `{namespace}Local` or a local name in the WSDL's namespace
    service: str | None = None
    port: str | None = None
    soap_version: Literal["1.1", "1.2"] | None = None  #: checked against the WSDL when given
    xsd: _Resolved | None = None  #: pre-send validation schema; else the WSDL's own types
    #: The hub adds the `crv:messageHeader` to every message (the file's "crocevia" | "none").
    envelope: Annotated[bool, BeforeValidator(_envelope)] = True
    message_id_header: str | None = None  #: HTTP header carrying the stable message id
    endpoint: str | None = None  #: overrides the agency's endpoint for this version
    connect_timeout: float | None = Field(default=None, gt=0)
    read_timeout: float | None = Field(default=None, gt=0)
    pattern: Pattern = "blocking"
    fault_overrides: _Kinds = ()
    #: Where the agency puts a code of its own in a fault: local names of elements inside a
    #: SOAP fault's detail (AgID `customFaultCode`), dotted paths into a REST error body
    #: (empty: `codice`). The code is looked up in `fault_overrides`.
    fault_code_fields: tuple[str, ...] = ()
    sandbox: SandboxSpec = SandboxSpec()
    nonblocking: NonBlockingSpec | None = None
    attachments: AttachmentSpec | None = None
    description: str = dataclasses.field(default="", compare=False)

    @model_validator(mode="before")
    @classmethod
    def _from_file(cls, data: Any) -> Any:
        """A file's table: its document under `wsdl` (soap) or `openapi` (rest)."""
        if not isinstance(data, _Declared):
            return data
        if not isinstance(data.table, Mapping):
            return data.table  # pydantic names the wrong type
        table = dict(data.table)
        _refuse_keys(table, frozenset({"agency", "version", "source", "document", "document_text"}))
        kind = table.get("kind")
        key, other = {"soap": ("wsdl", "openapi"), "rest": ("openapi", "wsdl")}.get(
            kind if isinstance(kind, str) else "", ("", ""))
        if not key:
            document = table.pop("wsdl", table.pop("openapi", ""))  # the kind's error says it
        elif other in table:
            raise _fail(f"a {kind} contract names its document with `{key}`", other)
        elif key not in table:
            raise _fail("missing", key)
        else:
            document = table.pop(key)
        return {**table, "agency": data.agency, "version": data.version, "source": data.source,
                "document": document, "document_text": document}

    @model_validator(mode="after")
    def _nonblocking_named(self) -> ContractSpec:
        """A SOAP PULL or PUSH contract names the operations the WSDL cannot tell apart."""
        if self.pattern == "blocking" or self.kind != "soap":
            return self
        needed = (("status_operation", "result_operation", "status_path", "done_values")
                  if self.pattern == "pull" else ("callback_wsdl", "callback_operation"))
        missing = [k for k in needed if self.nonblocking is None or not getattr(self.nonblocking, k)]
        if missing:
            raise _fail(f"a SOAP {self.pattern} contract names {', '.join(missing)}", "nonblocking")
        return self

    @property
    def ref(self) -> str:
        """`agency/version`, the name routes use."""
        return f"{self.agency}/{self.version}"

    def error(self, text: str, operation: str = "") -> ContractError:
        """A `ContractError` naming this contract's file and document."""
        return ContractError(text, source=self.source, document=self.document_text,
                             operation=operation)


@dataclass(frozen=True, slots=True, config=_STRICT)
class CallbackSpec:
    """The credential an agency's callbacks (AgID NONBLOCK_PUSH) must carry: `[callback]`.

    `certificate` is the agency's registered X.509 certificate (or, for `modi`, a PEM public
    key). `private_key` is for the embedded default only: the simulators and the sandbox sign
    with it, and it is generated on first run (mode 0600) with a self-signed `certificate`;
    production leaves it out and names the certificate the agency was issued.
    """

    profile: CallbackProfile
    certificate: _Resolved
    issuer: str  #: modi: the tokens' `iss` (default: the agency's name)
    private_key: _Resolved | None = None
    description: str = dataclasses.field(default="", compare=False)


@dataclass(frozen=True, config=_STRICT)
class AgencySpec:
    """An agency and every contract version it speaks; `current` is the routes' default.

    `callback` is None when the agency's file declares no callback credential: such an agency
    cannot post callbacks to the hub at all. In the file `name` is written `agency` (default:
    the file's name) and `current` may be left out when one version is declared.
    """

    name: str
    source: Path
    current: str
    contracts: Mapping[str, ContractSpec]
    callback: CallbackSpec | None = None
    description: str = dataclasses.field(default="", compare=False)

    @model_validator(mode="before")
    @classmethod
    def _from_file(cls, data: Any, info: ValidationInfo) -> Any:
        """Fill in what the file leaves implicit: the name, the current version, the issuer."""
        if not isinstance(data, Mapping) or not isinstance(info.context, Mapping):
            return data
        _refuse_keys(data, frozenset({"name", "source"}))
        source: Path = info.context["source"]
        table = dict(data)
        name = table.pop("agency", source.stem)
        contracts = table.get("contracts", {})
        if isinstance(contracts, Mapping):
            table["contracts"] = {str(v): _Declared(str(name), str(v), source, raw)
                                  for v, raw in contracts.items()}
        if "current" not in table and (not isinstance(contracts, Mapping) or len(contracts) <= 1):
            table["current"] = next(iter(contracts), "") if isinstance(contracts, Mapping) else ""
        callback = table.get("callback")
        if isinstance(callback, Mapping) and "issuer" not in callback:
            table["callback"] = {**callback, "issuer": name}
        return {**table, "name": name, "source": source}

    @model_validator(mode="after")
    def _current_declared(self) -> AgencySpec:
        if not self.contracts:
            raise _fail("declare at least one version, e.g. [contracts.v1]", "contracts")
        if self.current not in self.contracts:
            raise _fail(f"{self.current!r} is not a declared version ({sorted(self.contracts)})",
                        "current")
        return self

    def contract(self, version: str | None = None) -> ContractSpec:
        """The contract of `version` (None: the current one).

        Raises:
            ContractError: no such version is declared.
        """
        chosen = version or self.current
        try:
            return self.contracts[chosen]
        except KeyError:
            raise ContractError(
                f"no contract version {chosen!r}; declared: {sorted(self.contracts)}",
                source=self.source,
            ) from None


@dataclasses.dataclass(frozen=True)
class AgencyCatalog:
    """Every declared agency, by its config name."""

    agencies: Mapping[str, AgencySpec]

    def agency(self, name: str) -> AgencySpec:
        """Raises: ContractError when `name` has no agency file."""
        try:
            return self.agencies[name]
        except KeyError:
            raise ContractError(
                f"no agency file declares {name!r}; known: {sorted(self.agencies)}"
            ) from None

    def contract(self, agency: str, version: str | None = None) -> ContractSpec:
        """The contract `agency/version` (None: the agency's current version)."""
        return self.agency(agency).contract(version)

    def all_contracts(self) -> list[ContractSpec]:
        return [c for a in sorted(self.agencies) for _, c in sorted(self.agencies[a].contracts.items())]


def split_contract_ref(ref: str) -> tuple[str, str | None]:
    """`"inps/v1"` → `("inps", "v1")`; `"inps"` → `("inps", None)`."""
    agency, _, version = ref.partition("/")
    return agency.strip(), (version.strip() or None)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

_AGENCY_FILE: TypeAdapter[AgencySpec] = TypeAdapter(AgencySpec)
#: Hints for a missing table, by its key.
_REQUIRED_TABLES = {"receipt": "say which reply field gives the protocol number"}
_MISSING_HINTS = {"current": "several versions are declared: say which one is current",
                  "protocol_number": "missing (for a reply without one, point at the field that "
                                     "stands for it and set acknowledgment)"}


def _key(loc: tuple[str, ...]) -> str:
    """A dotted key as the file writes it; keys outside a contract are named `agency.<key>`."""
    inside_contract = len(loc) >= 2 and loc[0] == "contracts"
    return ".".join(loc if inside_contract else ("agency", *loc))


def _problems(exc: ValidationError) -> list[str]:
    """One line per mistake, each naming the dotted key; unknown keys grouped by table."""
    unknown: dict[tuple[str, ...], list[str]] = {}
    problems: list[str] = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        ctx = error.get("ctx") or {}
        if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            unknown.setdefault(loc[:-1], []).append(loc[-1])
        elif error["type"] == "unknown_keys":
            unknown.setdefault(loc, []).extend(ctx["keys"])
        elif error["type"] == _FILE_ERROR:
            where = (*loc, ctx["key"]) if ctx.get("key") else loc
            problems.append(f"{_key(where)}: {ctx['text']}")
        elif error["type"] == "missing" and loc[-1] in _REQUIRED_TABLES:
            problems.append(f"[{_key(loc)}] is required: {_REQUIRED_TABLES[loc[-1]]}")
        elif error["type"] == "missing":
            problems.append(f"{_key(loc)}: {_MISSING_HINTS.get(loc[-1], 'missing')}")
        elif error["type"] in ("dict_type", "dataclass_type", "dataclass_exact_type"):
            problems.append(f"{_key(loc)}: expected a table, got {error['input']!r}")
        elif error["type"] == "literal_error":
            problems.append(f"{_key(loc)}: expected one of {ctx['expected']}, "
                            f"got {error['input']!r}")
        else:
            problems.append(f"{_key(loc)}: {error['msg'][:1].lower()}{error['msg'][1:]}, "
                            f"got {error['input']!r}")
    for table, keys in unknown.items():
        problems.append(f"[{_key(table)}]: unknown keys {sorted(keys)}")
    return problems


def _agency(path: Path, project_root: Path, external_dir: Path) -> AgencySpec:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ContractConfigError(f"{_shown(path)}: not valid TOML: {exc}") from exc
    context = {"source": path, "project_root": project_root, "external_dir": external_dir}
    try:
        return _AGENCY_FILE.validate_python(data, context=context)
    except ValidationError as exc:
        raise ContractConfigError(
            "; ".join(f"{_shown(path)}: {problem}" for problem in _problems(exc))) from None


def load_agency_catalog(
    directories: Path | list[Path], *, project_root: Path, external_dir: Path
) -> AgencyCatalog:
    """Read every `*.toml` agency file of `directories` (later directories win on a name).

    Args:
        directories: where the agency files are (`config/agencies` by default).
        project_root: base of relative document paths.
        external_dir: base of `external:` document paths.

    Raises:
        ContractConfigError: a malformed file, naming it and the key.
    """
    dirs = [directories] if isinstance(directories, Path) else list(directories)
    agencies: dict[str, AgencySpec] = {}
    for directory in dirs:
        if not directory.is_dir():
            raise ContractConfigError(f"agency directory {directory} not found")
        for path in sorted(directory.glob("*.toml")):
            spec = _agency(path, project_root, external_dir)
            agencies[spec.name] = spec
    return AgencyCatalog(agencies)


_ROOT = Path(__file__).resolve().parent.parent
#: Where the repository keeps its agency files and where third-party documents stay in place.
DEFAULT_AGENCIES_DIR = _ROOT / "config" / "agencies"
DEFAULT_EXTERNAL_DIR = _ROOT.parent / "shared" / "external"


@functools.cache
def default_catalog() -> AgencyCatalog:
    """The repository's own declarations (read once, on first use)."""
    return load_agency_catalog(DEFAULT_AGENCIES_DIR, project_root=_ROOT, external_dir=DEFAULT_EXTERNAL_DIR)
