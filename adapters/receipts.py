"""Receipt mappings: which fields of an agency's reply give the protocol number, timestamp and
references, declared per contract (`[contracts.<v>.receipt]`) instead of coded per agency.

SOAP replies are read with XPath 1.0 over the body element; REST replies with dotted paths
into the JSON body, HTTP headers or constants. A business status inside a successful reply
(the ISEE `Esito`) is checked before anything is read, and its error values map onto the
delivery error tree like fault overrides do; a code beside it (`[receipt.status] code`) is looked
up in the contract's fault overrides first.

Every receipt is bounded before anyone stores it (`ReceiptLimits`): the protocol number's
length and characters, the number and size of references, the stored size, and the fields
that go into fixed-width columns. Beyond them the reply is an `AgencyProtocolError` naming the
reason (transient: retried, then undeliverable); callbacks are read by the same readers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from adapters.base import OVERRIDE_KINDS, ErrorContext
from adapters.contracts import ContractSpec, ReceiptLimits, ReceiptSpec, StatusSpec, ValueSpec
from domain.errors import AgencyProtocolError, DeliveryError
from domain.messages import Receipt

__all__ = ["JsonReceiptReader", "XmlReceiptReader", "check_acknowledgment", "check_receipt",
           "now_stamp"]

#: Widths of the columns a receipt's other fields are stored in (storage/tables.py).
_COLUMNS = (("protocolled_at", 40), ("outcome", 32), ("outcome_code", 64))
#: `deliveries.correlation_id`; a poll URL is kept to a sane URL length.
_CORRELATION_ID_MAX, _POLL_URL_MAX = 128, 2048


def _shown(value: str) -> str:
    """A bounded rendering of an outside value for an error text (never the whole of it)."""
    return repr(value[:32] + "…") if len(value) > 32 else repr(value)


def _refuse(ctx: ErrorContext, text: str, code: str) -> DeliveryError:
    return ctx.build(AgencyProtocolError, text, code=code)


def check_receipt(receipt: Receipt, limits: ReceiptLimits, ctx: ErrorContext) -> Receipt:
    """`receipt` itself when it keeps within `limits`.

    Raises:
        AgencyProtocolError: the first limit it exceeds, named in the text and the code.
    """
    protocol = receipt.protocol_number
    if len(protocol) > limits.protocol_number_max_length:
        raise _refuse(ctx, f"protocol number of {len(protocol)} characters, more than "
                           f"{limits.protocol_number_max_length}", "PROTOCOL_NUMBER_TOO_LONG")
    if protocol and limits.protocol_number_re.fullmatch(protocol) is None:
        raise _refuse(ctx, f"protocol number {_shown(protocol)} does not match "
                           f"{limits.protocol_number_pattern!r}", "PROTOCOL_NUMBER_INVALID")
    for name, width in _COLUMNS:
        value = getattr(receipt, name)
        if len(value) > width:
            raise _refuse(ctx, f"{name} of {len(value)} characters, more than {width}",
                          "RECEIPT_FIELD_TOO_LONG")
    references = receipt.references
    if len(references) > limits.max_references:
        raise _refuse(ctx, f"{len(references)} references, more than {limits.max_references}",
                      "TOO_MANY_REFERENCES")
    size = sum(len(v.encode()) for v in (protocol, receipt.protocolled_at, receipt.outcome,
                                         receipt.outcome_code, receipt.outcome_text))
    for name, value in references.items():
        if max(len(name), len(value)) > limits.reference_max_length:
            raise _refuse(ctx, f"reference {_shown(name)} longer than "
                               f"{limits.reference_max_length} characters", "REFERENCE_TOO_LONG")
        size += len(name.encode()) + len(value.encode())
    if size > limits.max_receipt_bytes:
        raise _refuse(ctx, f"receipt of {size} bytes, more than {limits.max_receipt_bytes}",
                      "RECEIPT_TOO_LARGE")
    return receipt


def check_acknowledgment(receipt: Receipt, ctx: ErrorContext) -> Receipt:
    """`receipt` (a taking-in-charge) when its correlation id and poll URL fit their columns.

    Raises:
        AgencyProtocolError: either is longer than it may be.
    """
    if len(receipt.correlation_id or "") > _CORRELATION_ID_MAX:
        raise _refuse(ctx, f"correlation id longer than {_CORRELATION_ID_MAX} characters",
                      "CORRELATION_ID_TOO_LONG")
    if len(receipt.poll_url or "") > _POLL_URL_MAX:
        raise _refuse(ctx, f"status URL longer than {_POLL_URL_MAX} characters", "POLL_URL_TOO_LONG")
    return receipt


def now_stamp() -> str:
    """When the hub read a reply that carries no timestamp of its own (xs:dateTime, UTC)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _scalar(result: Any) -> str:
    """An XPath result as text: the first node's text or attribute value, a string, a number."""
    if isinstance(result, list):
        if not result:
            return ""
        first = result[0]
        if isinstance(first, etree._Element):
            return (first.text or "").strip()
        return str(first).strip()
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, float):
        return str(int(result)) if result.is_integer() else str(result)
    return "" if result is None else str(result).strip()


class _Reader:
    """Shared logic of the XML and JSON readers: status check, then the receipt fields."""

    spec: ReceiptSpec

    def _get(self, value: ValueSpec | None, reply: Any, headers: Mapping[str, str], message_id: str) -> str:
        if value is None:
            return ""
        if value.const is not None:
            return value.const
        if value.header is not None:
            return headers.get(value.header.lower(), "")
        if value.own is not None:
            return message_id
        return self._at(value.path or "", reply)

    def _at(self, path: str, reply: Any) -> str:
        raise NotImplementedError

    def _references(self, reply: Any, headers: Mapping[str, str], message_id: str,
                    ctx: ErrorContext) -> dict[str, str]:
        return {name: text for name, value in self.spec.references
                if (text := self._get(value, reply, headers, message_id))}

    def _too_many(self, count: int, ctx: ErrorContext) -> None:
        """Stop reading a list of references as soon as it is longer than allowed."""
        limit = self.spec.limits.max_references
        if count > limit:
            raise _refuse(ctx, f"more than {limit} references", "TOO_MANY_REFERENCES")

    def _check_status(self, status: StatusSpec, reply: Any, headers: Mapping[str, str],
                      message_id: str, ctx: ErrorContext,
                      codes: Mapping[str, type[DeliveryError]]) -> None:
        value = self._get(status.value, reply, headers, message_id)
        if value in status.ok:
            return
        # Outside text: bounded before it goes into an error (and from there to the store).
        text = (self._get(status.text, reply, headers, message_id)[:1000]
                or f"the agency answered {_shown(value)}")
        # The agency's own code (pagoPA `faultCode`) is more precise than the status (`KO`).
        code = self._get(status.code, reply, headers, message_id)[:64]
        if code and code in codes:
            raise ctx.build(codes[code], text, code=code)
        kinds = dict(status.errors)
        if value in kinds:
            raise ctx.build(OVERRIDE_KINDS[kinds[value]], text, code=code or value)
        raise ctx.build(AgencyProtocolError, f"unexpected status {_shown(value)} in the reply: {text}",
                        code=code or value or "PROTOCOL")

    def receipt(self, reply: Any, headers: Mapping[str, str], message_id: str,
                ctx: ErrorContext, codes: Mapping[str, type[DeliveryError]] | None = None) -> Receipt:
        """Read the receipt, bounded by the contract's `ReceiptLimits`.

        Args:
            codes: the agency's fault codes → error class (the adapter's resolved overrides),
                for the code beside a status that is not ok.

        Raises:
            DeliveryError: a status that is not ok (its configured kind), no protocol number,
                a receipt echoing another message id, or one beyond the limits
                (AgencyProtocolError).
        """
        spec = self.spec
        # The reader is shared by the worker and the API's callbacks: nothing per call on self.
        if spec.status is not None:
            self._check_status(spec.status, reply, headers, message_id, ctx, codes or {})
        protocol = self._get(spec.protocol_number, reply, headers, message_id)
        if not protocol:
            what = "acknowledgment" if spec.acknowledgment else "protocol number"
            raise ctx.build(AgencyProtocolError, f"the reply holds no {what}", code="PROTOCOL")
        echoed = self._get(spec.message_id, reply, headers, message_id)
        if echoed and echoed != message_id:
            raise ctx.build(AgencyProtocolError, "the receipt is for another message id",
                            code="PROTOCOL")
        return check_receipt(Receipt(
            protocol_number=protocol,
            protocolled_at=self._get(spec.protocolled_at, reply, headers, message_id) or now_stamp(),
            outcome=self._get(spec.outcome, reply, headers, message_id) or "ACQUISITA",
            references=self._references(reply, headers, message_id, ctx),
            outcome_code=self._get(spec.outcome_code, reply, headers, message_id),
            outcome_text=self._get(spec.outcome_text, reply, headers, message_id),
        ), spec.limits, ctx)


class XmlReceiptReader(_Reader):
    """Reads receipts out of a SOAP reply's body element with the declared XPaths.

    Raises (constructor):
        ContractError: an XPath that does not compile, naming the contract file.
    """

    def __init__(self, spec: ReceiptSpec, contract: ContractSpec) -> None:
        self.spec = spec
        self._namespaces = dict(spec.namespaces)
        self._compiled: dict[str, etree.XPath] = {}
        for path in spec.paths() + list(spec.references_each or ()):
            self._xpath(path, contract)

    def _xpath(self, path: str, contract: ContractSpec | None = None) -> etree.XPath:
        compiled = self._compiled.get(path)
        if compiled is None:
            try:
                compiled = etree.XPath(path, namespaces=self._namespaces, smart_strings=False)
            except etree.XPathError as exc:
                raise (contract.error(f"receipt path {path!r} is not XPath 1.0: {exc}")
                       if contract else ValueError(path)) from exc
            self._compiled[path] = compiled
        return compiled

    def _at(self, path: str, reply: Any) -> str:
        try:
            return _scalar(self._xpath(path)(reply))
        except etree.XPathEvalError:
            return ""

    def _references(self, reply: Any, headers: Mapping[str, str], message_id: str,
                    ctx: ErrorContext) -> dict[str, str]:
        found = super()._references(reply, headers, message_id, ctx)
        if self.spec.references_each is not None:
            nodes, name, value = self.spec.references_each
            listed = self._xpath(nodes)(reply) or []
            self._too_many(len(found) + len(listed), ctx)
            for node in listed:
                key = _scalar(self._xpath(name)(node))
                if key:
                    found[key] = _scalar(self._xpath(value)(node))
        return found


def _dotted(body: Any, path: str) -> Any:
    node = body
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


class JsonReceiptReader(_Reader):
    """Reads receipts out of a REST reply: dotted paths into the JSON body, or headers."""

    def __init__(self, spec: ReceiptSpec) -> None:
        self.spec = spec

    def _at(self, path: str, reply: Any) -> str:
        found = _dotted(reply, path)
        if found is None or isinstance(found, (Mapping, list)):
            return ""
        if isinstance(found, bool):
            return "true" if found else "false"
        return str(found)

    def _references(self, reply: Any, headers: Mapping[str, str], message_id: str,
                    ctx: ErrorContext) -> dict[str, str]:
        found = super()._references(reply, headers, message_id, ctx)
        if self.spec.references_object:
            table = _dotted(reply, self.spec.references_object)
            if isinstance(table, Mapping):
                self._too_many(len(found) + len(table), ctx)
                found.update({str(k): str(v) for k, v in table.items()})
        return found
