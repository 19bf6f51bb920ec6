"""Fault rules: what a simulated agency does wrong, to which calls, and how many times."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "ASYNC_KINDS",
    "DECISIONS",
    "DUPLICATE_NUMBER",
    "KINDS",
    "TECHNICAL_KINDS",
    "TRICKLE",
    "FaultRule",
    "InvalidRuleError",
    "Matcher",
    "RuleBook",
    "as_text",
    "parse_rules",
]

#: Every fault kind of the contract (docs/agency-contracts.md, "Simulator control API").
KINDS = frozenset(
    {"latency", "timeout", "http_status", "soap_fault", "reject", "async_push", "async_pull",
     "duplicate_number", "trickle"}
)
#: Kinds applied before the message is validated: the agency is slow or down, whatever it got.
TECHNICAL_KINDS = frozenset({"latency", "timeout", "http_status", "soap_fault"})
#: Late outcomes (AgID non-blocking patterns): 202 now, the protocol number after `delay_ms`,
#: by callback to X-ReplyTo (push) or from a status resource (pull).
ASYNC_KINDS = frozenset({"async_push", "async_pull"})
#: A numbering fault: a new message gets the protocol number the agency gave its previous one.
DUPLICATE_NUMBER = "duplicate_number"
#: A business decision that may follow the protocol number after `decision_delay_ms`.
DECISIONS = frozenset({"accepted", "rejected"})

#: The agency records the message, then sends its reply one byte every `delay_ms`: each gap
#: stays inside a read timeout while the whole reply takes minutes.
TRICKLE = "trickle"
#: Default delay of each pausing kind; a timeout outlasts any sane client timeout.
_DEFAULT_DELAY_MS = {"latency": 1_000, "timeout": 30_000, "async_push": 200, "async_pull": 200,
                     "trickle": 500}
_KEYS = frozenset(
    {"operation", "kind", "times", "delay_ms", "status", "retry_after", "code", "text", "match",
     "after_effect", "decision", "decision_delay_ms"}
)

#: `matches(name, value)`: does any element/field called `name` in the request equal `value`?
Matcher = Callable[[str, str], bool]


class InvalidRuleError(ValueError):
    """A fault rule that does not follow the contract."""


@dataclass(slots=True)
class FaultRule:
    """One rule; `times` is None for a rule that never wears out."""

    kind: str
    operation: str = "*"
    times: int | None = None
    delay_ms: int = 0
    status: int = 503
    retry_after: float | None = None
    code: str = "R001"
    text: str = ""
    match: dict[str, str] = field(default_factory=dict)
    after_effect: bool = False
    decision: str | None = None
    decision_delay_ms: int = 0

    @property
    def delay_s(self) -> float:
        return self.delay_ms / 1000

    def applies_to(self, operation: str, matches: Matcher) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.operation not in ("*", operation):
            return False
        return all(matches(name, value) for name, value in self.match.items())

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation, "kind": self.kind, "times": self.times,
            "delay_ms": self.delay_ms, "status": self.status, "retry_after": self.retry_after,
            "code": self.code, "text": self.text, "match": dict(self.match),
            "after_effect": self.after_effect, "decision": self.decision,
            "decision_delay_ms": self.decision_delay_ms,
        }


def _int(raw: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRuleError(f"'{key}' must be an integer in {low}..{high}, not {value!r}")
    return value


def _rule(raw: Any, operations: Iterable[str]) -> FaultRule:
    if not isinstance(raw, dict):
        raise InvalidRuleError(f"a rule is a JSON object, not {raw!r}")
    unknown = set(raw) - _KEYS
    if unknown:
        raise InvalidRuleError(f"unknown rule keys: {sorted(unknown)}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise InvalidRuleError(f"'kind' must be one of {sorted(KINDS)}, not {kind!r}")
    operation = raw.get("operation", "*")
    if operation != "*" and operation not in operations:
        raise InvalidRuleError(f"unknown operation {operation!r}; known: {sorted(operations)}")
    times = raw.get("times")
    if times is not None:
        times = _int(raw, "times", 0, 1, 1_000_000)
    retry_after = raw.get("retry_after")
    number = isinstance(retry_after, (int, float)) and not isinstance(retry_after, bool)
    if retry_after is not None and not (number and retry_after >= 0):
        raise InvalidRuleError(f"'retry_after' must be a non-negative number, not {retry_after!r}")
    match = raw.get("match", {})
    if not isinstance(match, dict) or not all(
        isinstance(v, (str, int, float, bool)) for v in match.values()
    ):
        raise InvalidRuleError("'match' must map field names to scalar values")
    for key in ("code", "text"):
        if not isinstance(raw.get(key, ""), str):
            raise InvalidRuleError(f"'{key}' must be a string")
    after_effect = raw.get("after_effect", False)
    if not isinstance(after_effect, bool):
        raise InvalidRuleError("'after_effect' must be a boolean")
    decision = raw.get("decision")
    if decision is not None and (kind not in ASYNC_KINDS or decision not in DECISIONS):
        raise InvalidRuleError(f"'decision' is one of {sorted(DECISIONS)}, for {sorted(ASYNC_KINDS)} only")
    return FaultRule(
        kind=kind,
        operation=operation,
        times=times,
        delay_ms=_int(raw, "delay_ms", _DEFAULT_DELAY_MS.get(kind, 0), 0, 3_600_000),
        status=_int(raw, "status", 503, 200, 599),
        retry_after=retry_after,
        code=raw.get("code", "R001") or "R001",
        text=raw.get("text", ""),
        match={name: as_text(value) for name, value in match.items()},
        after_effect=after_effect,
        decision=decision,
        decision_delay_ms=_int(raw, "decision_delay_ms", 200, 0, 3_600_000),
    )


def as_text(value: str | int | float | bool) -> str:
    """The lexical form a value has in XML, so that one rule serves SOAP and JSON alike."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_rules(raw: Any, operations: Iterable[str]) -> list[FaultRule]:
    """Check a JSON list of rules against the contract.

    Raises:
        InvalidRuleError: naming the first problem found.
    """
    if not isinstance(raw, list):
        raise InvalidRuleError("the rules are a JSON list")
    known = frozenset(operations)
    return [_rule(item, known) for item in raw]


class RuleBook:
    """Runtime rules (set over HTTP, cleared by reset) ahead of the permanent ones from a file."""

    def __init__(self, permanent: list[FaultRule] | None = None) -> None:
        self._pristine = list(permanent or [])
        self.permanent: list[FaultRule] = []
        self.runtime: list[FaultRule] = []
        self.reset()

    def reset(self) -> None:
        """Drop the runtime rules and give the permanent ones their full `times` again."""
        self.runtime = []
        self.permanent = [replace(rule, match=dict(rule.match)) for rule in self._pristine]

    def find(self, operation: str, matches: Matcher) -> FaultRule | None:
        """The first rule that applies, without using it up."""
        for rule in (*self.runtime, *self.permanent):
            if rule.applies_to(operation, matches):
                return rule
        return None

    @staticmethod
    def use(rule: FaultRule) -> None:
        """Count one application of `rule` against its `times`."""
        if rule.times is not None:
            rule.times -= 1

    def to_json(self) -> dict[str, Any]:
        return {
            "runtime": [rule.to_json() for rule in self.runtime],
            "permanent": [rule.to_json() for rule in self.permanent],
        }
