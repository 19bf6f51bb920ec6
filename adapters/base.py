"""The HTTP failure table both protocols share, and the retry wrapper around the delivery port
(`service.delivery_port`, which the adapters implement)."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin

import httpx
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from adapters.deadline import CallDeadlineExceeded
from domain.errors import (
    AdapterMisconfigured,
    AgencyProtocolError,
    AgencyRejected,
    AgencyThrottled,
    AgencyUnreachable,
    DeliveryError,
    MessageRejectedAsInvalid,
    OutcomeUnknown,
    TransientDeliveryError,
)
from adapters.replies import Reply, read_reply
from adapters.wire import WireCapture, capturing
from domain.messages import OutgoingMessage, Receipt
from service.delivery_port import (
    AgencyAdapter,
    DeliveryResult,
    LateOutcomeAdapter,
    RetryPolicy,
    TryRecord,
)

__all__ = [
    "CORRELATION_HEADER",
    "DEFAULT_TIMEOUT",
    "REPLY_TO_HEADER",
    "acknowledgment",
    "fetch_late_result",
    "poll_once",
    "OVERRIDE_KINDS",
    "ErrorContext",
    "FaultCodes",
    "check_fault_overrides",
    "classify_httpx_error",
    "classify_status",
    "deliver_with_retries",
    "effective_timeout",
    "parse_retry_after",
]

log = structlog.get_logger(__name__)


# ---------------------------------------------------------------------------------------------
# Shared classification helpers
# ---------------------------------------------------------------------------------------------

#: Used for any timeout the injected client leaves unset: an operation never waits forever.
DEFAULT_TIMEOUT = httpx.Timeout(connect=2.0, read=10.0, write=5.0, pool=5.0)


def effective_timeout(timeout: httpx.Timeout) -> httpx.Timeout:
    """The client's timeouts, with any unset one taken from `DEFAULT_TIMEOUT`."""
    return httpx.Timeout(
        connect=timeout.connect if timeout.connect is not None else DEFAULT_TIMEOUT.connect,
        read=timeout.read if timeout.read is not None else DEFAULT_TIMEOUT.read,
        write=timeout.write if timeout.write is not None else DEFAULT_TIMEOUT.write,
        pool=timeout.pool if timeout.pool is not None else DEFAULT_TIMEOUT.pool,
    )


_E = TypeVar("_E", bound=DeliveryError)


@dataclass(frozen=True, slots=True)
class ErrorContext:
    """Who the error is about: copied into every `DeliveryError` a classifier builds."""

    agency: str = ""
    operation: str = ""
    delivery_id: str = ""

    def build(self, cls: type[_E], text: str, **extra: object) -> _E:
        """Instantiate `cls` with this context."""
        return cls(
            text,
            agency=self.agency,
            operation=self.operation,
            delivery_id=self.delivery_id,
            **extra,  # type: ignore[arg-type] # each subclass takes its own keywords (code, retry_after)
        )


#: Fault-override kinds accepted from `config/` (`{"R999": "transient"}`) and the class each
#: produces: "transient"/"permanent" for the common case, the others to pick a precise class.
OVERRIDE_KINDS: Mapping[str, type[DeliveryError]] = {
    "transient": AgencyUnreachable,
    "unreachable": AgencyUnreachable,
    "unknown": OutcomeUnknown,
    "protocol": AgencyProtocolError,
    "permanent": AgencyRejected,
    "rejected": AgencyRejected,
    "invalid": MessageRejectedAsInvalid,
    "misconfigured": AdapterMisconfigured,
}


class FaultCodes(dict[str, type[DeliveryError]]):
    """Resolved fault overrides, `{code: error class}`, and where the agency puts its own code
    (`fields`: SOAP detail element names, REST body paths; see `ContractSpec.fault_code_fields`)."""

    def __init__(self, kinds: Mapping[str, type[DeliveryError]] | None = None,
                 fields: tuple[str, ...] = ()) -> None:
        super().__init__(kinds or {})
        self.fields = tuple(fields)


def check_fault_overrides(overrides: Mapping[str, str],
                          fields: tuple[str, ...] = ()) -> FaultCodes:
    """Resolve a `{code: kind}` mapping once, failing fast on an unknown kind.

    Args:
        overrides: code → kind of `OVERRIDE_KINDS`.
        fields: where the agency's own code is found (kept on the result).

    Raises:
        ValueError: a kind that is not one of `OVERRIDE_KINDS`.
    """
    resolved = FaultCodes(fields=fields)
    for code, kind in overrides.items():
        try:
            resolved[code] = OVERRIDE_KINDS[kind.lower()]
        except KeyError:
            raise ValueError(
                f"fault override {code!r}: unknown kind {kind!r}, expected one of "
                f"{sorted(OVERRIDE_KINDS)}"
            ) from None
    return resolved


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date, RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _caused_by_tls(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


#: httpx exceptions in lookup order, in the manner of httpx's own `map_httpcore_exceptions`.
#: Whether the request may have reached the agency decides between "unreachable" (never sent)
#: and "outcome unknown" (maybe processed: retry only with the same message id).
_HTTPX_TABLE: tuple[tuple[type[Exception], type[DeliveryError], str], ...] = (
    (CallDeadlineExceeded, OutcomeUnknown, "the call deadline passed before the whole reply came"),
    (httpx.ConnectTimeout, AgencyUnreachable, "connect timeout"),
    (httpx.PoolTimeout, AgencyUnreachable, "no free connection in the pool"),
    (httpx.ConnectError, AgencyUnreachable, "connection failed"),
    (httpx.ProxyError, AgencyUnreachable, "proxy failed"),
    (httpx.ReadTimeout, OutcomeUnknown, "read timeout after the request was sent"),
    (httpx.WriteTimeout, OutcomeUnknown, "write timeout while sending"),
    (httpx.RemoteProtocolError, OutcomeUnknown, "the agency broke the HTTP exchange"),
    (httpx.ReadError, OutcomeUnknown, "read failed after the request was sent"),
    (httpx.WriteError, OutcomeUnknown, "write failed while sending"),
    (httpx.CloseError, OutcomeUnknown, "connection close failed"),
    (httpx.UnsupportedProtocol, AdapterMisconfigured, "unsupported URL scheme"),
    (httpx.LocalProtocolError, AdapterMisconfigured, "invalid request on our side"),
    (httpx.DecodingError, AgencyProtocolError, "undecodable reply body"),
    (httpx.TooManyRedirects, AdapterMisconfigured, "too many redirects"),
    (httpx.InvalidURL, AdapterMisconfigured, "invalid endpoint URL"),
    (httpx.TimeoutException, OutcomeUnknown, "timeout"),
    (httpx.NetworkError, OutcomeUnknown, "network error"),
    (httpx.TransportError, AgencyUnreachable, "transport error"),
)


def classify_httpx_error(exc: Exception, ctx: ErrorContext) -> DeliveryError | None:
    """Translate an httpx exception, or return None when `exc` is not one."""
    if not isinstance(exc, (httpx.HTTPError, httpx.InvalidURL)):
        return None
    if isinstance(exc, httpx.ConnectError) and _caused_by_tls(exc):
        return ctx.build(AdapterMisconfigured, f"TLS failure: {exc}")
    for exc_type, error_cls, text in _HTTPX_TABLE:
        if isinstance(exc, exc_type):
            return ctx.build(error_cls, f"{text} ({type(exc).__name__})")
    return ctx.build(AgencyProtocolError, f"unexpected httpx error ({type(exc).__name__})")


def classify_status(
    status: int, headers: Mapping[str, str], ctx: ErrorContext
) -> DeliveryError | None:
    """The statuses whose meaning does not depend on the body, for SOAP and REST alike."""
    retry_after = parse_retry_after(headers.get("retry-after"))
    error: DeliveryError | None = None
    if status == 429 or (status in (502, 503, 504) and retry_after is not None):
        error = ctx.build(AgencyThrottled, f"HTTP {status}, retry after {retry_after}s",
                          retry_after=retry_after, code=f"HTTP{status}")
    elif status in (502, 503, 504):
        error = ctx.build(AgencyUnreachable, f"HTTP {status}", code=f"HTTP{status}")
    elif status in (401, 403, 404, 405, 406, 415) or 300 <= status < 400:
        error = ctx.build(AdapterMisconfigured, f"HTTP {status}", code=f"HTTP{status}")
    if error is not None:
        error.http_status = status
    return error


# ---------------------------------------------------------------------------------------------
# Retry wrapper
# ---------------------------------------------------------------------------------------------


class _StopBeforeRetryAfter(stop_base):
    """Stop when the planned wait would call the agency before its Retry-After.

    The caller then schedules the delivery persistently, which never holds a worker slot for
    the agency's requested pause.
    """

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        retry_after = getattr(exc, "retry_after", None)
        if not isinstance(exc, AgencyThrottled) or retry_after is None:
            return False
        return retry_state.upcoming_sleep < retry_after


def _log_retry(message: OutgoingMessage) -> Callable[[RetryCallState], None]:
    def before_sleep(retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        log.info(
            "delivery_retry_scheduled",
            agency=message.agency,
            operation=message.operation,
            delivery_id=message.delivery_id,
            attempt=retry_state.attempt_number,
            wait_s=round(retry_state.upcoming_sleep, 3),
            error_class=type(exc).__name__,
            error_code=getattr(exc, "code", ""),
        )

    return before_sleep


async def deliver_with_retries(
    adapter: AgencyAdapter, message: OutgoingMessage, policy: RetryPolicy
) -> DeliveryResult:
    """Deliver `message`, retrying transient errors in process as `policy` allows.

    Every retry sends the same message with the same id, which is what lets the agency drop a
    duplicate after an `OutcomeUnknown`. A throttled reply whose Retry-After is longer than the
    next planned wait ends the loop instead: nothing is sent before Retry-After.

    Args:
        adapter: the agency's adapter.
        message: the stored message to send.
        policy: attempts and waits; `RetryPolicy.without_waits()` for tests.

    Returns:
        The receipt, or the last error (permanent, or transient once retries are exhausted),
        with one `TryRecord` per call. Never raises, except on cancellation.
    """
    tries: list[TryRecord] = []

    async def attempt() -> Receipt:
        # What this try sends and receives is kept (bounded) for the filing's history.
        with capturing() as wire:
            return await _attempt(wire)

    async def _attempt(wire: WireCapture) -> Receipt:
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        error: DeliveryError | None = None
        finished = False
        try:
            receipt = await adapter.deliver(message)
            finished = True
            return receipt
        except DeliveryError as exc:
            error = exc
            raise
        except Exception as exc:
            # An exception outside the tree is a bug in the adapter: keep its traceback, and
            # treat it as transient so the bounded retries and the dead letter still apply.
            log.exception(
                "delivery_unclassified_error",
                agency=message.agency,
                operation=message.operation,
                delivery_id=message.delivery_id,
                error_class=type(exc).__name__,
            )
            error = AgencyProtocolError(
                f"unclassified {type(exc).__name__} in the {message.agency} adapter",
                agency=message.agency,
                operation=message.operation,
                delivery_id=message.delivery_id,
                code="UNCLASSIFIED",
            )
            raise error from exc
        finally:
            # A cancelled try (finished False, no error) is not recorded: it has no outcome.
            if finished or error is not None:
                elapsed_ms = (time.perf_counter() - t0) * 1000
                tries.append(TryRecord(len(tries) + 1, started_at, elapsed_ms, error, wire.sent, wire.received))

    async def with_retries() -> Receipt:
        # tenacity's async loop costs about 0.1 ms of CPU per delivery even when the first try
        # succeeds, so the first try runs outside it. A transient failure then enters the loop
        # as its attempt 1 (replayed, not sent again): stop, wait and logging are tenacity's.
        try:
            return await attempt()
        except TransientDeliveryError as exc:
            first_failure: TransientDeliveryError | None = exc

        async def replay_then_attempt() -> Receipt:
            nonlocal first_failure
            if first_failure is not None:
                failure, first_failure = first_failure, None
                raise failure
            return await attempt()

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientDeliveryError),
            stop=stop_after_attempt(policy.attempts) | _StopBeforeRetryAfter(),
            wait=wait_exponential_jitter(
                multiplier=policy.initial_wait, max=policy.max_wait, jitter=policy.jitter
            ),
            before_sleep=_log_retry(message),
            reraise=True,
        )
        return await retrying(replay_then_attempt)

    try:
        receipt = await with_retries()
    except DeliveryError as exc:
        # An agency that is down is an expected fault: the worker's own line about the pass
        # (retry scheduled, or undeliverable) is its one warning; this one is detail.
        (log.info if isinstance(exc, TransientDeliveryError) else log.warning)(
            "delivery_failed",
            agency=message.agency,
            operation=message.operation,
            delivery_id=message.delivery_id,
            attempts=len(tries),
            error_class=type(exc).__name__,
            error_code=exc.code,
            transient=isinstance(exc, TransientDeliveryError),
            retry_after=getattr(exc, "retry_after", None),
        )
        return DeliveryResult(receipt=None, error=exc, tries=tries)
    log.info(
        "delivery_sent",
        agency=message.agency,
        operation=message.operation,
        delivery_id=message.delivery_id,
        attempts=len(tries),
        protocol_number=receipt.protocol_number,
    )
    return DeliveryResult(receipt=receipt, error=None, tries=tries)


# ---------------------------------------------------------------------------------------------
# Late outcomes (AgID non-blocking patterns)
# ---------------------------------------------------------------------------------------------

#: The consumer's callback address in a NONBLOCK_PUSH request (ModI guidelines).
REPLY_TO_HEADER = "X-ReplyTo"
#: The provider's id of a non-blocking exchange: in its 202, and in its callback.
CORRELATION_HEADER = "X-Correlation-ID"


def acknowledgment(response: Reply, base_url: str) -> Receipt:
    """A 202 Accepted: the agency took the message in charge; its protocol number comes later.

    `X-Correlation-ID` names the exchange in the agency's callback (PUSH); `Location`, resolved
    against `base_url`, is the status resource to poll (PULL).
    """
    location = response.headers.get("location")
    return Receipt.acknowledgment(
        correlation_id=response.headers.get(CORRELATION_HEADER) or None,
        poll_url=urljoin(base_url, location) if location else None,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


async def fetch_late_result(
    http: httpx.AsyncClient, poll_url: str, *, timeout: httpx.Timeout, ctx: ErrorContext, accept: str,
    max_bytes: int,
) -> Reply | Receipt:
    """Poll a status resource once (NONBLOCK_PULL).

    Returns:
        An acknowledgment while the agency still works (200 or 202, with its Retry-After), or
        the result's reply once the status answers 303 (the result fetched from Location).

    Raises:
        DeliveryError: the status or the result could not be read (404/410: the resource is
            gone, a permanent misconfiguration; 5xx, timeouts: transient; a reply beyond
            `max_bytes`: AgencyProtocolError).
    """
    try:
        status = await read_reply(http, "GET", poll_url, timeout=timeout, max_bytes=max_bytes,
                                  ctx=ctx, follow_redirects=False,
                                  headers={"Accept": "application/json, */*"})
    except httpx.HTTPError as exc:
        raise (classify_httpx_error(exc, ctx) or ctx.build(AgencyProtocolError, str(exc))) from exc
    if status.status_code in (200, 202):
        return Receipt.acknowledgment(poll_url=poll_url,
                                      retry_after=parse_retry_after(status.headers.get("retry-after")))
    location = status.headers.get("location")
    if status.status_code == 303 and location:
        try:
            result = await read_reply(http, "GET", urljoin(poll_url, location), timeout=timeout,
                                      max_bytes=max_bytes, ctx=ctx, headers={"Accept": accept})
        except httpx.HTTPError as exc:
            raise (classify_httpx_error(exc, ctx) or ctx.build(AgencyProtocolError, str(exc))) from exc
        if result.status_code == 200:
            return result
        status = result
    code = status.status_code
    error = classify_status(code, status.headers, ctx)
    if error is not None:
        raise error
    if code in (404, 410):
        raise ctx.build(AdapterMisconfigured, f"the late outcome at {poll_url} is gone (HTTP {code})",
                        code=f"HTTP{code}")
    if code >= 500:
        raise ctx.build(AgencyUnreachable, f"HTTP {code} while polling", code=f"HTTP{code}")
    raise ctx.build(AgencyProtocolError, f"unexpected HTTP {code} while polling", code=f"HTTP{code}")


async def poll_once(adapter: AgencyAdapter, message: OutgoingMessage, poll_url: str) -> DeliveryResult:
    """Poll a late outcome once, recorded like one try. No retry in process: the persisted
    poll schedule is the backoff. Never raises, except on cancellation."""
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    receipt: Receipt | None = None
    error: DeliveryError | None = None
    try:
        if not isinstance(adapter, LateOutcomeAdapter):
            raise AdapterMisconfigured(f"the {message.agency} adapter cannot poll a late outcome",
                                       agency=message.agency, operation=message.operation,
                                       delivery_id=message.delivery_id)
        receipt = await adapter.poll(message, poll_url)
    except DeliveryError as exc:
        error = exc
    except Exception as exc:  # a bug of the adapter: keep the traceback, retry later
        log.exception("late_outcome_poll_crashed", agency=message.agency, delivery_id=message.delivery_id)
        error = AgencyProtocolError(f"unclassified {type(exc).__name__} while polling",
                                    agency=message.agency, operation=message.operation,
                                    delivery_id=message.delivery_id, code="UNCLASSIFIED")
    elapsed_ms = (time.perf_counter() - t0) * 1000
    log.info("late_outcome_polled", agency=message.agency, delivery_id=message.delivery_id,
             pending=bool(receipt and receipt.acknowledged_only), error_code=getattr(error, "code", None))
    return DeliveryResult(receipt=receipt, error=error, tries=[TryRecord(1, started_at, elapsed_ms, error)])
