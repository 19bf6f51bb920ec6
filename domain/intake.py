"""Why a filing was refused at intake: typed refusals that the HTTP API maps to RFC 9457 problems.

Each refusal carries its problem slug, title and HTTP status as data, so the API needs one
generic mapping and the CLI can print `str(error)`. Every refusal holds at least one
`Violation`: parse and safety refusals hold exactly one, schema and content refusals hold all
that were found, so a portal can fix every field in one round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import ClassVar

__all__ = [
    "ContentViolation",
    "DocumentTooDeep",
    "DocumentTooLarge",
    "FilingRefused",
    "MalformedDocument",
    "MessageProblem",
    "RecipientMessagesInvalid",
    "SchemaViolation",
    "UnsafeDocument",
    "Violation",
]

#: How many violations `str(error)` spells out before summarising the rest.
_SHOWN_IN_MESSAGE = 3


@dataclass(frozen=True, slots=True)
class Violation:
    """One thing wrong with a document, located precisely enough for a portal to point at it.

    `location` is an XPath-like path with the `f:` prefix (e.g. "/f:filing/f:subject/f:taxCode",
    indexed for repeated elements) or "line N" when the document could not be parsed.
    """

    code: str
    location: str
    detail: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.location}: {self.detail}"


class FilingRefused(Exception):
    """Base of every intake refusal; `problem`, `title` and `status` feed the problem document."""

    problem: str = "filing-refused"
    title: str = "Filing refused"
    status: int = 400

    def __init__(self, violations: Iterable[Violation] | Violation) -> None:
        if isinstance(violations, Violation):
            violations = [violations]
        self.violations: list[Violation] = list(violations)
        super().__init__(str(self))

    def __str__(self) -> str:
        shown = "; ".join(str(v) for v in self.violations[:_SHOWN_IN_MESSAGE])
        hidden = len(self.violations) - _SHOWN_IN_MESSAGE
        more = f" (and {hidden} more)" if hidden > 0 else ""
        return f"{self.title} [{self.problem}]: {shown or 'no detail'}{more}"

    def relocated(self, locate: Callable[[str], str]) -> FilingRefused:
        """The same refusal with each violation located by `locate`, lines dropped (a JSON
        sender's violations found in the XML made from it: those lines mean nothing to them)."""
        moved = [replace(v, location=locate(v.location), line=None) for v in self.violations]
        return _restore(type(self), moved, dict(self.__dict__))

    def __reduce__(self) -> tuple[object, ...]:
        # Subclasses take different constructor arguments; rebuild from state, not from args.
        return (_restore, (type(self), self.violations, dict(self.__dict__)))


def _restore(cls: type[FilingRefused], violations: list[Violation], state: dict[str, object]) -> FilingRefused:
    """Rebuild a pickled refusal without calling its constructor."""
    error = cls.__new__(cls)
    error.__dict__.update(state)
    error.violations = violations
    error.args = (str(error),)
    return error


class _SingleProblem(FilingRefused):
    """A refusal with one cause, built from a sentence and, when known, the line."""

    #: Violation code used when the caller gives none.
    default_code: ClassVar[str] = "refused"

    def __init__(
        self,
        detail: str,
        *,
        line: int | None = None,
        location: str | None = None,
        code: str | None = None,
    ) -> None:
        where = location or (f"line {line}" if line is not None else "/")
        super().__init__(Violation(code or self.default_code, where, detail, line))

    @property
    def detail(self) -> str:
        """The sentence that explains the refusal."""
        return self.violations[0].detail

    @property
    def line(self) -> int | None:
        """The line of the document where the problem was found, when known."""
        return self.violations[0].line


class MalformedDocument(_SingleProblem):
    """The body is not well-formed XML (or JSON, with `problem="malformed-json"`)."""

    problem = "malformed-xml"
    title = "Malformed XML document"
    default_code = "malformed_xml"

    def __init__(
        self,
        detail: str,
        *,
        line: int | None = None,
        location: str | None = None,
        code: str | None = None,
        problem: str = "malformed-xml",
    ) -> None:
        if problem == "malformed-json":
            self.problem = problem
            self.title = "Malformed JSON document"
            code = code or "malformed_json"
        super().__init__(detail, line=line, location=location, code=code)

    @classmethod
    def json(cls, detail: str, *, line: int | None = None) -> MalformedDocument:
        """A body that is not well-formed JSON (problem "malformed-json")."""
        return cls(detail, line=line, problem="malformed-json")


class UnsafeDocument(_SingleProblem):
    """The document uses a construct we never process: DTD, entities, external references."""

    problem = "forbidden-xml-construct"
    title = "Forbidden XML construct"
    default_code = "forbidden_construct"


class DocumentTooLarge(_SingleProblem):
    """The body exceeds the size limit; refused before any parsing."""

    problem = "document-too-large"
    title = "Document too large"
    status = 413
    default_code = "too_large"


class DocumentTooDeep(_SingleProblem):
    """Elements are nested deeper than the limit."""

    problem = "document-too-deep"
    title = "Document nested too deeply"
    default_code = "too_deep"


class SchemaViolation(FilingRefused):
    """The document is well-formed but does not match the filing schema; lists every error."""

    problem = "schema-violation"
    title = "Filing does not match the schema"
    status = 422


class ContentViolation(FilingRefused):
    """The document matches the schema but its content is wrong (check digits, dates, ...)."""

    problem = "content-violation"
    title = "Filing content is not acceptable"
    status = 422


@dataclass(frozen=True, slots=True)
class MessageProblem:
    """Why one recipient's message, mapped from the filing, fails its agency's schema.

    `field` is the agency message's field ("sede.cap"; "" when the schema names none);
    `filing_field` the filing field it is mapped from, when the mapping says.
    """

    agency: str
    operation: str
    field: str
    detail: str
    filing_field: str | None = None


class RecipientMessagesInvalid(FilingRefused):
    """The filing passes its own schema, but a recipient's message mapped from it would fail
    that agency's schema: accepting it would only end undeliverable."""

    problem = "recipient-message-invalid"
    title = "A recipient's message would fail its agency schema"
    status = 422

    def __init__(self, problems: Iterable[MessageProblem]) -> None:
        self.problems = list(problems)
        super().__init__([
            Violation("agency-schema", f"agency:{p.agency}",
                      f"{p.agency} {p.operation}: {p.field or 'the message'}: {p.detail}"
                      + (f" (from {p.filing_field})" if p.filing_field else ""))
            for p in self.problems
        ])
