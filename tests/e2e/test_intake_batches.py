"""A filing waiting for its commit holds none of the intake's threads (issue 13): with a single
intake thread and the store's first commit held, the filings sent meanwhile are still checked,
and once the commit is let go they are stored together, each answered with its own reference."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import httpx

from cli.client import PortalClient
from config.settings import PROJECT_ROOT
from service.store_ports import IntakeItem
from storage.store import SqlStore
from storage.tables import filings
from tests.support import TEST_PORTAL_KEY, RunningHub, hub_settings, wait_for

DURC = (PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples" / "durc_request.xml").read_bytes()


class _HeldIntake(SqlStore):
    """The real store; its first intake commit waits until the test lets it go."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []
        self.release = threading.Event()

    def accept_filings(self, items: Sequence[IntakeItem]) -> Any:
        self.batches.append(len(items))
        if len(self.batches) == 1:
            assert self.release.wait(30)
        return super().accept_filings(items)


class _CountingParser:
    """The hub's filing parser, counting the filings it has parsed."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.parsed = 0

    def parse(self, data: bytes) -> Any:
        parsed = self._inner.parse(data)
        self.parsed += 1
        return parsed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_filings_checked_while_a_commit_is_held_are_stored_together_on_one_intake_thread(
        database_url: str, sims) -> None:  # type: ignore[no-untyped-def]
    settings = hub_settings(database_url, {a: sims.soap_endpoint(a) for a in sims.urls})
    settings = settings.model_copy(update={"api": settings.api.model_copy(update={"threads": 1})})
    running = RunningHub(settings, with_workers=False)
    store = _HeldIntake(running.hub.engine)
    parser = _CountingParser(running.hub.validator)
    running.hub.store, running.hub.validator = store, parser
    answers: dict[int, httpx.Response] = {}

    def submit(n: int) -> None:
        with PortalClient(running.base_url, TEST_PORTAL_KEY) as client:
            answers[n] = client.submit(DURC)

    with running:
        first = threading.Thread(target=submit, args=(0,))
        first.start()
        wait_for(lambda: store.batches, timeout=20, what="the first commit to start")
        others = [threading.Thread(target=submit, args=(n,)) for n in range(1, 6)]
        for t in others:
            t.start()
        # The one intake thread is free while the first commit is held: the other five are
        # parsed (with the old per-thread group commit it stayed inside the commit).
        wait_for(lambda: parser.parsed == 6, timeout=20, what="the five later filings to be parsed")
        assert store.batches == [1] and not answers
        store.release.set()
        for t in [first, *others]:
            t.join(30)
        stored = running.count(filings)
    assert sorted(answers) == list(range(6))
    assert {a.status_code for a in answers.values()} == {202}
    assert len({a.json()["reference"] for a in answers.values()}) == 6 and stored == 6
    # Stored together: at most one of the five was still being checked at the release.
    assert store.batches[0] == 1 and sum(store.batches) == 6 and len(store.batches) <= 3
