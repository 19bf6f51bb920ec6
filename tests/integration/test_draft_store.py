"""The drafts repository on SQLite and PostgreSQL (migration 0010): the per-user cap, who
finds a draft, newest-first pages, a replace against a stale version, a second submit mark,
the purge of expired drafts; every change with its audit line, the chain intact."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from domain.drafts import Draft, DraftState
from service.identity import AuditEntry
from storage.audit import verify_audit_chain
from storage.drafts import SqlDrafts
from storage.engine import build_engine
from storage.migrate import upgrade_to_head
from storage.store import SqlStore

ANNA = "CMPNNA80E59D612B"
ELENA = "DLGLNE88D50L219Q"
MARCO = "FTTMRC85C14H501X"
NOW = datetime(2026, 12, 5, 9, 30, tzinfo=timezone.utc)


@pytest.fixture
def repo(database_url: str) -> Iterator[tuple[SqlDrafts, object]]:
    engine = build_engine(database_url)
    upgrade_to_head(engine)
    try:
        yield SqlDrafts(engine, SqlStore(engine).writer), engine
    finally:
        engine.dispose()


def _draft(n: int, owner: str = ELENA, viewers: tuple[str, ...] = (ELENA, ANNA), *,
           created: datetime = NOW, ttl: timedelta = timedelta(days=30)) -> Draft:
    return Draft(id=f"{n:032x}", portal="test", owner=owner, kind="durc_request", state=DraftState.DRAFT,
                 media_type="application/xml", document=b"<filing/>", warnings=({"code": "schema"},), version=1,
                 created_at=created, updated_at=created, expires_at=created + ttl,
                 subject_tax_code="06543210485", viewers=viewers)


def _entry(action: str, subject: str = "") -> AuditEntry:
    return AuditEntry(ELENA, action, subject, "ok", {"portal": "test"})


def test_drafts_are_capped_found_by_their_viewers_and_paged_newest_first(repo) -> None:  # type: ignore[no-untyped-def]
    drafts, engine = repo
    for n in range(1, 4):
        assert drafts.create_draft(_draft(n), 3, NOW, _entry("draft_created", f"{n:032x}"))
    assert not drafts.create_draft(_draft(4), 3, NOW, _entry("draft_created", f"{4:032x}"))

    found = drafts.get_draft(f"{1:032x}", "test", ANNA)
    assert found is not None and found.viewers == (ANNA, ELENA) and found.expires_at == NOW + timedelta(days=30)
    assert found.warnings == ({"code": "schema"},) and found.document == b"<filing/>"
    assert drafts.get_draft(f"{1:032x}", "test", MARCO) is None
    assert drafts.get_draft(f"{1:032x}", "other", ELENA) is None

    page, after = drafts.list_drafts("test", ANNA, NOW, None, 2)
    assert [d.id for d in page] == [f"{3:032x}", f"{2:032x}"] and after is not None
    rest, last = drafts.list_drafts("test", ANNA, NOW, after, 2)
    assert [d.id for d in rest] == [f"{1:032x}"] and last is None
    assert drafts.list_drafts("test", MARCO, NOW, None, 10) == ([], None)
    assert verify_audit_chain(engine).ok


def test_a_stale_replace_and_a_second_submit_change_nothing(repo) -> None:  # type: ignore[no-untyped-def]
    drafts, engine = repo
    original = _draft(1)
    drafts.create_draft(original, 10, NOW, _entry("draft_created", original.id))
    newer = Draft(**{**{f: getattr(original, f) for f in original.__slots__}, "version": 2, "document": b"<v2/>",
                     "viewers": (ELENA,)})
    assert drafts.replace_draft(newer, 1, _entry("draft_updated", original.id))
    assert not drafts.replace_draft(newer, 1, _entry("draft_updated", original.id))  # stale: still v1 expected
    stored = drafts.get_draft(original.id, "test", ELENA)
    assert stored is not None and stored.version == 2 and stored.document == b"<v2/>"
    assert drafts.get_draft(original.id, "test", ANNA) is None  # the viewers were replaced too

    answer = {"reference": "CRV-2026-000001", "state": "in_progress"}
    assert drafts.mark_submitted(original.id, "CRV-2026-000001", answer, _entry("draft_submitted", original.id))
    assert not drafts.mark_submitted(original.id, "CRV-2026-000002", {}, _entry("draft_submitted", original.id))
    assert drafts.submission(original.id) == answer
    submitted = drafts.get_draft(original.id, "test", ELENA)
    assert submitted is not None and submitted.state is DraftState.SUBMITTED
    assert submitted.reference == "CRV-2026-000001"
    assert not drafts.replace_draft(newer, 2, _entry("draft_updated", original.id))  # submitted: closed
    assert verify_audit_chain(engine).ok


def test_expired_drafts_are_purged_in_bounded_batches(repo) -> None:  # type: ignore[no-untyped-def]
    drafts, engine = repo
    for n in range(1, 6):
        drafts.create_draft(_draft(n, ttl=timedelta(days=1)), 10, NOW, _entry("draft_created"))
    drafts.create_draft(_draft(9), 10, NOW, _entry("draft_created"))
    later = NOW + timedelta(days=2)
    assert [d.id for d in drafts.list_drafts("test", ELENA, later, None, 10)[0]] == [f"{9:032x}"]
    assert drafts.purge_expired_drafts(later, 3) == 3
    assert drafts.purge_expired_drafts(later, 3) == 2
    assert drafts.purge_expired_drafts(later, 3) == 0
    assert drafts.get_draft(f"{1:032x}", "test", ELENA) is None
    assert drafts.get_draft(f"{9:032x}", "test", ELENA) is not None
    assert verify_audit_chain(engine).ok
