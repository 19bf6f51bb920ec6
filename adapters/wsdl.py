"""Loading a stored WSDL as declared in an agency file: binding, operations, schema, receipts.

One `WsdlContract` per declared contract version, built once and shared by the adapter, the
start-up check and `hub.py contracts check`. zeep parses the WSDL (strict, no DTD, no network)
and builds the envelopes; pre-send validation uses the declared XSD with lxml, or, for a
third-party WSDL without one, the schemas embedded in its `wsdl:types` with xmlschema.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
import zeep
import zeep.exceptions as zx
from lxml import etree
from zeep import ns as zeep_ns
from zeep.loader import ImportResolver
from zeep.wsa import WsAddressingPlugin
from zeep.wsdl.bindings.soap import Soap12Binding, SoapBinding

from adapters.base import DEFAULT_TIMEOUT, ErrorContext
from adapters.contracts import ContractError, ContractSpec
from adapters.receipts import XmlReceiptReader
from adapters.wsdl_render import RequestRenderer
from domain.errors import AdapterMisconfigured, MessageRejectedAsInvalid

if TYPE_CHECKING:
    import xmlschema
    from xmlschema.aliases import SourceArgType

__all__ = [
    "ENVELOPE_NS",
    "SoapOperation",
    "WsdlContract",
    "callback_contract",
    "hardened_parser",
    "http_headers",
    "load_wsdl_contract",
    "parse_reply",
    "types_schema",
]

#: SOAP version → envelope namespace.
ENVELOPE_NS = {"1.1": zeep_ns.SOAP_ENV_11, "1.2": zeep_ns.SOAP_ENV_12}
_WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
_XS_NS = "http://www.w3.org/2001/XMLSchema"
#: The address zeep's service proxy gets; the adapter posts to the configured endpoint.
_UNUSED_ADDRESS = "http://127.0.0.1:9/unused"


class _NoNetworkAdapter(requests.adapters.BaseAdapter):
    """Refuses every request: stored contracts are read from disk, never fetched."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        raise requests.exceptions.ConnectionError(
            f"network access is disabled while loading a stored contract ({request.url})"
        )

    def close(self) -> None:
        pass


def _offline_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    for prefix in ("http://", "https://"):
        session.mount(prefix, _NoNetworkAdapter())
    return session


def hardened_parser() -> etree.XMLParser:
    """No entities, no DTD, no network, libxml2's size limits kept."""
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )


def parse_reply(content: bytes) -> etree._Element | None:
    """A reply's root element, parsed with the hardened parser; None when it is not
    well-formed XML or carries a DTD (forbidden in replies, as in zeep's own loader)."""
    try:
        root = etree.fromstring(content, hardened_parser())
    except (etree.XMLSyntaxError, ValueError):
        return None
    if root.getroottree().docinfo.doctype:
        return None
    return root


def http_headers(version: str, action: str | None) -> dict[str, str]:
    """The HTTP headers of a SOAP call of `version` with SOAP action `action`."""
    if version == "1.2":
        # SOAP 1.2 carries the action as a media-type parameter (RFC 3902), not a header.
        content_type = "application/soap+xml; charset=utf-8"
        if action:
            content_type += f'; action="{action}"'
        return {"Content-Type": content_type, "Accept": "application/soap+xml, text/xml"}
    # SOAP 1.1 section 6.1.1: SOAPAction is a quoted URI, possibly empty.
    return {
        "Content-Type": "text/xml; charset=utf-8",
        "SOAPAction": f'"{action or ""}"',
        "Accept": "text/xml",
    }


@functools.cache
def types_schema(wsdl: Path) -> xmlschema.XMLSchemaBase:
    """The schemas of a WSDL's `wsdl:types` as one xmlschema object (imports and includes
    resolved from the WSDL's folder, local files only, XML defused).

    Raises:
        OSError, xmlschema errors: a missing or broken schema.
    """
    import xmlschema  # only a WSDL without its own XSD needs it (~11 MiB resident)

    root = etree.parse(str(wsdl), hardened_parser()).getroot()
    sources: list[SourceArgType] = []
    for schema in root.iterfind(f"{{{_WSDL_NS}}}types/{{{_XS_NS}}}schema"):
        # An embedded schema may use prefixes declared on wsdl:definitions: carry them over.
        nsmap: dict[str | None, str] = {**{k: v for k, v in root.nsmap.items() if k}, **schema.nsmap}
        copied = etree.Element(schema.tag, nsmap=nsmap, attrib=dict(schema.attrib))
        copied.extend(copy.deepcopy(child) for child in schema)
        sources.append(etree.tostring(copied, encoding="unicode"))
    if not sources:
        raise ValueError(f"{wsdl.name} embeds no xs:schema in wsdl:types")
    return xmlschema.XMLSchema10(
        sources if len(sources) > 1 else sources[0],
        base_url=str(wsdl.parent) + "/", allow="local", defuse="always",
    )


class _LxmlSchema:
    """Pre-send validation with a declared XSD (fast: libxml2).

    A valid message is told by one compiled schema that threads share without a lock (lxml
    gives each call its own libxml2 context; a valid document leaves the shared error log
    empty). An invalid one is validated again, under a lock, by a second copy compiled the
    first time one is needed, whose error log only that lock's holder reads. Under one lock
    for every call, the intake's threads checking their filings' messages queued for each
    agency's schema (issue 13).
    """

    def __init__(self, xsd: Path) -> None:
        self._xsd = xsd
        document = etree.parse(str(xsd), hardened_parser())
        self._schema = etree.XMLSchema(document)
        self._lock = threading.Lock()  # the reporting copy's error log lives on the instance
        self._reporting: etree.XMLSchema | None = None
        root = document.getroot()
        tns = root.get("targetNamespace")
        #: The global elements the document itself declares (`{ns}local`), not its imports'.
        self.elements = frozenset(
            etree.QName(tns, name).text
            for node in root.iterfind(f"{{{_XS_NS}}}element") if (name := node.get("name"))
        )

    def error(self, element: etree._Element) -> str | None:
        if self._schema.validate(element):
            return None
        with self._lock:
            if self._reporting is None:
                self._reporting = etree.XMLSchema(etree.parse(str(self._xsd), hardened_parser()))
            if self._reporting.validate(element):  # not expected: the shared copy said otherwise
                return None
            last = self._reporting.error_log.last_error
            return f"line {last.line}: {last.message}" if last is not None else "invalid"


class _TypesSchema:
    """Pre-send validation with the schemas embedded in the WSDL (xmlschema)."""

    def __init__(self, wsdl: Path) -> None:
        """Raises: ValueError (the embedded schemas do not load), OSError."""
        import xmlschema

        try:
            self.schema = types_schema(wsdl)
        except xmlschema.XMLSchemaException as exc:
            raise ValueError(str(exc)) from exc

    def error(self, element: etree._Element) -> str | None:
        # xmlschema walks lxml elements at run time, but its ElementProtocol and the lxml stubs disagree.
        for error in self.schema.iter_errors(element):  # type: ignore[arg-type]
            where = f" at {error.path}" if getattr(error, "path", None) else ""
            return f"{error.reason or error.message}{where}"
        return None


@dataclass(frozen=True, slots=True)
class SoapOperation:
    """One operation of the binding, with what calling and answering it need."""

    name: str
    binding_operation: Any  #: zeep SoapOperation, for process_reply
    headers: Mapping[str, str]  #: the HTTP headers of a call
    action: str
    input_element: str  #: `{ns}local` of the request body element
    output_element: str | None
    input_headers: tuple[str, ...]  #: SOAP header parts of the request, `{ns}local`
    output_headers: tuple[str, ...]
    faults: tuple[str, ...]  #: element names of the declared faults


def _qnames(header: Any) -> tuple[str, ...]:
    """The element names of a zeep header's parts (empty when it has none)."""
    if header is None:
        return ()
    names = []
    for _, element in getattr(getattr(header, "type", None), "elements", []) or []:
        qname = getattr(element, "qname", None)
        if qname is not None:
            names.append(qname.text if isinstance(qname, etree.QName) else str(qname))
    return tuple(names)


def _fault_elements(operation: Any) -> tuple[str, ...]:
    found = []
    for fault in (getattr(operation, "faults", None) or {}).values():
        for part in getattr(getattr(fault, "message", None), "parts", {}).values():
            element = getattr(part, "element", None)
            if element is not None and getattr(element, "qname", None) is not None:
                found.append(element.qname.text)
    return tuple(found)


def _soap_version(binding: Any) -> str:
    return "1.2" if isinstance(binding, Soap12Binding) else "1.1"


class WsdlContract:
    """A SOAP contract, loaded: use `load_wsdl_contract(spec)`, which caches it.

    Raises (constructor):
        ContractError: missing document, no usable binding, a declared operation missing.
    """

    def __init__(self, spec: ContractSpec) -> None:
        self.spec = spec
        if not spec.document.is_file():
            raise spec.error(f"WSDL not found at {spec.document}")
        settings = zeep.Settings(
            strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True,
            xml_huge_tree=False,
        )
        transport = zeep.Transport(
            session=_offline_session(), timeout=DEFAULT_TIMEOUT.read,
            operation_timeout=DEFAULT_TIMEOUT.read,
        )
        try:
            self.client = zeep.Client(str(spec.document), transport=transport, settings=settings)
        except (zx.Error, etree.LxmlError, OSError, requests.RequestException) as exc:
            raise spec.error(f"the WSDL does not load: {exc}") from exc
        self.binding = self._binding()
        self.soap_version = _soap_version(self.binding)
        if spec.soap_version and spec.soap_version != self.soap_version:
            raise spec.error(f"binding {self.binding.name.localname} is SOAP {self.soap_version}, "
                             f"not {spec.soap_version}")
        self.body_tag = f"{{{ENVELOPE_NS[self.soap_version]}}}Body"
        self.header_tag = f"{{{ENVELOPE_NS[self.soap_version]}}}Header"
        self._fault_path = f"{self.body_tag}/{{{ENVELOPE_NS[self.soap_version]}}}Fault"
        self._parsers = threading.local()  #: `_parse`'s parser, one per thread
        self.operations = {name: self._operation(name) for name in self._available()}
        nb = spec.nonblocking
        late = (nb.status_operation, nb.result_operation) if nb is not None else ()
        for name in (*spec.operations, *(n for n in late if n)):
            if name not in self.operations:
                raise spec.error(self._missing(name), operation=name)
        if nb is not None and nb.callback_wsdl is not None:
            callback_contract(spec).operation(nb.callback_operation or "")
        self._service = self.client.create_service(self.binding.name.text, _UNUSED_ADDRESS)
        self._wsdl_address = self._port_address()
        try:
            self.validator: Any = (_LxmlSchema(spec.xsd) if spec.xsd is not None
                                   else _TypesSchema(spec.document))
        except (OSError, etree.LxmlError, ValueError) as exc:
            schema = spec.xsd.name if spec.xsd is not None else "the schemas in wsdl:types"
            raise spec.error(f"{schema} does not load: {exc}") from exc
        self.receipt = XmlReceiptReader(spec.receipt, spec)
        self._envelope_tag = f"{{{ENVELOPE_NS[self.soap_version]}}}Envelope"
        self._renderer = RequestRenderer(
            self.binding, {name: op.binding_operation for name, op in self.operations.items()})
        #: Operations whose replies are first checked with the declared XSD (libxml2) rather
        #: than deserialized by zeep: see `_reply_fits_schema`.
        self._schema_replies = frozenset(
            name for name, op in self.operations.items()
            if isinstance(self.validator, _LxmlSchema) and op.output_element in self.validator.elements
            and not op.output_headers and getattr(op.binding_operation.output, "body", None) is not None
        )

    def __repr__(self) -> str:
        return f"WsdlContract({self.spec.ref!r}, {self.spec.document_text!r})"

    # ----- resolution -----

    def _binding(self) -> Any:
        spec, wsdl = self.spec, self.client.wsdl
        if spec.binding:
            for qname, binding in wsdl.bindings.items():
                if spec.binding in (qname, etree.QName(qname).localname):
                    return binding
            raise spec.error(f"binding {spec.binding!r} is not in the WSDL; it has "
                             f"{sorted(etree.QName(q).localname for q in wsdl.bindings)}")
        candidates = []
        for service in wsdl.services.values():
            if spec.service and spec.service not in (service.name, f"{{{_tns(wsdl)}}}{service.name}"):
                continue
            for port in service.ports.values():
                if spec.port and port.name != spec.port:
                    continue
                if not isinstance(port.binding, SoapBinding):
                    continue
                if spec.soap_version and _soap_version(port.binding) != spec.soap_version:
                    continue
                candidates.append((service.name, port.name, port.binding))
        if len(candidates) == 1:
            return candidates[0][2]
        listed = [f"{s}/{p} (SOAP {_soap_version(b)})" for s, p, b in candidates]
        if not candidates:
            raise spec.error("no SOAP port matches service/port/soap_version in the WSDL")
        raise spec.error(f"several SOAP ports match {listed}: name one with service and port, "
                         f"or binding")

    def _port_address(self) -> str:
        """The WSDL's `soap:address` of the bound port (the default `To` of a contract check)."""
        for service in self.client.wsdl.services.values():
            for port in service.ports.values():
                if port.binding is self.binding:
                    return str(port.binding_options.get("address", ""))
        return _UNUSED_ADDRESS

    def _available(self) -> list[str]:
        return sorted(self.binding._operations)

    def _missing(self, name: str) -> str:
        return (f"not in binding {self.binding.name.localname} of the WSDL; it has "
                f"{self._available()}")

    def _operation(self, name: str) -> SoapOperation:
        operation = self.binding.get(name)
        body_in = getattr(operation.input, "body", None)
        body_out = getattr(operation.output, "body", None) if operation.output else None
        return SoapOperation(
            name=name,
            binding_operation=operation,
            headers=http_headers(self.soap_version, operation.soapaction),
            action=operation.soapaction or "",
            input_element=body_in.qname.text if body_in is not None else "",
            output_element=body_out.qname.text if body_out is not None else None,
            input_headers=_qnames(getattr(operation.input, "header", None)),
            output_headers=_qnames(getattr(operation.output, "header", None)),
            faults=_fault_elements(operation),
        )

    def operation(self, name: str) -> SoapOperation:
        """The operation `name`.

        Raises:
            ContractError: it is not in the binding, or not among the declared operations.
        """
        if name not in self.operations:
            raise self.spec.error(self._missing(name), operation=name)
        if self.spec.operations and name not in self.spec.operations:
            raise self.spec.error(f"in the WSDL, but not among the contract's operations "
                                  f"{list(self.spec.operations)}", operation=name)
        return self.operations[name]

    # ----- messages -----

    def build(self, name: str, content: Mapping[str, Any], ctx: ErrorContext,
              soap_headers: Mapping[str, Any] | None = None, *,
              address: str | None = None) -> etree._Element:
        """The envelope of one call, its body validated against the contract's schema.

        Args:
            address: the endpoint the call goes to, for WS-Addressing `To` when the operation
                declares a `wsam:Action`; None: the WSDL's own address (contract checks only).

        Raises:
            AdapterMisconfigured: the operation is not in the contract; nothing was built.
            MessageRejectedAsInvalid: the content does not fit the operation or the schema.
        """
        try:
            self.operation(name)
        except ContractError as exc:
            raise ctx.build(AdapterMisconfigured, str(exc), code="UNKNOWN_OPERATION") from exc
        if not soap_headers and not (self.client.plugins or self.client.wsse):
            # The common request, rendered directly (`adapters.wsdl_render`); should the schema
            # refuse it, zeep builds it again below, so that a refusal reads as it always has.
            rendered = self._renderer.render(name, content)
            if rendered is not None:
                rendered = self._addressed(name, rendered, address)
                if self._body_problem(rendered) is None:
                    return rendered
        kwargs = dict(content)
        if soap_headers:
            kwargs["_soapheaders"] = dict(soap_headers)
        try:
            operation = self.operations[name].binding_operation
            if self.client.plugins or self.client.wsse:
                envelope = self.client.create_message(self._service, name, **kwargs)
            else:
                # What `create_message` does without plugins or wsse: the operation's input
                # message serializes the envelope (a few % cheaper).
                envelope = self._addressed(name, operation.create(**kwargs).content, address)
        except (zx.Error, TypeError, ValueError) as exc:
            # TypeError/ValueError: zeep's answer to unknown or unconvertible fields.
            raise ctx.build(MessageRejectedAsInvalid,
                            f"the message does not fit the contract: {exc}") from exc
        body = envelope.find(self.body_tag)
        if body is None or len(body) == 0:
            raise ctx.build(AdapterMisconfigured, "zeep built an envelope without a body element")
        problem = self._body_problem(envelope)
        if problem is not None:
            raise ctx.build(MessageRejectedAsInvalid,
                            f"the message fails the {self.spec.ref} schema: {problem}")
        return envelope

    def _addressed(self, name: str, envelope: etree._Element, address: str | None) -> etree._Element:
        """The envelope with its WS-Addressing headers, when the operation declares a `wsam:Action`."""
        operation = self.operations[name].binding_operation
        if operation.abstract.wsa_action:
            # zeep's `create_message` addresses the WSDL's own port (a production
            # address), whatever service it is given: `To` must name the endpoint the
            # hub actually calls, configured or sandbox (WS-Addressing 1.0 §3.2).
            envelope, _ = WsAddressingPlugin(address or self._wsdl_address).egress(
                envelope, {}, operation, {})
        return envelope

    def _body_problem(self, envelope: etree._Element) -> str | None:
        """Why the envelope's body element fails the contract's schema, or None."""
        body = envelope.find(self.body_tag)
        if body is None or len(body) == 0:
            return "no body element"
        result: str | None = self.validator.error(body[0])
        return result

    def serialize(self, name: str, content: Mapping[str, Any], ctx: ErrorContext,
                  soap_headers: Mapping[str, Any] | None = None, *,
                  address: str | None = None) -> bytes:
        """`build`, as the bytes that go on the wire."""
        envelope = self.build(name, content, ctx, soap_headers, address=address)
        return etree.tostring(envelope, encoding="utf-8", xml_declaration=True)

    def check_reply(self, operation: SoapOperation, response: Any) -> etree._Element | None:
        """Check a reply as zeep's `process_reply` does, parsing it once, and return the body
        element of that same tree for the receipt mapping (None if the body is empty).

        The common reply (non-empty, not multipart, no zeep plugins) is parsed by zeep's own
        loader (same settings: strict, no DTD, no entities), its fault raised by the binding
        and its body checked by the operation's `process_reply`, as zeep does in one call; the
        rest goes through `binding.process_reply` and a second parse, as before.

        Args:
            operation: the operation called.
            response: the HTTP reply (`status_code`, `headers`, `content`).

        Raises:
            zeep.exceptions.Fault: the reply is a SOAP fault, or a non-200 one.
            zeep.exceptions.Error, lxml errors: not XML (a `TransportError` carrying the
                status, as zeep raises it), forbidden constructs, or not the contract's reply.
        """
        content = response.content
        client = self.client
        if (not content or client.wsse or client.plugins
                or "multipart/related" in response.headers.get("Content-Type", "").lower()):
            self.binding.process_reply(client, operation.binding_operation, response)
            return self.payload(content)
        status = response.status_code
        try:
            doc = self._parse(content)
        except zx.XMLSyntaxError as exc:
            raise zx.TransportError(
                f"Server returned response ({status}) with invalid XML: {exc}.\n"
                f"Content: {content!r}", status_code=status, content=content) from exc
        if status != 200 or doc.find(self._fault_path) is not None:
            self.binding.process_error(doc, operation.binding_operation)  # raises the Fault
        body = doc.find(self.body_tag)
        if body is not None and not len(body):
            return None  # an empty Body: zeep would fail on it with an IndexError
        if not self._reply_fits_schema(operation, doc, body):
            operation.binding_operation.process_reply(doc)  # also refuses another envelope
        return body[0] if body is not None else None

    def _parse(self, content: bytes) -> etree._Element:
        """A reply parsed as zeep's `loader.parse_xml` parses it (the client's settings: comments
        removed, no entities, strict, no huge trees, no DTD; zeep's resolver), with a parser made
        once per thread rather than once per reply (lxml's parsers are not shared by threads).

        Raises:
            zeep.exceptions.XMLSyntaxError, DTDForbidden, EntitiesForbidden: as `parse_xml`.
        """
        settings = self.client.settings
        parser: etree.XMLParser | None = getattr(self._parsers, "parser", None)
        if parser is None:
            parser = etree.XMLParser(remove_comments=True, resolve_entities=False, recover=not settings.strict,
                                     huge_tree=settings.xml_huge_tree)
            parser.resolvers.add(ImportResolver(self.client.transport, settings))
            self._parsers.parser = parser
        try:
            root = etree.fromstring(content, parser=parser, base_url=None)
        except etree.XMLSyntaxError as exc:
            raise zx.XMLSyntaxError(f"Invalid XML content received ({exc.msg})", content=content) from exc
        docinfo = root.getroottree().docinfo
        if docinfo.doctype and settings.forbid_dtd:
            raise zx.DTDForbidden(docinfo.doctype, docinfo.system_url, docinfo.public_id)
        if settings.forbid_entities:
            for dtd in (docinfo.internalDTD, docinfo.externalDTD):
                for entity in dtd.iterentities() if dtd is not None else ():
                    raise zx.EntitiesForbidden(entity.name, entity.content)
        return root

    def _reply_fits_schema(self, operation: SoapOperation, doc: etree._Element,
                           body: etree._Element | None) -> bool:
        """Whether the reply is the operation's declared output, valid against the declared XSD.

        The XSD is stricter than zeep's strict parsing (facets included), so a reply it accepts
        is one zeep's `process_reply` accepts too; only the replies it does not vouch for (or
        whose contract declares reply headers for zeep to read) go through zeep, unchanged. It
        is several times cheaper: zeep builds a value object of the whole reply, only to have
        it thrown away (the receipt is read from the tree by the declared mapping).
        """
        if (operation.name not in self._schema_replies or doc.tag != self._envelope_tag
                or body is None or len(body) != 1 or body[0].tag != operation.output_element):
            return False
        return bool(self.validator.error(body[0]) is None)

    def payload(self, content: bytes) -> etree._Element | None:
        """The body element of a reply, parsed with the hardened parser (None if absent)."""
        root = parse_reply(content)
        if root is None:
            return None
        body = root.find(self.body_tag)
        if body is None or len(body) == 0:
            return None
        return body[0]


def callback_contract(spec: ContractSpec) -> WsdlContract:
    """The consumer's callback WSDL of a PUSH contract, loaded as a contract of its own.

    Raises:
        ContractError: it does not load, or lacks the callback operation.
    """
    nb = spec.nonblocking
    if nb is None or nb.callback_wsdl is None:
        raise spec.error("the contract declares no callback WSDL")
    callback_spec = dataclasses.replace(
        spec, version=f"{spec.version}-callback", document=nb.callback_wsdl,
        document_text=str(nb.callback_wsdl.name), binding=None, service=None, port=None,
        soap_version=None, xsd=None, operations=(nb.callback_operation or "",),
        pattern="blocking", nonblocking=None)
    return load_wsdl_contract(callback_spec)


def _tns(wsdl: Any) -> str:
    try:
        return etree.parse(str(wsdl.location), hardened_parser()).getroot().get("targetNamespace", "")
    except (OSError, etree.LxmlError):
        return ""


_LOCK = threading.RLock()  # re-entrant: a PUSH contract loads its callback WSDL
_LOADED: dict[ContractSpec, WsdlContract] = {}


def load_wsdl_contract(spec: ContractSpec) -> WsdlContract:
    """The loaded contract of `spec`, built once per process.

    Raises:
        ContractError: see `WsdlContract`.
    """
    with _LOCK:
        loaded = _LOADED.get(spec)
        if loaded is None:
            loaded = _LOADED[spec] = WsdlContract(spec)
        return loaded
