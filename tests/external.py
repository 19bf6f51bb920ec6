"""The third-party interface files (AgID, INPS) that tests read in place, never copied.

In CI `shared/` is a read-only copy beside the repository (`../shared/external`); a test that
needs it skips locally when it is missing and FAILS under CI=true, like the integration
servers (tests/conftest.py). The tests look where the hub looks: its `external_dir` setting
(config/crocevia.toml, or the EXTERNAL_DIR variable), so one variable moves both, and the hubs
a test starts find the same files as the test.
"""

from __future__ import annotations

import functools
from pathlib import Path

from adapters.contracts import AgencyCatalog, load_agency_catalog
from config.settings import PROJECT_ROOT, load_settings
from tests.conftest import require_server


def _configured_external_dir() -> Path:
    settings = load_settings()
    return settings.path(settings.external_dir)


#: Where `external:` documents are read: the hub's own setting, resolved as the hub resolves it.
EXTERNAL_DIR = _configured_external_dir()
#: The folders the configured example agencies read.
NEEDED = ("agid-modi-patterns", "inps-isee", "inps-waas")


def require_external() -> Path:
    """The external directory, after checking every needed folder is there."""
    missing = [name for name in NEEDED if not (EXTERNAL_DIR / name).is_dir()]
    if missing:
        require_server("the shared interface files", f"{EXTERNAL_DIR} lacks {', '.join(missing)}")
    return EXTERNAL_DIR


@functools.cache
def repository_catalog() -> AgencyCatalog:
    """The shipped agency files (config/agencies), their `external:` documents under EXTERNAL_DIR."""
    return load_agency_catalog(PROJECT_ROOT / "config" / "agencies", project_root=PROJECT_ROOT,
                               external_dir=EXTERNAL_DIR)
