"""The desk's search follows the delegation chain, as the status read does: the legal
representative sees what a delegate and a sub-delegated collaborator filed for the company, the
responsible delegate sees the collaborator's, the collaborator only their own, a stranger none."""

from __future__ import annotations

from tests.e2e.test_identity import (  # noqa: F401 - fixtures
    ANNA,
    BRUNO,
    DURC_SUBJECT,
    ELENA,
    MARCO,
    _client,
    _filing,
    _grant,
    clock,
    hub,
)
from tests.support import FakeClock, RunningHub


def test_the_search_follows_delegations_and_sub_delegations(hub: RunningHub, clock: FakeClock) -> None:  # noqa: F811
    """Elena (delegate) and Bruno (her collaborator) file DURCs for Anna's company."""
    with _client(hub, clock, ANNA) as anna, _client(hub, clock, ELENA) as elena, \
            _client(hub, clock, BRUNO) as bruno, _client(hub, clock, MARCO) as marco:
        parent = _grant(anna, DURC_SUBJECT, ELENA, ["inps"])
        assert elena.subdelegate(parent["id"], collaborator=BRUNO, agencies=["inps"]).status_code == 201
        by_elena = elena.submit(_filing("durc_request.xml", declarant=ELENA)).json()["reference"]
        by_bruno = bruno.submit(_filing("durc_request.xml", declarant=BRUNO)).json()["reference"]

        def found(client: object, **params: str) -> list[str]:
            response = client.search(params)  # type: ignore[attr-defined]
            assert response.status_code == 200, response.text
            return [item["reference"] for item in response.json()["items"]]

        assert found(anna) == [by_bruno, by_elena]  # the legal representative: both
        assert found(elena) == [by_bruno, by_elena]  # the responsible delegate: her own and Bruno's
        assert found(bruno) == [by_bruno]
        assert found(bruno, reference=by_elena) == []  # not even by its reference
        assert found(marco) == [] and found(marco, subjectTaxCode=DURC_SUBJECT) == []
        assert found(anna, subjectTaxCode=DURC_SUBJECT, agency="inps") == [by_bruno, by_elena]
        assert bruno.archive(by_elena).status_code == 404
