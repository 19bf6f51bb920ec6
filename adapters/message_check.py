"""Check a recipient's message against its agency contract at intake, without sending it.

The mapping already runs when a filing is accepted; a message that its agency's schema would
refuse is better refused to the portal then, naming the agency and the field, than parked as
undeliverable later. The contracts are the ones loaded (and their validators compiled) at
start-up; each message is built and validated once, as the adapter would before sending.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jsonschema
import orjson
import zeep.exceptions as zx
from lxml import etree

from adapters.base import ErrorContext
from adapters.contracts import ContractError
from adapters.factory import ContractSet
from adapters.openapi import OpenApiContract
from adapters.wsdl import WsdlContract
from domain.drafts import MessagePreview
from domain.errors import DeliveryError, MessageRejectedAsInvalid
from domain.intake import MessageProblem

__all__ = ["MessageChecker"]

#: libxml2: "Element '{ns}name': <why>"; a missing element shows as the next one being
#: "not expected", with the one wanted under "Expected is ( {ns}name )".
_LIBXML_ELEMENT = re.compile(r"Element '(?:\{[^}]*\})?([^']+)': (.*)$", re.DOTALL)
_LIBXML_EXPECTED = re.compile(r"This element is not expected\. Expected is (?:one of )?\( (?:\{[^}]*\})?([^ ,)]+)")
_UNEXPECTED_ARGUMENT = re.compile(r"unexpected keyword argument '([^']+)'")
_MISSING = "required by the agency schema, and the filing gives no value for it"


def _field_and_reason(error: MessageRejectedAsInvalid) -> tuple[str, str]:
    """The agency message's field (dotted) and why it fails, from the validator that failed."""
    cause = error.__cause__
    if isinstance(cause, zx.ValidationError):  # zeep, building the envelope
        path = [str(p) for p in (cause.path or [])[1:] if isinstance(p, str)]  # [0] is the request
        message = str(cause.message or "")
        return ".".join(path), _MISSING if message.startswith("Missing element") else message
    if isinstance(cause, jsonschema.ValidationError):  # an OpenAPI request schema
        path = [str(p) for p in cause.absolute_path if isinstance(p, str)]
        if cause.validator == "required" and isinstance(cause.instance, Mapping):
            required = cause.validator_value if isinstance(cause.validator_value, list) else []
            missing = [k for k in required if k not in cause.instance]
            return ".".join([*path, *missing[:1]]), _MISSING
        return ".".join(path), cause.message
    if isinstance(cause, TypeError):  # zeep: a field the operation does not have
        found = _UNEXPECTED_ARGUMENT.search(str(cause))
        if found:
            return found.group(1), "not a field of the agency's message"
    found = _LIBXML_ELEMENT.search(error.text)  # the declared XSD, after zeep built the body
    if found:
        expected = _LIBXML_EXPECTED.search(found.group(2))
        if expected:
            return expected.group(1), _MISSING
        return found.group(1), re.sub(r"^\[facet '[^']*'\]\s*", "", found.group(2)).strip()
    return "", error.text


class MessageChecker:
    """Builds and validates one planned message as its adapter will, without sending it.

    Args:
        contracts: the agency contracts loaded at start-up (their validators are reused).
    """

    def __init__(self, contracts: ContractSet) -> None:
        self._contracts = contracts
        #: (agency, version) → its loaded contract: resolved once, not per message (a
        #: contract that fails to resolve is not kept, and is tried again next time).
        self._loaded: dict[tuple[str, str | None], WsdlContract | OpenApiContract] = {}

    def _contract(self, agency: str, version: str | None) -> WsdlContract | OpenApiContract:
        """Raises: ContractError (unknown agency or version, a contract that does not load)."""
        contract = self._loaded.get((agency, version))
        if contract is None:
            contract = self._contracts.load(self._contracts.spec(agency, version))
            self._loaded[(agency, version)] = contract
        return contract

    def problem(self, agency: str, version: str | None, operation: str, content: Mapping[str, Any]) -> MessageProblem | None:
        """Why `content` would fail `agency`'s contract, or None when it passes.

        Only the message's own invalidity is a problem: a contract that cannot be used
        (misconfigured) is the operators' to see at delivery, not the portal's fault.
        """
        ctx = ErrorContext(agency, operation)
        try:
            contract = self._contract(agency, version)
            if isinstance(contract, WsdlContract):
                contract.build(operation, content, ctx)  # the envelope, validated; not serialized
            else:
                contract.serialize(operation, content, ctx)
        except MessageRejectedAsInvalid as exc:
            field, reason = _field_and_reason(exc)
            return MessageProblem(agency=agency, operation=operation, field=field, detail=reason)
        except (ContractError, DeliveryError):
            return None
        return None

    def preview(self, agency: str, version: str | None, operation: str,
                content: Mapping[str, Any]) -> MessagePreview:
        """`content` as its adapter would send it (the SOAP envelope, the JSON body) and, when
        the contract refuses it, why; then the text is the mapped content as JSON, since the
        contract builds no message from it. A contract that cannot be used previews as JSON."""
        ctx = ErrorContext(agency, operation)
        try:
            contract = self._contract(agency, version)
            if isinstance(contract, WsdlContract):
                envelope = contract.build(operation, content, ctx)
                return MessagePreview(etree.tostring(envelope, encoding="unicode", pretty_print=True), "text/xml")
            body = contract.serialize(operation, content, ctx)
            return MessagePreview(orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode(),
                                  "application/json")
        except MessageRejectedAsInvalid as exc:
            field, reason = _field_and_reason(exc)
            problem = MessageProblem(agency=agency, operation=operation, field=field, detail=reason)
            return MessagePreview(_as_json(content), "application/json", problem)
        except (ContractError, DeliveryError):
            return MessagePreview(_as_json(content), "application/json")


def _as_json(content: Mapping[str, Any]) -> str:
    return orjson.dumps(content, option=orjson.OPT_INDENT_2, default=str).decode()
