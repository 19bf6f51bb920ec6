"""The third-party interface files (AgID, INPS) that tests read in place, never copied.

In CI `shared/` is a read-only copy beside the repository (`../shared/external`); a test that
needs it skips locally when it is missing and FAILS under CI=true, like the integration
servers (tests/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from config.settings import PROJECT_ROOT
from tests.conftest import require_server

#: Where `external:` documents are read (the default of `external_dir` in config/crocevia.toml).
EXTERNAL_DIR = Path(os.environ.get("CROCEVIA_EXTERNAL_DIR", PROJECT_ROOT.parent / "shared" / "external"))
#: The folders the configured example agencies read.
NEEDED = ("agid-modi-patterns", "inps-isee", "inps-waas")


def require_external() -> Path:
    """The external directory, after checking every needed folder is there."""
    missing = [name for name in NEEDED if not (EXTERNAL_DIR / name).is_dir()]
    if missing:
        require_server("the shared interface files", f"{EXTERNAL_DIR} lacks {', '.join(missing)}")
    return EXTERNAL_DIR
