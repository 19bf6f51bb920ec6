"""`Reply` shows an agency's reply as httpx's `Response` did (`adapters/replies.py`): the adapters,
the receipt readers and zeep read the same headers, encoding and body as before."""

from __future__ import annotations

import httpx
import pytest

from adapters.replies import Reply, callback_headers, reply_headers

#: Raw headers as they come over the wire, framing included.
CASES = [
    [(b"Content-Type", b"text/xml; charset=utf-8"), (b"Content-Length", b"12"), (b"Date", b"x")],
    [(b"X-Ref", b"a"), (b"x-ref", b"b"), (b"X-REF", b"c"), (b"Transfer-Encoding", b"chunked")],
    [(b"Content-Encoding", b"gzip"), (b"Location", b"/status/1"), (b"Retry-After", b"5")],
    [(b"X-Name", "caff\u00e8".encode()), (b"Content-Type", b"application/json")],  # UTF-8
    [(b"X-Name", "caff\u00e8".encode("latin-1")), (b"X-Other", b"plain")],  # Latin-1
    [],
]


def _as_httpx(raw: list[tuple[bytes, bytes]], body: bytes) -> httpx.Response:
    """What `read_reply` built before `Reply`: the headers without the wire's framing, the body."""
    kept = [(k, v) for k, v in raw if k.lower() not in (b"content-encoding", b"content-length", b"transfer-encoding")]
    return httpx.Response(200, headers=kept, content=body)


@pytest.mark.parametrize("raw", CASES)
@pytest.mark.parametrize("body", [b"", b"<r>ok</r>"])
def test_headers_read_as_httpx_response_read_them(raw: list[tuple[bytes, bytes]], body: bytes) -> None:
    before = _as_httpx(raw, body).headers
    after = reply_headers(raw, body)
    assert dict(after) == dict(before.items())
    for name in {k.decode("latin-1") for k, _ in raw} | {"content-length", "Missing"}:
        for spelling in (name, name.upper(), name.lower()):
            assert after.get(spelling) == before.get(spelling)
            assert after.get(spelling, "d") == before.get(spelling, "d")
            assert (spelling in after) == (spelling in before)


@pytest.mark.parametrize("content_type", ["text/xml; charset=ISO-8859-1", "application/soap+xml",
                                          "text/xml; charset=no-such-codec", "", 'text/xml; charset="UTF-16"'])
def test_encoding_as_httpx_gives_it(content_type: str) -> None:
    raw = [(b"Content-Type", content_type.encode())] if content_type else []
    assert Reply(200, reply_headers(raw, b"x"), b"x", "").encoding == _as_httpx(raw, b"x").encoding


def test_callback_headers_are_a_replys_and_refuse_what_httpx_refused() -> None:
    assert dict(callback_headers("text/xml", b"<a/>")) == {"content-type": "text/xml", "content-length": "4"}
    with pytest.raises(UnicodeEncodeError):
        httpx.Headers({"content-type": "text/xml; x=\u00e8"})
    with pytest.raises(UnicodeEncodeError):
        callback_headers("text/xml; x=\u00e8", b"")
