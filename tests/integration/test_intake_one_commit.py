"""The intake commits once per filing (or once per group of filings), token id included.

A filing's token id is admitted in the transaction that stores it: a replay is refused by any
store on the same database (two API processes), a refused token stores nothing, and filings
committed together keep the audit chain whole. PostgreSQL's pool pings only idle connections.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from sqlalchemy import Engine, event, func, select, text

from routing.plan import PlannedDelivery
from service.ports import (
    IdempotencyConflict,
    NewFiling,
    StoreFailed,
    StoreUnavailable,
    TokenClaim,
    TokenNotAdmitted,
)
from storage import engine as engine_module
from storage.audit import verify_audit_chain
from storage.engine import build_engine
from storage.errors import translate_errors
from storage.identity import SqlIdentityStore
from storage.identity_tables import seen_tokens
from storage.migrate import upgrade_to_head
from storage.store import SqlStore
from storage.tables import audit_log, filings

NOW = 1_900_000_000.0


def _filing(n: int, jti: str, caller: str = "portal:portal/user:CMPNNA80E59D612B") -> NewFiling:
    return NewFiling(
        kind="durc_request", portal="portal", subject_tax_code="01234567890", subject_name=f"Acme {n}",
        declarant_tax_code="CMPNNA80E59D612B", declarant_role="legal_representative",
        document=b"<filing/>", digest=f"{n:064x}", received_at=datetime(2026, 5, 1, tzinfo=timezone.utc),
        filed_by="CMPNNA80E59D612B", viewers=("CMPNNA80E59D612B",),
        auth_context={"portal": "portal", "jti": jti},
        token=TokenClaim(caller=caller, issuer="portal", jti=jti, keep_until=NOW + 60, now=NOW),
    )


def _plan(reference: str) -> list[PlannedDelivery]:
    return [PlannedDelivery(delivery_id=f"d-{reference}", agency="inps", operation="durc",
                            message_id=f"m-{reference}", content={"reference": reference})]


def _count(engine: Engine, table) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_filing_and_its_token_id_commit_once_and_a_replay_is_refused_by_another_store(
        database_url: str) -> None:
    """Two stores on one database (two API processes): the token is admitted once, in the
    filing's own commit; the replay is refused and stores nothing."""
    first, second = build_engine(database_url), build_engine(database_url)
    upgrade_to_head(first)
    commits: list[int] = []
    event.listen(first, "commit", lambda _conn: commits.append(1))
    try:
        accepted = SqlStore(first).accept_filing(_filing(1, "jti-00000001"), _plan)
        assert accepted.reference.startswith("CRV-2026-") and commits == [1]
        with pytest.raises(TokenNotAdmitted) as refused:
            SqlStore(second).accept_filing(_filing(2, "jti-00000001"), _plan)
        assert refused.value.outcome == "replayed"
        assert (_count(first, filings), _count(first, seen_tokens), _count(first, audit_log)) == (1, 1, 1)
        assert verify_audit_chain(first).ok
    finally:
        first.dispose()
        second.dispose()


def test_a_locked_out_caller_stores_nothing_and_its_token_stays_unused(database_url: str) -> None:
    engine = build_engine(database_url)
    upgrade_to_head(engine)
    store = SqlStore(engine)
    identity = SqlIdentityStore(engine, store.writer)
    try:
        caller = "portal:portal/user:CMPNNA80E59D612B"
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO auth_failures (caller, failures, last_failure_at, locked_until) "
                              "VALUES (:c, 10, :t, :u)"), {"c": caller, "t": NOW - 1, "u": NOW + 300})
        with pytest.raises(TokenNotAdmitted) as refused:
            store.accept_filing(_filing(1, "jti-00000007", caller), _plan)
        assert refused.value.outcome == "locked" and refused.value.locked_until == NOW + 300
        assert (_count(engine, filings), _count(engine, seen_tokens)) == (0, 0)
        # The same token, once the lock is over, is still good: it was never admitted.
        assert identity.admit(caller, "portal", "jti-00000007", NOW + 900, NOW + 400).outcome == "ok"
    finally:
        engine.dispose()


def test_filings_committed_together_each_get_their_answer_and_the_chain_holds(database_url: str) -> None:
    """Twelve concurrent filings, two carrying one token id: eleven stored, one replay refused."""
    engine = build_engine(database_url)
    upgrade_to_head(engine)
    store = SqlStore(engine)
    jtis = [f"jti-{n:08d}" for n in range(11)] + ["jti-00000004"]
    outcomes: dict[int, object] = {}

    def submit(n: int) -> None:
        try:
            outcomes[n] = store.accept_filing(_filing(n, jtis[n]), _plan).reference
        except TokenNotAdmitted as exc:
            outcomes[n] = exc.outcome

    try:
        threads = [threading.Thread(target=submit, args=(n,)) for n in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        refused = [n for n, o in outcomes.items() if o == "replayed"]
        assert len(outcomes) == 12 and len(refused) == 1 and refused[0] in (4, 11)
        references = {o for o in outcomes.values() if o != "replayed"}
        assert len(references) == 11 and _count(engine, filings) == 11 and _count(engine, seen_tokens) == 11
        with engine.connect() as conn:
            subjects = set(conn.execute(select(audit_log.c.subject)).scalars())
        assert subjects == references
        assert verify_audit_chain(engine).ok
    finally:
        engine.dispose()


def test_two_stores_filing_and_auditing_at_once_extend_one_chain(database_url: str) -> None:
    """Two API processes' stores commit groups of filings while other lines are appended: each
    group reads the chain's end after taking its lock, so no line forks the chain."""
    engines = [build_engine(database_url), build_engine(database_url)]
    upgrade_to_head(engines[0])
    stores = [SqlStore(engine) for engine in engines]
    errors: list[BaseException] = []

    def file(worker: int) -> None:
        try:
            for n in range(10):
                stores[worker % 2].accept_filing(_filing(n, f"jti-w{worker}-{n:04d}"), _plan)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def audit(worker: int) -> None:
        try:
            for n in range(10):
                stores[worker % 2].audit("portal:portal", "test_line", f"line-{n}", "ok", {"n": n})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = ([threading.Thread(target=file, args=(w,)) for w in range(8)]
               + [threading.Thread(target=audit, args=(w,)) for w in range(2)])
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and not any(t.is_alive() for t in threads)
        assert _count(engines[0], filings) == 80
        result = verify_audit_chain(engines[0])
        assert result.ok and result.checked == 100
        with engines[0].connect() as conn:
            assert conn.execute(select(func.count(func.distinct(audit_log.c.prev_hash)))).scalar_one() == 100
    finally:
        for engine in engines:
            engine.dispose()


def _clashing_plan(reference: str) -> list[PlannedDelivery]:
    """Two deliveries with one id: the deliveries' INSERT (sent in the pipelined writes) fails."""
    return _plan(reference) * 2


def test_a_write_failing_after_the_filings_insert_stores_nothing_and_spares_the_others(
        database_url: str) -> None:
    """A statement that fails among the writes sent together (on PostgreSQL: one pipeline,
    its error raised at the end) rolls its group back; alone, the good filing is stored, the
    bad one gets the store's error, and the connection serves the next filing."""
    engine = build_engine(database_url)
    upgrade_to_head(engine)
    store = SqlStore(engine)
    try:
        outcomes = store._commit_intake([(_filing(1, "jti-00000001"), _clashing_plan),
                                         (_filing(2, "jti-00000002"), _plan)])
        assert outcomes[0].__class__.__name__ == "IntegrityError"
        assert outcomes[1].reference.startswith("CRV-2026-")  # type: ignore[union-attr]
        with pytest.raises(StoreFailed):
            store.accept_filing(_filing(3, "jti-00000003"), _clashing_plan)
        assert store.accept_filing(_filing(4, "jti-00000004"), _plan).reference.startswith("CRV-2026-")
        assert _count(engine, filings) == 2 and _count(engine, seen_tokens) == 2
        with engine.connect() as conn:
            assert _count(engine, audit_log) == 2
            assert len(set(conn.execute(select(audit_log.c.subject)).scalars())) == 2
        assert verify_audit_chain(engine).ok
    finally:
        engine.dispose()


def test_one_idempotency_key_twice_in_a_group_is_stored_once_and_replayed(database_url: str) -> None:
    """Two requests with one Idempotency-Key committed together: the key's uniqueness fails
    the group (on PostgreSQL at the pipeline's end); alone, the first is stored and the
    second answered as its replay."""
    engine = build_engine(database_url)
    upgrade_to_head(engine)
    store = SqlStore(engine)
    first, second = (replace(_filing(n, f"jti-0000000{n}"), idempotency_key="key-1", request_digest="same")
                     for n in (1, 2))
    try:
        outcomes = store._commit_intake([(first, _plan), (second, _plan)])
        assert not any(isinstance(o, BaseException) for o in outcomes)
        assert [o.replayed for o in outcomes] == [False, True]  # type: ignore[union-attr]
        assert outcomes[0].reference == outcomes[1].reference  # type: ignore[union-attr]
        assert _count(engine, filings) == 1 and _count(engine, audit_log) == 1
        assert verify_audit_chain(engine).ok
    finally:
        engine.dispose()


def test_a_group_gives_each_filing_its_own_answer_whatever_the_others_are(database_url: str) -> None:
    """One group commit holding a token id seen before, a locked-out caller, a key's replay, a
    key reused with another body, a caller whose failures are to clear and two new filings:
    each is answered as it would be alone, only the new ones are stored, and the chain holds.
    (On PostgreSQL the group is first written on the bet that every token id is new; the seen
    one fails that bet, and the group is stored filing by filing.)"""
    engine = build_engine(database_url)
    upgrade_to_head(engine)
    store = SqlStore(engine)
    locked, failing = "portal:portal/user:LOCKED", "portal:portal/user:FAILING"
    try:
        keyed = replace(_filing(1, "jti-00000001"), idempotency_key="key-1", request_digest="first")
        first = store.accept_filing(keyed, _plan)
        store.accept_filing(_filing(2, "jti-00000002"), _plan)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO auth_failures (caller, failures, last_failure_at, locked_until) "
                              "VALUES (:c, 10, :t, :u), (:f, 2, :t, NULL)"),
                         {"c": locked, "f": failing, "t": NOW - 1, "u": NOW + 300})
        group = [
            (_filing(3, "jti-00000002"), _plan),  # seen before
            (_filing(4, "jti-00000004", locked), _plan),
            (replace(_filing(5, "jti-00000005"), idempotency_key="key-1", request_digest="first"), _plan),
            (replace(_filing(6, "jti-00000006"), idempotency_key="key-1", request_digest="other"), _plan),
            (_filing(7, "jti-00000007", failing), _plan),
            (_filing(8, "jti-00000008"), _plan),
        ]
        outcomes = store._commit_intake(group)
        assert [getattr(o, "outcome", None) for o in outcomes[:2]] == ["replayed", "locked"]
        replay = outcomes[2]
        assert getattr(replay, "replayed", False) and getattr(replay, "reference", "") == first.reference
        assert isinstance(outcomes[3], IdempotencyConflict) and outcomes[3].reference == first.reference
        new = [getattr(o, "reference", None) for o in outcomes[4:]]
        assert all(r and r.startswith("CRV-2026-") for r in new) and len(set(new)) == 2
        assert _count(engine, filings) == 4 and _count(engine, audit_log) == 4
        with engine.connect() as conn:
            tokens = set(conn.execute(select(seen_tokens.c.jti)).scalars())
            callers = set(conn.execute(text("SELECT caller FROM auth_failures")).scalars())
        # The locked caller's token was not used, nor the reused key's (as if rolled back: the
        # API admits it on its own); the key's replay was answered now.
        assert tokens == {f"jti-0000000{n}" for n in (1, 2, 5, 7, 8)}
        assert callers == {locked}  # an admitted caller's failures are cleared
        assert verify_audit_chain(engine).ok
    finally:
        engine.dispose()


def _kill_pooled_connection(engine: Engine, admin: Engine) -> None:
    """Terminate the backend of the engine's one pooled connection, behind the pool's back."""
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


def test_the_pool_pings_idle_connections_only_and_recovers_from_a_dead_one(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection used just now is not pinged: if it died, one call fails as an outage and the
    pool is renewed; one idle past IDLE_PING_SECONDS is pinged and replaced unseen."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server connection to lose")
    engine, admin = build_engine(database_url, pool_size=1), build_engine(database_url, pool_size=1)
    try:
        _kill_pooled_connection(engine, admin)
        with pytest.raises(StoreUnavailable), translate_errors(), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        with engine.connect() as conn:  # the pool opened a new one
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
        monkeypatch.setattr(engine_module, "IDLE_PING_SECONDS", 0.0)
        _kill_pooled_connection(engine, admin)
        with engine.connect() as conn:  # pinged on checkout, found dead, replaced
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
        admin.dispose()
