"""Drafts (bozze): a filing a user saved before it was complete, its states and its refusals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from domain.intake import MessageProblem

__all__ = ["Draft", "DraftRefused", "DraftState", "MessagePreview", "draft_viewers"]


class DraftState(str, Enum):
    """A draft is open until it is submitted; then it names the filing it became."""

    DRAFT = "draft"
    SUBMITTED = "submitted"


@dataclass(frozen=True, slots=True)
class Draft:
    """One saved draft: the document as sent (XML or JSON) and what saving it found."""

    id: str
    portal: str
    owner: str  #: the user who saved it (tax code)
    kind: str | None  #: None while the document names no filing kind
    state: DraftState
    media_type: str
    document: bytes
    warnings: tuple[dict[str, Any], ...]
    version: int  #: incremented by each update: the ETag
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    subject_tax_code: str = ""
    reference: str | None = None  #: the filing it became, once submitted
    viewers: tuple[str, ...] = ()

    def expired(self, now: datetime) -> bool:
        """A draft past its time is gone for everyone, submitted or not."""
        return now >= self.expires_at


class DraftRefused(Exception):
    """A draft command that cannot be carried out: status, problem slug and a sentence."""

    def __init__(self, status: int, slug: str, detail: str, extra: dict[str, Any] | None = None, *,
                 audited: bool = False) -> None:
        super().__init__(detail)
        self.audited = audited  #: the refusal's audit line is written already
        self.status = status
        self.slug = slug
        self.detail = detail
        self.extra = dict(extra or {})


def draft_viewers(owner: str, legal_representative: str, chain: tuple[str, ...]) -> tuple[str, ...]:
    """Who may read a draft: its owner, the subject's legal representative it names, and the
    grantors and responsible delegates of the owner's delegations for that subject (the rule
    of `domain.delegation.filing_viewers`, before any recipient is authorized)."""
    # A tax code is at most 16 characters; an incomplete draft may name anything there.
    return tuple(sorted({v for v in (owner, legal_representative, *chain) if v and len(v) <= 16}))


@dataclass(frozen=True, slots=True)
class MessagePreview:
    """One recipient's message as it would be sent: its text (the SOAP envelope or the JSON
    body; the mapped content as JSON when the contract refuses to build it) and why it fails
    its agency's schema, if it does."""

    text: str
    media_type: str
    problem: MessageProblem | None = None
