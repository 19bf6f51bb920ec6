"""The direct request renderer: zeep's envelope byte for byte for every sample filing's SOAP
messages, and zeep (with its own refusals) for whatever it does not render."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from lxml import etree

from adapters.base import ErrorContext
from adapters.wsdl import WsdlContract
from bootstrap import checked_routes, load_contracts
from config.settings import PROJECT_ROOT, load_settings
from domain.errors import MessageRejectedAsInvalid
from routing.plan import FilingFacts, fill_handoffs, plan_deliveries
from routing.routes import load_route_table
from schemas.filing import FilingValidator

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"


@pytest.fixture(scope="module")
def planned() -> list[tuple[WsdlContract, str, Any]]:
    """Every SOAP message the example filings plan, with its loaded contract."""
    settings = load_settings()
    validator = FilingValidator()
    contracts = load_contracts(settings)
    routes = checked_routes(settings, load_route_table(settings.path(settings.routes_file),
                                                       settings.path(settings.mappings_dir)), contracts, validator)
    found = []
    for example in sorted(EXAMPLES.glob("*.xml")):
        parsed = validator.parse(example.read_bytes())
        facts = FilingFacts("CRV-2026-000001", parsed.kind, "test", parsed.declarant_tax_code,
                            parsed.declarant_role, datetime.now(timezone.utc))
        for p in plan_deliveries(routes, parsed.root, facts):
            contract = contracts.load(contracts.spec(p.agency, p.contract_version))
            if isinstance(contract, WsdlContract):
                content, _ = fill_handoffs(p.content, p.handoffs, {"numeroREA": "RM-1234567"})
                found.append((contract, p.operation, content))
    assert {c.spec.agency for c, _, _ in found} >= {"cciaa", "inps", "inail"}
    return found


def _zeep(contract: WsdlContract, operation: str, content: Any) -> bytes:
    envelope = contract.operations[operation].binding_operation.create(**content).content
    return etree.tostring(envelope, encoding="utf-8", xml_declaration=True)


def test_the_renderer_writes_zeeps_envelope_byte_for_byte(planned: list[tuple[WsdlContract, str, Any]]) -> None:
    """Every sample message is rendered directly, and the bytes are the ones zeep writes."""
    for contract, operation, content in planned:
        rendered = contract._renderer.render(operation, content)  # noqa: SLF001 - the part under test
        assert rendered is not None, (contract.spec.agency, operation)
        assert etree.tostring(rendered, encoding="utf-8", xml_declaration=True) == _zeep(contract, operation, content)
        built = contract.build(operation, content, ErrorContext(contract.spec.agency, operation))
        assert etree.tostring(built, encoding="utf-8", xml_declaration=True) == _zeep(contract, operation, content)


def test_an_unknown_or_missing_field_is_left_to_zeep(planned: list[tuple[WsdlContract, str, Any]]) -> None:
    """The renderer declines; zeep builds and refuses as it always did."""
    contract, operation, content = next(p for p in planned if p[0].spec.agency == "cciaa")
    ctx = ErrorContext("cciaa", operation)
    unknown = {**content, "colore": "blu"}
    assert contract._renderer.render(operation, unknown) is None  # noqa: SLF001
    with pytest.raises(MessageRejectedAsInvalid, match="unexpected keyword argument 'colore'"):
        contract.build(operation, unknown, ctx)
    missing = {k: v for k, v in content.items() if k != "dataInizioAttivita"}
    assert contract._renderer.render(operation, missing) is None  # noqa: SLF001
    with pytest.raises(MessageRejectedAsInvalid, match="Missing element"):
        contract.build(operation, missing, ctx)


def test_a_rendered_message_the_schema_refuses_is_refused_as_before(
        planned: list[tuple[WsdlContract, str, Any]]) -> None:
    """A facet the XSD checks: the same refusal, naming the same element."""
    contract, operation, content = next(p for p in planned if p[0].spec.agency == "cciaa")
    with pytest.raises(MessageRejectedAsInvalid, match="pec"):
        contract.build(operation, {**content, "pec": "not an address"}, ErrorContext("cciaa", operation))


def test_a_text_xml_cannot_carry_is_refused_as_a_message_problem(
        planned: list[tuple[WsdlContract, str, Any]]) -> None:
    """A control character (which a JSON filing can carry, an XML one cannot): the renderer
    declines, and the build refuses the message as zeep does, not with lxml's bare ValueError."""
    contract, operation, content = next(p for p in planned if p[0].spec.agency == "cciaa")
    bad = {**content, "messageHeader": {**content["messageHeader"], "messageId": "id\x01"}}
    assert contract._renderer.render(operation, bad) is None  # noqa: SLF001
    with pytest.raises(MessageRejectedAsInvalid, match="XML compatible"):
        contract.build(operation, bad, ErrorContext("cciaa", operation))


def _shapes(content: dict[str, Any]) -> list[dict[str, Any]]:
    """`content` with another text (an empty one), and in other shapes: each field (also one
    level down) left out, each list cut to its first item or given twice its items."""
    variants = [{**content, "messageHeader": {**content["messageHeader"], "messageId": ""}}]
    for key, value in content.items():
        variants.append({k: v for k, v in content.items() if k != key})
        if isinstance(value, dict):
            variants.extend({**content, key: {k: v for k, v in value.items() if k != inner}} for inner in value)
        if isinstance(value, list):
            variants.extend([{**content, key: value[:1]}, {**content, key: value * 2}])
    return variants


def test_each_shape_and_each_repeat_is_zeeps_envelope(planned: list[tuple[WsdlContract, str, Any]]) -> None:
    """Other shapes of the same request (optional fields left out, lists of other lengths), one
    after another and again, each come out as zeep's bytes; an envelope already handed out
    stays as it was."""
    shapes: set[tuple[str, str, tuple[str, ...]]] = set()
    for contract, operation, content in planned:
        renderer = contract._renderer  # noqa: SLF001 - the part under test
        first = renderer.render(operation, content)
        assert first is not None
        first_bytes = etree.tostring(first)
        for variant in [*_shapes(content), content, *_shapes(content)]:
            rendered = renderer.render(operation, variant)
            if rendered is None:
                continue  # a required field left out, or too many items: zeep's to refuse
            shapes.add((contract.spec.agency, operation, tuple(str(e.tag) for e in rendered.iter())))
            assert etree.tostring(rendered, encoding="utf-8", xml_declaration=True) == _zeep(
                contract, operation, variant), (contract.spec.agency, operation, variant)
        assert etree.tostring(first) == first_bytes
    assert len(shapes) >= 3 * len({(c.spec.agency, o) for c, o, _ in planned})  # other shapes were tried
