"""What every API and console handler works with: the typed `ApiContext`, built once by the
composition root, and `context_of(request)` that hands it to a module-level handler.

This module imports no route module, so the route modules and `api.app` depend on it and not
on each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from api.admission import AdmissionLimits
from api.auth import RequestGuard
from api.callbacks import CallbackGuard
from api.readiness import ReadinessCheck
from domain.operators import Operator
from routing.routes import RouteTable
from service.agency_health import AgencyHealthFeed
from service.drafts import DraftDesk
from service.desk import FilingDesk
from service.attachments import AttachmentService
from service.identity import IdentityStore
from service.intake import MessageCheck
from service.metrics import HubMetrics
from service.operators import OperatorAccounts
from service.ops_read import OpsReader
from service.recipients import OutcomeReader
from service.ports import ParsedFilingView
from service.store_ports import ApiStore

__all__ = ["ApiContext", "DeadLetterQueue", "DeadLetterView", "FilingParser", "OperatorGuard", "ParsedFilingView",
           "attach_context", "context_of", "ops_guard_of"]


class FilingParser(Protocol):
    """Parses and checks a filing body (`schemas.filing.FilingValidator`); raises `FilingRefused`."""

    def parse(self, data: bytes) -> ParsedFilingView: ...

    def parse_json(self, data: bytes) -> ParsedFilingView: ...

    def xml_to_json(self, data: bytes) -> dict[str, Any]: ...


class DeadLetterView(Protocol):
    """One dead-lettered message as operators see it (`transport.dead_letters.DeadLetter`)."""

    @property
    def job_id(self) -> int | None: ...

    def to_json(self) -> dict[str, Any]: ...


class DeadLetterQueue(Protocol):
    """RabbitMQ's dead-letter queues for operators (`transport.dead_letters.RabbitDeadLetters`)."""

    def list(self, agency: str | None = None,
             limit: int = 100) -> tuple[dict[str, int], Sequence[DeadLetterView]]: ...

    def replay(self, agency: str | None = None, limit: int = 100,
               job_ids: frozenset[int] | None = None) -> Sequence[DeadLetterView]: ...


class OperatorGuard(Protocol):
    """What every operator route asks before doing anything (`api.ops.auth.TokenOrSessionGuard`)."""

    async def require(self, request: Request, role: str) -> Operator | Response:
        """The operator, or the problem response to return as is (401, 403, 503)."""
        ...


@dataclass(frozen=True, slots=True)
class ApiContext:
    """The API's collaborators; optional parts switch their routes off when None."""

    store: ApiStore
    validator: FilingParser
    routes: RouteTable
    guard: RequestGuard  # ModI signatures, replayed tokens, lockout (api.auth)
    identity: IdentityStore  # delegations and the identity audit lines
    max_body_bytes: int = 1_048_576
    admission: AdmissionLimits | None = None  #: bounds on submissions at once (None: unbounded)
    #: threads the intake's blocking part runs on (`[api] threads`); None: one per submission admitted
    intake_threads: int | None = None
    on_accepted: Callable[[], None] | None = None  # wakes an in-process worker
    #: agency → reads its late-outcome callbacks
    outcome_readers: Mapping[str, OutcomeReader] = field(default_factory=dict)
    #: verifies agencies' callbacks (api.callbacks); None: every callback is refused
    callbacks: CallbackGuard | None = None
    #: validates each recipient's message against its agency schema at intake (None: no check)
    message_check: MessageCheck | None = None
    #: What `/readyz` asks: failing component → reason (dead background tasks, the store).
    readiness: ReadinessCheck | None = None
    #: Operator accounts and the guard of `/v1/ops/...` (api/ops/auth.py); None: no operator API.
    operators: OperatorAccounts | None = None
    ops_guard: OperatorGuard | None = None
    #: The operator API's read model; None: no read endpoints.
    ops: OpsReader | None = None
    #: RabbitMQ's dead-letter queues for operators; None: the embedded queue has none.
    dead_letters: DeadLetterQueue | None = None
    #: This process's counters and the store's gauges, served at `/metrics` (None: no `/metrics`).
    metrics: HubMetrics | None = None
    #: The agencies' health for portals (`/v1/agencies/health`) and the circuits' staleness.
    agency_health: AgencyHealthFeed | None = None
    #: Drafts (`/v1/drafts`, api/drafts.py); None: no draft routes.
    drafts: DraftDesk | None = None
    #: The portal's search and archive (`GET /v1/filings`, api/desk.py); None: those routes are off.
    desk: FilingDesk | None = None
    #: Uploads and their blob store (`POST /v1/attachments`); None: no attachments route, and a
    #: filing that references an attachment by id is refused.
    attachments: AttachmentService | None = None

    def wake(self) -> None:
        """Tell an in-process worker that there is work (a new, resent or released job)."""
        if self.on_accepted is not None:
            self.on_accepted()


#: Where `api.app.create_app` keeps the context on the application's state.
_STATE_KEY = "api_context"


def attach_context(app: Any, ctx: ApiContext) -> None:
    """Keep `ctx` on a Starlette application's state, where `context_of` finds it."""
    setattr(app.state, _STATE_KEY, ctx)


def context_of(request: Request) -> ApiContext:
    """The context of the application serving `request` (set by `attach_context`)."""
    ctx = getattr(request.app.state, _STATE_KEY, None)
    if not isinstance(ctx, ApiContext):
        raise RuntimeError("the application has no ApiContext: build it with api.app.create_app")
    return ctx


def ops_guard_of(request: Request) -> OperatorGuard:
    """The operator guard; the `/v1/ops` and console routes are mounted only when there is one."""
    guard = context_of(request).ops_guard
    if guard is None:
        raise RuntimeError("an operator route is mounted without an operator guard")
    return guard
