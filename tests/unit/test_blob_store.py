"""The filesystem blob store and the reference check, without a hub."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import pytest

from service.attachments import AttachmentRecord, AttachmentReference, check_references
from storage.blobs import FileBlobStore


def test_a_blob_is_kept_under_its_hash_only_once_committed(tmp_path: Path) -> None:
    """Written in chunks, invisible until commit, then at sha256/ab/cd/<hash>, mode 0600; discard leaves nothing."""
    store = FileBlobStore(tmp_path)
    writer = store.writer()
    for chunk in (b"%PDF-1.7\n", b"x" * 100_000):
        writer.write(chunk)
    digest = hashlib.sha256(b"%PDF-1.7\n" + b"x" * 100_000).hexdigest()
    assert writer.hexdigest() == digest and not store.exists(digest)
    assert writer.commit() == digest
    path = tmp_path / "sha256" / digest[:2] / digest[2:4] / digest
    assert store.exists(digest) and path.stat().st_mode & 0o777 == 0o600
    with store.open(digest) as stream:
        assert stream.read(9) == b"%PDF-1.7\n"
    dropped = store.writer()
    dropped.write(b"never kept")
    dropped.discard()
    assert list((tmp_path / "tmp").iterdir()) == []
    store.delete(digest)
    assert not store.exists(digest)


def test_a_blob_name_is_never_a_path(tmp_path: Path) -> None:
    """Only 64 lower-case hex digits name a blob: no traversal out of the store."""
    store = FileBlobStore(tmp_path)
    for name in ("../../etc/passwd", "A" * 64, "ab"):
        with pytest.raises(ValueError):
            store.open(name)


def test_references_must_be_the_callers_own_with_the_same_hash() -> None:
    """Another user's or portal's attachment reads as unknown; a different hash is named as such."""
    record = AttachmentRecord(id="att_1", sha256="a" * 64, size=1, media_type="application/pdf", file_name=None,
                              portal="p", owner="U", created_at=datetime.now(timezone.utc))
    found = {"att_1": record}
    refs = [AttachmentReference(1, "att_1", "a" * 64), AttachmentReference(2, "att_1", "b" * 64),
            AttachmentReference(3, "att_2", "a" * 64)]
    assert [p.code for p in check_references(found, refs, "p", "U")] == ["attachment-hash-mismatch",
                                                                        "attachment-unknown"]
    assert [p.code for p in check_references(found, refs[:1], "p", "OTHER")] == ["attachment-unknown"]
    assert [p.code for p in check_references(found, refs[:1], "q", "U")] == ["attachment-unknown"]
