"""Attachments: the blob store and metadata ports, and the checks a filing's references pass.

An attachment (a statute, a deed, a signed PDF/A or CAdES `.p7m`) is uploaded once, streamed
into the blob store under its SHA-256, and described by one metadata row owned by the portal
and user who uploaded it. A filing names it by id and hash; intake checks both before
accepting, and the delivery streams the blob to each agency that takes it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO, Protocol

from lxml import etree

from domain.intake import FilingRefused, Violation
from schemas.child_paths import child_path, child_text

__all__ = [
    "AttachmentLimits",
    "AttachmentProblem",
    "AttachmentRecord",
    "AttachmentReference",
    "AttachmentService",
    "AttachmentStore",
    "AttachmentsRefused",
    "BlobStore",
    "BlobWriter",
    "check_references",
    "references_in",
    "verify_references",
]


class BlobWriter(ABC):
    """One blob being written: chunks in, hashed as they stream, then kept or discarded."""

    @property
    @abstractmethod
    def size(self) -> int:
        """Bytes written so far."""

    @abstractmethod
    def write(self, chunk: bytes) -> None:
        """Append `chunk` (hashed on the way)."""

    @abstractmethod
    def hexdigest(self) -> str:
        """The SHA-256 of what was written so far, lower-case hex."""

    @abstractmethod
    def commit(self) -> str:
        """Keep the blob under its SHA-256 (atomically: never half-visible); returns the hash."""

    @abstractmethod
    def discard(self) -> None:
        """Drop what was written (idempotent; a no-op after `commit`)."""


class BlobStore(ABC):
    """Content-addressed storage of large bodies, outside the database rows."""

    @abstractmethod
    def writer(self) -> BlobWriter:
        """A new temporary blob to stream into."""

    @abstractmethod
    def open(self, sha256: str) -> BinaryIO:
        """The blob for a streaming read (the caller closes it).

        Raises:
            FileNotFoundError: no blob has that hash.
        """

    @abstractmethod
    def exists(self, sha256: str) -> bool:
        """Whether a blob with that hash is kept."""

    @abstractmethod
    def delete(self, sha256: str) -> None:
        """Forget the blob (no error when absent)."""


@dataclass(frozen=True, slots=True)
class AttachmentRecord:
    """One uploaded attachment's metadata; its content is the blob named by `sha256`."""

    id: str
    sha256: str
    size: int
    media_type: str
    file_name: str | None
    portal: str
    owner: str  #: the uploading user's tax code
    created_at: datetime
    #: The first filing that referenced it; None while unreferenced (then it may expire).
    referenced_by: str | None = None


class AttachmentStore(Protocol):
    """The attachments' metadata rows (`storage.attachments.SqlAttachmentStore`)."""

    def add(self, record: AttachmentRecord) -> None: ...

    def get_many(self, ids: Sequence[str]) -> dict[str, AttachmentRecord]: ...

    def mark_referenced(self, ids: Sequence[str], reference: str) -> None: ...

    def expire_unreferenced(self, created_before: datetime) -> list[AttachmentRecord]:
        """Delete the unreferenced rows created before the cut; returns them."""
        ...

    def sha256_in_use(self, sha256: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class AttachmentLimits:
    """`[attachments]` as the route needs it."""

    max_bytes: int
    media_types: frozenset[str]


@dataclass(slots=True)
class AttachmentService:
    """What the attachments route works with: the metadata rows, the blobs, the limits, and
    how long an unreferenced attachment is kept."""

    store: AttachmentStore
    blobs: BlobStore
    limits: AttachmentLimits
    #: Seconds an attachment no filing references is kept (`[attachments] unreferenced_ttl`).
    unreferenced_ttl: float = 7 * 24 * 3600.0
    #: Seconds between two expiry sweeps of one process.
    sweep_interval: float = 60.0
    _last_sweep: float | None = None

    def sweep_due(self, now: datetime) -> bool:
        """Whether this process should sweep now (at most once per `sweep_interval`); claims it."""
        stamp = now.timestamp()
        if self._last_sweep is not None and stamp - self._last_sweep < self.sweep_interval:
            return False
        self._last_sweep = stamp
        return True

    def expire(self, now: datetime) -> int:
        """Delete the attachments unreferenced for longer than the TTL, and each blob no other
        attachment names; blocking. Returns how many expired."""
        expired = self.store.expire_unreferenced(now - timedelta(seconds=self.unreferenced_ttl))
        for sha256 in {r.sha256 for r in expired}:
            if not self.store.sha256_in_use(sha256):
                self.blobs.delete(sha256)
        return len(expired)


@dataclass(frozen=True, slots=True)
class AttachmentReference:
    """An attachment as a filing names it (`f:attachments/f:attachment` with an `id`)."""

    index: int  #: 1-based position in the filing's list (for the error's location)
    id: str
    sha256: str


@dataclass(frozen=True, slots=True)
class AttachmentProblem:
    """Why one referenced attachment cannot be used."""

    reference: AttachmentReference
    code: str  #: attachment-unknown | attachment-hash-mismatch
    detail: str


def check_references(found: dict[str, AttachmentRecord], references: Sequence[AttachmentReference],
                     portal: str, owner: str) -> list[AttachmentProblem]:
    """Each reference must name an attachment this portal and user uploaded, with its hash.

    Another owner's attachment is reported as unknown, like one that never existed: its
    existence is not the caller's to learn.
    """
    problems: list[AttachmentProblem] = []
    for ref in references:
        record = found.get(ref.id)
        if record is None or record.portal != portal or record.owner != owner:
            problems.append(AttachmentProblem(ref, "attachment-unknown",
                                              f"attachment {ref.id} was not uploaded by this user "
                                              "(or has expired)"))
        elif record.sha256 != ref.sha256:
            problems.append(AttachmentProblem(ref, "attachment-hash-mismatch",
                                              f"attachment {ref.id} has SHA-256 {record.sha256}, "
                                              f"the filing declares {ref.sha256}"))
    return problems


class AttachmentsRefused(FilingRefused):
    """A filing names attachments it may not use: each violation names one."""

    problem = "attachment-invalid"
    title = "Unprocessable Content"
    status = 422


def references_in(root: etree._Element) -> list[AttachmentReference]:
    """The filing's attachments that name an uploaded attachment by id."""
    found: list[AttachmentReference] = []
    for index, node in enumerate(child_path("f:attachments/f:attachment")(root), 1):
        named = child_path("f:attachmentId").first(node)
        if named is not None and named.text:
            found.append(AttachmentReference(index, named.text.strip(), child_text(node, "f:sha256")))
    return found


def verify_references(store: AttachmentStore | None, root: etree._Element, portal: str,
                      owner: str) -> list[AttachmentReference]:
    """The filing's references, each checked (`check_references`); blocking (the store).

    Raises:
        AttachmentsRefused: naming each attachment that is unknown, foreign or of another hash.
    """
    references = references_in(root)
    if not references:
        return []
    found = store.get_many([r.id for r in references]) if store is not None else {}
    problems = check_references(found, references, portal, owner)
    if problems:
        raise AttachmentsRefused([
            Violation(p.code, f"/f:filing/f:attachments/f:attachment[{p.reference.index}]/f:attachmentId",
                      p.detail)
            for p in problems])
    return references
