"""Receipt mappings: which fields of an agency's reply give the protocol number, timestamp and
references, declared per contract (`[contracts.<v>.receipt]`) instead of coded per agency.

SOAP replies are read with XPath 1.0 over the body element; REST replies with dotted paths
into the JSON body, HTTP headers or constants. A business status inside a successful reply
(the ISEE `Esito`) is checked before anything is read, and its error values map onto the
delivery error tree like fault overrides do.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from adapters.base import OVERRIDE_KINDS, ErrorContext
from adapters.contracts import ContractSpec, ReceiptSpec, StatusSpec, ValueSpec
from domain.errors import AgencyProtocolError
from domain.messages import Receipt

__all__ = ["JsonReceiptReader", "XmlReceiptReader", "now_stamp"]


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

    def _references(self, reply: Any, headers: Mapping[str, str], message_id: str) -> dict[str, str]:
        return {name: text for name, value in self.spec.references
                if (text := self._get(value, reply, headers, message_id))}

    def _check_status(self, status: StatusSpec, reply: Any, headers: Mapping[str, str],
                      message_id: str, ctx: ErrorContext) -> None:
        value = self._get(status.value, reply, headers, message_id)
        if value in status.ok:
            return
        text = self._get(status.text, reply, headers, message_id) or f"the agency answered {value!r}"
        kinds = dict(status.errors)
        if value in kinds:
            raise ctx.build(OVERRIDE_KINDS[kinds[value]], text, code=value)
        raise ctx.build(AgencyProtocolError, f"unexpected status {value!r} in the reply: {text}",
                        code=value or "PROTOCOL")

    def receipt(self, reply: Any, headers: Mapping[str, str], message_id: str,
                ctx: ErrorContext) -> Receipt:
        """Read the receipt.

        Raises:
            DeliveryError: a status that is not ok (its configured kind), no protocol number,
                or a receipt echoing another message id (AgencyProtocolError).
        """
        spec = self.spec
        # The reader is shared by the worker and the API's callbacks: nothing per call on self.
        if spec.status is not None:
            self._check_status(spec.status, reply, headers, message_id, ctx)
        protocol = self._get(spec.protocol_number, reply, headers, message_id)
        if not protocol:
            what = "acknowledgment" if spec.acknowledgment else "protocol number"
            raise ctx.build(AgencyProtocolError, f"the reply holds no {what}", code="PROTOCOL")
        echoed = self._get(spec.message_id, reply, headers, message_id)
        if echoed and echoed != message_id:
            raise ctx.build(AgencyProtocolError, "the receipt is for another message id",
                            code="PROTOCOL")
        return Receipt(
            protocol_number=protocol,
            protocolled_at=self._get(spec.protocolled_at, reply, headers, message_id) or now_stamp(),
            outcome=self._get(spec.outcome, reply, headers, message_id) or "ACQUISITA",
            references=self._references(reply, headers, message_id),
            outcome_code=self._get(spec.outcome_code, reply, headers, message_id),
            outcome_text=self._get(spec.outcome_text, reply, headers, message_id),
        )


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

    def _references(self, reply: Any, headers: Mapping[str, str], message_id: str) -> dict[str, str]:
        found = super()._references(reply, headers, message_id)
        if self.spec.references_each is not None:
            nodes, name, value = self.spec.references_each
            for node in self._xpath(nodes)(reply) or []:
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

    def _references(self, reply: Any, headers: Mapping[str, str], message_id: str) -> dict[str, str]:
        found = super()._references(reply, headers, message_id)
        if self.spec.references_object:
            table = _dotted(reply, self.spec.references_object)
            if isinstance(table, Mapping):
                found.update({str(k): str(v) for k, v in table.items()})
        return found
