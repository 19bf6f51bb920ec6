"""The sample filings each route's mapping is checked with (schemas/filing/v1/examples)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from schemas.filing import FilingValidator

__all__ = ["NamedSample", "load_sample_filings"]


@dataclass(frozen=True, slots=True)
class NamedSample:
    """A valid example filing, parsed, with its file name."""

    name: str
    root: etree._Element
    kind: str
    declarant_tax_code: str
    declarant_role: str


def load_sample_filings(directory: Path, validator: FilingValidator) -> list[NamedSample]:
    """Every `*.xml` filing of `directory`, validated as intake would.

    Raises:
        ValueError: the directory is missing, or a sample is not a valid filing (a broken
            sample must not pass for a working mapping).
    """
    if not directory.is_dir():
        raise ValueError(f"sample filings directory {directory} not found")
    samples = []
    for path in sorted(directory.glob("*.xml")):
        try:
            parsed = validator.parse(path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - any refusal makes the sample unusable
            raise ValueError(f"sample filing {path.name} is not valid: {exc}") from exc
        samples.append(NamedSample(path.name, parsed.root, parsed.kind,
                                   parsed.declarant_tax_code, parsed.declarant_role))
    return samples
