"""The contract files in schemas/: where they are, what they declare, how they are served."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from lxml import etree

__all__ = [
    "ENVELOPE_XSD",
    "RUNTS_OPENAPI",
    "RUNTS_OPERATION",
    "RUNTS_OPERATIONS",
    "SOAP_CONTRACTS",
    "SoapContract",
    "served_openapi",
]

_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
#: The normalized envelope every agency XSD imports.
ENVELOPE_XSD = _SCHEMAS / "envelope" / "v1" / "envelope.xsd"
#: The RUNTS REST contract; its components hold the JSON schemas.
RUNTS_OPENAPI = _SCHEMAS / "agencies" / "runts" / "v1" / "openapi.yaml"
#: The operationId of `POST /v1/iscrizioni`, the name fault rules and the ledger use.
RUNTS_OPERATION = "IscrizioneEnte"
#: Each RUNTS operation the simulator serves: operationId → (POST path, request schema name).
RUNTS_OPERATIONS: dict[str, tuple[str, str]] = {
    RUNTS_OPERATION: ("/v1/iscrizioni", "IscrizioneRequest"),
    "DepositoAtto": ("/v1/depositi", "DepositoRequest"),
    "ComunicazioneImpresaSociale": ("/v1/imprese-sociali/comunicazioni", "ComunicazioneImpresaSocialeRequest"),
}
#: The placeholder address in our contract files, replaced by the real one when served.
PLACEHOLDER = "http://127.0.0.1:0"

_WSDL = "http://schemas.xmlsoap.org/wsdl/"
_XSD = "http://www.w3.org/2001/XMLSchema"
_BINDING_NS = {"1.1": "http://schemas.xmlsoap.org/wsdl/soap/",
               "1.2": "http://schemas.xmlsoap.org/wsdl/soap12/"}


def _own_parser() -> etree.XMLParser:
    # Our own files, but the same discipline: no DTD, no network.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


@dataclass(frozen=True)
class SoapContract:
    """One SOAP agency's WSDL and XSD, with what the simulator reads from them."""

    agency: str
    soap_version: str
    wsdl: Path

    @cached_property
    def _wsdl_tree(self) -> etree._ElementTree:
        return etree.parse(str(self.wsdl), _own_parser())

    @property
    def namespace(self) -> str:
        return self._wsdl_tree.getroot().get("targetNamespace", "")

    @property
    def xsd(self) -> Path:
        return self.wsdl.with_suffix(".xsd")

    @cached_property
    def actions(self) -> dict[str, str]:
        """operation -> soapAction, read from the binding so the WSDL stays the one truth."""
        soap = _BINDING_NS[self.soap_version]
        found: dict[str, str] = {}
        for op in self._wsdl_tree.iterfind(f"{{{_WSDL}}}binding/{{{_WSDL}}}operation"):
            name, binding = op.get("name"), op.find(f"{{{soap}}}operation")
            if name is not None:  # WSDL 1.1: an operation without soap:operation has no soapAction
                found[name] = "" if binding is None else binding.get("soapAction", "")
        return found

    @property
    def operations(self) -> tuple[str, ...]:
        return tuple(self.actions)

    def load_schema(self) -> etree.XMLSchema:
        """The agency XSD with the envelope it imports, compiled once per process."""
        return etree.XMLSchema(etree.parse(str(self.xsd), _own_parser()))

    def served_documents(self, base_url: str) -> dict[str, bytes]:
        """file name -> bytes of the WSDL and XSDs as served from `base_url`.

        The WSDL is served at `/wsdl` and imports `<agency>.xsd` relatively, so both sit at the
        root; the agency XSD's import of the envelope is rewritten to `envelope.xsd` beside it,
        and the placeholder address becomes the real endpoint.
        """
        wsdl = etree.parse(str(self.wsdl), _own_parser())
        for address in wsdl.iterfind(f".//{{{_BINDING_NS[self.soap_version]}}}address"):
            address.set("location", f"{base_url}/soap")
        xsd = etree.parse(str(self.xsd), _own_parser())
        for imported in xsd.iterfind(f"{{{_XSD}}}import"):
            imported.set("schemaLocation", "envelope.xsd")
        envelope = etree.parse(str(ENVELOPE_XSD), _own_parser())
        return {
            "wsdl": etree.tostring(wsdl, xml_declaration=True, encoding="UTF-8"),
            self.xsd.name: etree.tostring(xsd, xml_declaration=True, encoding="UTF-8"),
            "envelope.xsd": etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"),
        }


def _contract(agency: str, version: str) -> SoapContract:
    return SoapContract(agency, version, _SCHEMAS / "agencies" / agency / "v1" / f"{agency}.wsdl")


#: agency -> its SOAP contract.
SOAP_CONTRACTS: dict[str, SoapContract] = {
    "inps": _contract("inps", "1.2"),
    "inail": _contract("inail", "1.1"),
    "cciaa": _contract("cciaa", "1.1"),
}


def served_openapi(base_url: str) -> bytes:
    """The RUNTS OpenAPI document with its placeholder server replaced by `base_url`."""
    text = RUNTS_OPENAPI.read_text(encoding="utf-8")
    return text.replace(f"url: {PLACEHOLDER}", f"url: {base_url}", 1).encode("utf-8")
