"""The operator API in tests: a guard that takes the role from a test header, and a real HTTP
server (uvicorn on loopback) for the `/v1/ops` routes next to a running hub.

The real guard (personal tokens, sessions) is another module's; these routes are written
against its Protocol, and the permission table is tested where the two are wired together.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

from api.context import ApiContext, attach_context
from api.ops.actions import actions_routes
from api.problems import problem_response
from tests.support import RunningHub, free_port

_RANKS = {"viewer": 0, "operator": 1, "admin": 2}
#: The test token the CLI sends (`Authorization: Bearer <role>:<name>`).
ROLE_HEADER = "x-test-role"


@dataclass(frozen=True)
class TestOperator:
    name: str
    role: str


class HeaderGuardForTests:
    """`require` as the real guard answers it: the role comes from `X-Test-Role` (or a bearer
    token `role:name`, as the CLI sends one), the name from `X-Test-Operator`."""

    async def require(self, request: Request, role: str) -> TestOperator | Response:
        have = request.headers.get(ROLE_HEADER)
        name = request.headers.get("x-test-operator", "alice")
        auth = request.headers.get("authorization", "")
        if have is None and auth.lower().startswith("bearer ") and ":" in auth[7:]:
            have, name = auth[7:].split(":", 1)
        if have not in _RANKS:
            return problem_response(401, "unauthenticated", "Unauthorized", "no operator credential",
                                    instance=request.url.path)
        if _RANKS[have] < _RANKS[role]:
            return problem_response(403, "forbidden", "Forbidden", f"this action needs the {role} role",
                                    instance=request.url.path)
        return TestOperator(name, have)


class OpsServer:
    """The `/v1/ops` action routes over the running hub's store, on their own loopback port."""

    def __init__(self, hub: RunningHub, **context: Any) -> None:
        h = hub.hub
        ctx = ApiContext(store=h.store, validator=h.validator, routes=h.routes, guard=h.guard, identity=h.identity,
                         ops_guard=HeaderGuardForTests())
        ctx = dataclasses.replace(ctx, **context)
        app = Starlette(routes=[Mount("/v1/ops", routes=actions_routes())])
        attach_context(app, ctx)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None,
                                                     lifespan="off", http="httptools"))  # as the API serves
        self._thread = threading.Thread(target=lambda: asyncio.run(self._server.serve()), daemon=True)

    def __enter__(self) -> OpsServer:
        self._thread.start()
        for _ in range(600):  # bounded: 30 s
            if self._server.started:
                return self
            self._thread.join(0.05)
        raise RuntimeError("the ops server did not start")

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
