"""Agencies as data: the contract declarations of `config/agencies/<agency>.toml`, by version.

A declaration names the agency's interface document (a WSDL or an OpenAPI document), what the
hub calls in it, how the reply becomes a `Receipt`, how faults are classified and how the
agency's sandbox behaves. Loading a catalog reads only the TOML files: the WSDL and OpenAPI
documents are opened when a contract is loaded (`adapters.wsdl`, `adapters.rest`), so an
agency nobody routes to costs nothing at start-up. The format is documented in
docs/agencies-as-configuration.md.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.base import OVERRIDE_KINDS

__all__ = [
    "EXTERNAL_PREFIX",
    "PATTERNS",
    "PROTOCOL_NUMBER_COLUMN",
    "AgencyCatalog",
    "AgencySpec",
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
#: The AgID interaction patterns a contract may declare (ModI: blocking, PULL, PUSH).
PATTERNS = frozenset({"blocking", "pull", "push"})
_KINDS = frozenset({"soap", "rest"})
#: How an agency signs its callbacks: ModI (REST: bearer JWT, Digest, Agid-JWT-Signature) or
#: WS-Security (SOAP: an XML signature over Body and Timestamp by the agency's certificate).
CALLBACK_PROFILES = frozenset({"modi", "wss"})
_CONTRACT_KEYS = frozenset({
    "kind", "wsdl", "openapi", "binding", "service", "port", "soap_version", "xsd",
    "operations", "envelope", "message_id_header", "endpoint", "connect_timeout",
    "read_timeout", "pattern", "receipt", "fault_overrides", "fault_code_fields", "sandbox",
    "nonblocking", "description",
})
_RECEIPT_KEYS = frozenset({
    "namespaces", "protocol_number", "protocolled_at", "outcome", "outcome_code",
    "outcome_text", "message_id", "references",
    "references_each", "references_object", "status", "acknowledgment", "http_statuses",
    "limits",
})
#: The width of the stored protocol number (`deliveries.protocol_number`): no limit may exceed it.
PROTOCOL_NUMBER_COLUMN = 64
_LIMIT_KEYS = frozenset({
    "protocol_number_max_length", "protocol_number_pattern", "max_references",
    "reference_max_length", "max_receipt_bytes", "max_reply_bytes",
})


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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class StatusSpec:
    """A business status inside a successful reply (e.g. the ISEE `Esito`).

    `code` points at the agency's own code beside a status that is not ok (pagoPA's
    `fault/faultCode`): a code named in the contract's `fault_overrides` picks the error kind,
    any other code leaves it to `errors`.
    """

    value: ValueSpec
    ok: tuple[str, ...]
    errors: tuple[tuple[str, str], ...] = ()  #: value → kind of `adapters.base.OVERRIDE_KINDS`
    text: ValueSpec | None = None
    code: ValueSpec | None = None


@dataclass(frozen=True, slots=True)
class ReceiptLimits:
    """What a reply may hold before it is stored (`[contracts.<v>.receipt.limits]`).

    Everything an agency sends is bounded before it reaches the store (DESIGN, "Trust at the
    edges"): a reply beyond `max_reply_bytes` is not even parsed, and a receipt beyond the
    others is a protocol error (transient: retried, then undeliverable). The defaults fit the
    columns the receipt is stored in and leave room for any sane receipt.
    """

    protocol_number_max_length: int = PROTOCOL_NUMBER_COLUMN  #: characters
    #: What a protocol number may look like (the whole value, Python `re` syntax); by default
    #: printable ASCII without leading or trailing blanks.
    protocol_number_pattern: str = r"[!-~](?:[ -~]*[!-~])?"
    max_references: int = 64
    reference_max_length: int = 256  #: characters, of a reference's name and of its value
    max_receipt_bytes: int = 32 * 1024  #: the receipt as stored (UTF-8 of all its fields)
    max_reply_bytes: int = 1024 * 1024  #: the reply body read at all, decoded

    @property
    def protocol_number_re(self) -> re.Pattern[str]:
        """The compiled pattern (cached by `re`)."""
        return re.compile(self.protocol_number_pattern)


@dataclass(frozen=True, slots=True)
class ReceiptSpec:
    """How a successful reply becomes a `Receipt`.

    `acknowledgment` says that the agency returns no protocol number and that
    `protocol_number` points at what stands for it (a request id, an echoed value): the hub
    records it in the protocol number's place, and the docs explain each choice.
    """

    protocol_number: ValueSpec
    protocolled_at: ValueSpec | None = None
    outcome: ValueSpec | None = None
    outcome_code: ValueSpec | None = None  #: a decision's code (a late RESPINTA, say)
    outcome_text: ValueSpec | None = None
    message_id: ValueSpec | None = None
    references: tuple[tuple[str, ValueSpec], ...] = ()
    references_each: tuple[str, str, str] | None = None  #: (nodes, name, value) paths
    references_object: str | None = None  #: REST: a JSON object of name → value
    status: StatusSpec | None = None
    acknowledgment: bool = False
    namespaces: tuple[tuple[str, str], ...] = ()
    http_statuses: tuple[int, ...] = ()  #: REST: statuses whose body is the receipt
    limits: ReceiptLimits = ReceiptLimits()

    def paths(self) -> list[str]:
        """Every path the mapping reads, for the sandbox to materialise in its replies."""
        specs = [self.protocol_number, self.protocolled_at, self.outcome, self.outcome_code,
                 self.outcome_text, self.message_id, *(v for _, v in self.references)]
        if self.status is not None:
            specs.append(self.status.value)
            specs.append(self.status.code)
        return [s.path for s in specs if s is not None and s.path]


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """How the schema-driven sandbox plays this contract (simulators/sandbox.py).

    `dedupe` picks what makes two requests "the same message": `field:<localName>` (the
    first element or key of that name), `header:<HTTP header>`, or `digest` (the canonical
    body); empty means the contract's message-id header, else the envelope's `messageId`,
    else the digest. `values` fixes fields of generated replies (path → text).
    """

    dedupe: str = ""
    prefix: str = ""  #: protocol numbers `<PREFIX>-<year>-<seq>`; default the agency name
    values: tuple[tuple[str, str], ...] = ()
    faults: tuple[Mapping[str, Any], ...] = field(default=(), compare=False, hash=False)
    #: PULL/PUSH: how many status polls answer "pending" before the outcome is ready.
    pending_polls: int = 1


@dataclass(frozen=True, slots=True)
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
    callback_wsdl: Path | None = None
    callback_operation: str | None = None


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """One version of one agency's contract, as declared."""

    agency: str
    version: str
    kind: str  #: "soap" or "rest"
    document: Path  #: the WSDL or OpenAPI document
    source: Path  #: the agency file that declares it
    document_text: str  #: the document as written in the file, for messages
    receipt: ReceiptSpec
    operations: tuple[str, ...] = ()  #: allow-list; empty means every operation
    binding: str | None = None  #: `{namespace}Local` or a local name in the WSDL's namespace
    service: str | None = None
    port: str | None = None
    soap_version: str | None = None  #: checked against the WSDL when given
    xsd: Path | None = None  #: pre-send validation schema; else the WSDL's own types
    envelope: bool = True  #: the hub adds the `crv:messageHeader` to every message
    message_id_header: str | None = None  #: HTTP header carrying the stable message id
    endpoint: str | None = None  #: overrides the agency's endpoint for this version
    connect_timeout: float | None = None
    read_timeout: float | None = None
    pattern: str = "blocking"
    fault_overrides: tuple[tuple[str, str], ...] = ()
    #: Where the agency puts a code of its own in a fault: local names of elements inside a
    #: SOAP fault's detail (AgID `customFaultCode`), dotted paths into a REST error body
    #: (empty: `codice`). The code is looked up in `fault_overrides`.
    fault_code_fields: tuple[str, ...] = ()
    sandbox: SandboxSpec = SandboxSpec()
    nonblocking: NonBlockingSpec | None = None

    @property
    def ref(self) -> str:
        """`agency/version`, the name routes use."""
        return f"{self.agency}/{self.version}"

    def error(self, text: str, operation: str = "") -> ContractError:
        """A `ContractError` naming this contract's file and document."""
        return ContractError(text, source=self.source, document=self.document_text,
                             operation=operation)


@dataclass(frozen=True, slots=True)
class CallbackSpec:
    """The credential an agency's callbacks (AgID NONBLOCK_PUSH) must carry: `[callback]`.

    `certificate` is the agency's registered X.509 certificate (or, for `modi`, a PEM public
    key). `private_key` is for the embedded default only: the simulators and the sandbox sign
    with it, and it is generated on first run (mode 0600) with a self-signed `certificate`;
    production leaves it out and names the certificate the agency was issued.
    """

    profile: str  #: "modi" or "wss"
    certificate: Path
    issuer: str  #: modi: the tokens' `iss` (default: the agency's name)
    private_key: Path | None = None


@dataclass(frozen=True)
class AgencySpec:
    """An agency and every contract version it speaks; `current` is the routes' default.

    `callback` is None when the agency's file declares no callback credential: such an agency
    cannot post callbacks to the hub at all.
    """

    name: str
    source: Path
    current: str
    contracts: Mapping[str, ContractSpec]
    callback: CallbackSpec | None = None

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


@dataclass(frozen=True)
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


class _Reader:
    """Reads one table of an agency file, naming the file and key in every error."""

    def __init__(self, source: Path, where: str, data: Any) -> None:
        if not isinstance(data, Mapping):
            raise ContractConfigError(f"{source.name}: [{where}] must be a table")
        self.source, self.where, self.data = source, where, data

    def fail(self, key: str, text: str) -> ContractConfigError:
        return ContractConfigError(f"{self.source.name}: {self.where}.{key}: {text}")

    def str(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.data.get(key, default)
        if value is None and required:
            raise self.fail(key, "missing")
        if value is not None and not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {value!r}")
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value

    def number(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value <= 0):
            raise self.fail(key, f"expected a positive number, got {value!r}")
        return None if value is None else float(value)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "expected a list of strings")
        return tuple(value)

    def table(self, key: str) -> Mapping[str, Any]:
        value = self.data.get(key, {})
        if not isinstance(value, Mapping):
            raise self.fail(key, "expected a table")
        return value

    def sub(self, key: str) -> _Reader | None:
        if key not in self.data:
            return None
        return _Reader(self.source, f"{self.where}.{key}", self.data[key])

    def only(self, allowed: frozenset[str]) -> None:
        unknown = set(self.data) - allowed
        if unknown:
            raise ContractConfigError(
                f"{self.source.name}: [{self.where}]: unknown keys {sorted(unknown)}; "
                f"allowed: {sorted(allowed)}"
            )


def _value(reader: _Reader, key: str, raw: Any) -> ValueSpec:
    if isinstance(raw, str):
        return ValueSpec(path=raw)
    if isinstance(raw, Mapping) and len(raw) == 1:
        (kind, value), = raw.items()
        if kind in ("path", "header", "const") and isinstance(value, (str, int)):
            return ValueSpec(**{kind: str(value)})
        if kind == "own" and value == "message_id":
            return ValueSpec(own="message_id")
    raise reader.fail(key, f"expected a path string or one of {{ path | header | const = ... }} "
                           f"or {{ own = \"message_id\" }}, got {raw!r}")


def _optional_value(reader: _Reader, key: str) -> ValueSpec | None:
    return _value(reader, key, reader.data[key]) if key in reader.data else None


def _kind(reader: _Reader, key: str, kind: Any) -> str:
    if not isinstance(kind, str) or kind.lower() not in OVERRIDE_KINDS:
        raise reader.fail(key, f"unknown kind {kind!r}; expected one of {sorted(OVERRIDE_KINDS)}")
    return kind.lower()


def _status(reader: _Reader) -> StatusSpec:
    reader.only(frozenset({"path", "ok", "errors", "text", "code"}))
    errors = reader.table("errors")
    ok = reader.strings("ok")
    if not ok:
        raise reader.fail("ok", "name at least one value that means success")
    return StatusSpec(
        value=_value(reader, "path", reader.data.get("path")),
        ok=ok,
        errors=tuple((str(k), _kind(reader, f"errors.{k}", v)) for k, v in errors.items()),
        text=_optional_value(reader, "text"),
        code=_optional_value(reader, "code"),
    )


def _limits(reader: _Reader | None) -> ReceiptLimits:
    if reader is None:
        return ReceiptLimits()
    reader.only(_LIMIT_KEYS)
    defaults = ReceiptLimits()
    found: dict[str, Any] = {}
    for key in _LIMIT_KEYS - {"protocol_number_pattern"}:
        value = reader.data.get(key, getattr(defaults, key))
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise reader.fail(key, f"expected a positive integer, got {value!r}")
        found[key] = value
    if found["protocol_number_max_length"] > PROTOCOL_NUMBER_COLUMN:
        raise reader.fail("protocol_number_max_length",
                          f"at most {PROTOCOL_NUMBER_COLUMN} (the stored protocol number's width)")
    pattern = reader.str("protocol_number_pattern", defaults.protocol_number_pattern) or ""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise reader.fail("protocol_number_pattern", f"not a regular expression: {exc}") from exc
    return ReceiptLimits(protocol_number_pattern=pattern, **found)


def _receipt(reader: _Reader | None, contract_where: str, source: Path) -> ReceiptSpec:
    if reader is None:
        raise ContractConfigError(f"{source.name}: [{contract_where}.receipt] is required: say "
                                  f"which reply field gives the protocol number")
    reader.only(_RECEIPT_KEYS)
    if "protocol_number" not in reader.data:
        raise reader.fail("protocol_number", "missing (for a reply without one, point at the "
                                             "field that stands for it and set acknowledgment)")
    each = reader.sub("references_each")
    references_each = None
    if each is not None:
        each.only(frozenset({"nodes", "name", "value"}))
        references_each = (each.str("nodes", required=True), each.str("name", required=True),
                           each.str("value", required=True))
    status = reader.sub("status")
    statuses = reader.data.get("http_statuses", [])
    if not isinstance(statuses, list) or not all(isinstance(s, int) for s in statuses):
        raise reader.fail("http_statuses", "expected a list of HTTP status codes")
    namespaces = reader.table("namespaces")
    return ReceiptSpec(
        protocol_number=_value(reader, "protocol_number", reader.data["protocol_number"]),
        protocolled_at=_optional_value(reader, "protocolled_at"),
        outcome=_optional_value(reader, "outcome"),
        outcome_code=_optional_value(reader, "outcome_code"),
        outcome_text=_optional_value(reader, "outcome_text"),
        message_id=_optional_value(reader, "message_id"),
        references=tuple((str(name), _value(reader, f"references.{name}", raw))
                         for name, raw in reader.table("references").items()),
        references_each=references_each,  # type: ignore[arg-type]
        references_object=reader.str("references_object"),
        status=_status(status) if status is not None else None,
        acknowledgment=reader.bool("acknowledgment", False),
        namespaces=tuple((str(k), str(v)) for k, v in namespaces.items()),
        http_statuses=tuple(statuses),
        limits=_limits(reader.sub("limits")),
    )


def _sandbox(reader: _Reader | None) -> SandboxSpec:
    if reader is None:
        return SandboxSpec()
    reader.only(frozenset({"dedupe", "prefix", "values", "faults", "pending_polls"}))
    dedupe = reader.str("dedupe", "") or ""
    if dedupe and dedupe != "digest" and not dedupe.startswith(("field:", "header:")):
        raise reader.fail("dedupe", "expected digest, field:<name> or header:<name>")
    faults = reader.data.get("faults", [])
    if not isinstance(faults, list) or not all(isinstance(f, Mapping) for f in faults):
        raise reader.fail("faults", "expected a list of fault rules (tables)")
    polls = reader.data.get("pending_polls", 1)
    if isinstance(polls, bool) or not isinstance(polls, int) or polls < 0:
        raise reader.fail("pending_polls", "expected a non-negative integer")
    return SandboxSpec(
        dedupe=dedupe,
        prefix=reader.str("prefix", "") or "",
        values=tuple((str(k), str(v)) for k, v in reader.table("values").items()),
        faults=tuple(dict(f) for f in faults),
        pending_polls=polls,
    )


def _nonblocking(reader: _Reader | None, resolve: Any) -> NonBlockingSpec | None:
    if reader is None:
        return None
    reader.only(frozenset({
        "correlation_header", "reply_to_header", "status_operation", "result_operation",
        "status_path", "done_values", "failed_values", "callback_wsdl", "callback_operation",
    }))
    callback = reader.str("callback_wsdl")
    return NonBlockingSpec(
        correlation_header=reader.str("correlation_header", "X-Correlation-ID") or "",
        reply_to_header=reader.str("reply_to_header", "X-ReplyTo") or "",
        status_operation=reader.str("status_operation"),
        result_operation=reader.str("result_operation"),
        status_path=reader.str("status_path"),
        done_values=reader.strings("done_values"),
        failed_values=reader.strings("failed_values"),
        callback_wsdl=resolve(callback) if callback else None,
        callback_operation=reader.str("callback_operation"),
    )


def _check_soap_nonblocking(reader: _Reader, pattern: str, spec: NonBlockingSpec | None) -> None:
    needed = (("status_operation", "result_operation", "status_path", "done_values")
              if pattern == "pull" else ("callback_wsdl", "callback_operation"))
    missing = [k for k in needed if spec is None or not getattr(spec, k)]
    if missing:
        raise reader.fail("nonblocking", f"a SOAP {pattern} contract names {', '.join(missing)}")


def _resolver(project_root: Path, external_dir: Path):  # type: ignore[no-untyped-def]
    def resolve(raw: str) -> Path:
        if raw.startswith(EXTERNAL_PREFIX):
            return external_dir / raw[len(EXTERNAL_PREFIX):]
        path = Path(raw)
        return path if path.is_absolute() else project_root / path

    return resolve


def _contract(agency: str, version: str, reader: _Reader, resolve: Any) -> ContractSpec:
    reader.only(_CONTRACT_KEYS)
    kind = reader.str("kind", required=True)
    if kind not in _KINDS:
        raise reader.fail("kind", f"expected one of {sorted(_KINDS)}")
    document_key = "wsdl" if kind == "soap" else "openapi"
    other = "openapi" if kind == "soap" else "wsdl"
    if other in reader.data:
        raise reader.fail(other, f"a {kind} contract names its document with `{document_key}`")
    document = reader.str(document_key, required=True)
    assert document is not None
    soap_version = reader.str("soap_version")
    if soap_version not in (None, "1.1", "1.2"):
        raise reader.fail("soap_version", "expected \"1.1\" or \"1.2\"")
    pattern = reader.str("pattern", "blocking")
    if pattern not in PATTERNS:
        raise reader.fail("pattern", f"expected one of {sorted(PATTERNS)}")
    envelope = reader.str("envelope", "crocevia")
    if envelope not in ("crocevia", "none"):
        raise reader.fail("envelope", "expected \"crocevia\" (the hub adds crv:messageHeader) "
                                      "or \"none\"")
    overrides = reader.table("fault_overrides")
    xsd = reader.str("xsd")
    receipt = _receipt(reader.sub("receipt"), reader.where, reader.source)
    nonblocking = _nonblocking(reader.sub("nonblocking"), resolve)
    if pattern != "blocking" and kind == "soap":
        _check_soap_nonblocking(reader, pattern, nonblocking)
    return ContractSpec(
        agency=agency,
        version=version,
        kind=kind,
        document=resolve(document),
        source=reader.source,
        document_text=document,
        receipt=receipt,
        operations=reader.strings("operations"),
        binding=reader.str("binding"),
        service=reader.str("service"),
        port=reader.str("port"),
        soap_version=soap_version,
        xsd=resolve(xsd) if xsd else None,
        envelope=envelope == "crocevia",
        message_id_header=reader.str("message_id_header"),
        endpoint=reader.str("endpoint"),
        connect_timeout=reader.number("connect_timeout"),
        read_timeout=reader.number("read_timeout"),
        pattern=pattern or "blocking",
        fault_overrides=tuple((str(k), _kind(reader, f"fault_overrides.{k}", v))
                              for k, v in overrides.items()),
        fault_code_fields=reader.strings("fault_code_fields"),
        sandbox=_sandbox(reader.sub("sandbox")),
        nonblocking=nonblocking,
    )


def _callback(reader: _Reader | None, agency: str, resolve: Any) -> CallbackSpec | None:
    if reader is None:
        return None
    reader.only(frozenset({"profile", "certificate", "issuer", "private_key", "description"}))
    profile = reader.str("profile", required=True)
    if profile not in CALLBACK_PROFILES:
        raise reader.fail("profile", f"expected one of {sorted(CALLBACK_PROFILES)}")
    certificate = reader.str("certificate", required=True)
    private_key = reader.str("private_key")
    assert profile is not None and certificate is not None
    return CallbackSpec(profile=profile, certificate=resolve(certificate),
                        issuer=reader.str("issuer") or agency,
                        private_key=resolve(private_key) if private_key else None)


def _agency(path: Path, resolve: Any) -> AgencySpec:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ContractConfigError(f"{path.name}: not valid TOML: {exc}") from exc
    reader = _Reader(path, "agency", data)
    reader.only(frozenset({"agency", "current", "description", "contracts", "callback"}))
    name = reader.str("agency", path.stem) or path.stem
    contracts_table = reader.table("contracts")
    if not contracts_table:
        raise reader.fail("contracts", "declare at least one version, e.g. [contracts.v1]")
    contracts = {
        str(version): _contract(name, str(version),
                                _Reader(path, f"contracts.{version}", raw), resolve)
        for version, raw in contracts_table.items()
    }
    current = reader.str("current") or (next(iter(contracts)) if len(contracts) == 1 else None)
    if current is None:
        raise reader.fail("current", "several versions are declared: say which one is current")
    if current not in contracts:
        raise reader.fail("current", f"{current!r} is not a declared version ({sorted(contracts)})")
    return AgencySpec(name=name, source=path, current=current, contracts=contracts,
                      callback=_callback(reader.sub("callback"), name, resolve))


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
    resolve = _resolver(project_root, external_dir)
    agencies: dict[str, AgencySpec] = {}
    for directory in dirs:
        if not directory.is_dir():
            raise ContractConfigError(f"agency directory {directory} not found")
        for path in sorted(directory.glob("*.toml")):
            spec = _agency(path, resolve)
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
