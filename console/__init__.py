"""The operators' web console at `/console/`: server-rendered pages over the operator API's
use cases (the read model, the operator session, the actions), Italian by default."""

from console.routes import console_mount

__all__ = ["console_mount"]
