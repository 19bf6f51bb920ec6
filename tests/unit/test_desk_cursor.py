"""The desk's opaque cursor: it round-trips to the microsecond, and anything the API did not
hand out (garbage, another API's cursor, an altered one) is refused, not guessed at."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from service.desk import DeskCursorInvalid, decode_desk_cursor, encode_desk_cursor
from service.ops_read import encode_cursor


def test_a_cursor_names_the_same_position_back() -> None:
    moment = datetime(2026, 3, 2, 9, 15, 27, 204311, tzinfo=timezone(timedelta(hours=1)))
    assert decode_desk_cursor(encode_desk_cursor(moment, 42)) == (moment, 42)
    naive_utc = datetime(2026, 3, 2, 8, 15, 27, 204311)  # as SQLite hands it back
    assert decode_desk_cursor(encode_desk_cursor(naive_utc, 7)) == (naive_utc.replace(tzinfo=timezone.utc), 7)


@pytest.mark.parametrize("cursor", [
    "", "not-a-cursor", "%%%", encode_cursor(42, "abc"),  # the operator search's cursor
    base64.urlsafe_b64encode(orjson.dumps(["f", "soon", 1])).decode(),
    base64.urlsafe_b64encode(orjson.dumps(["f", -5, 1])).decode(),
    base64.urlsafe_b64encode(b"[\"f\", 1000000000000000000000000000000, 1]").decode(),
    base64.urlsafe_b64encode(orjson.dumps(["f", 9 * 10**18, 1])).decode(),
    base64.urlsafe_b64encode(orjson.dumps({"f": 1})).decode(),
])
def test_a_cursor_it_did_not_hand_out_is_refused(cursor: str) -> None:
    with pytest.raises(DeskCursorInvalid):
        decode_desk_cursor(cursor)
