"""The console's message catalogues: every label the templates and code mark is translated into
Italian, and the committed `.mo` is the compiled `.po` (so what ships is what was reviewed)."""

from __future__ import annotations

import io
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from console.i18n import LOCALE_DIR, translations

CONSOLE = Path(LOCALE_DIR).parent
PO = LOCALE_DIR / "it" / "LC_MESSAGES" / "messages.po"
MO = LOCALE_DIR / "it" / "LC_MESSAGES" / "messages.mo"


def _marked() -> set[str]:
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"trim_blocks": "true", "lstrip_blocks": "true"}}
    return {message for _, _, message, _, _ in extract_from_dir(str(CONSOLE), method_map, options,
                                                                 keywords={"_": None}) if isinstance(message, str)}


def test_every_marked_label_has_an_italian_translation() -> None:
    """A label added to a page without its Italian would show English to Italian operators."""
    with PO.open("rb") as f:
        catalogue = read_po(f, locale="it")
    translated = {m.id: m.string for m in catalogue if m.id and m.string and not m.fuzzy}
    marked = _marked()
    assert len(marked) > 100
    assert sorted(marked - translated.keys()) == []


def test_the_committed_mo_is_the_compiled_po() -> None:
    """Run `pybabel compile -d console/locale -D messages` after editing the .po."""
    with PO.open("rb") as f:
        catalogue = read_po(f, locale="it")
    compiled = io.BytesIO()
    write_mo(compiled, catalogue)
    assert MO.read_bytes() == compiled.getvalue()
    assert translations("it").gettext("Search") == "Ricerca"
    assert translations("en").gettext("Search") == "Search"
