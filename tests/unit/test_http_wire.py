"""The agency pool's HTTP/1.1 bytes: request encoding and the incremental response parser."""

from __future__ import annotations

import pytest

from adapters.http_wire import (
    BodyTooLargeError,
    InvalidRequestError,
    ProtocolViolationError,
    ResponseParser,
    encode_request,
)

HEADERS = [(b"Host", b"agency.example"), (b"Content-Length", b"4")]


def parse(data: bytes, *, step: int | None = None, eof: bool = False, **options: object) -> ResponseParser:
    """Feed `data` whole or `step` bytes at a time; the parser must complete."""
    parser = ResponseParser(**options)  # type: ignore[arg-type]
    pieces = [data] if step is None else [data[i:i + step] for i in range(0, len(data), step)]
    done = False
    for piece in pieces:
        done = parser.feed(piece)
    if eof:
        done = parser.feed_eof()
    assert done
    return parser


def test_request_is_one_buffer_with_the_body() -> None:
    """Request line, headers in order, blank line, body."""
    data = encode_request(b"POST", b"/soap?v=2", HEADERS, b"<a/>")
    assert data == b"POST /soap?v=2 HTTP/1.1\r\nHost: agency.example\r\nContent-Length: 4\r\n\r\n<a/>"


def test_chunked_request_is_one_chunk_and_the_end() -> None:
    """A streamed body, read whole, goes out as a single chunk."""
    data = encode_request(b"POST", b"/", [(b"Transfer-Encoding", b"chunked")], b"abc", chunked=True)
    assert data.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")


@pytest.mark.parametrize("method,target,headers", [
    (b"POST", b"/", [(b"X-A", b"1\r\nInjected: 2")]),
    (b"POST", b"/", [(b"X-A", b"1\nInjected: 2")]),
    (b"POST", b"/", [(b"X-A", b"1\x00")]),
    (b"POST", b"/", [(b"X A", b"1")]),
    (b"POST", b"/", [(b"X-A:", b"1")]),
    (b"POST", b"/a b", []),
    (b"PO ST", b"/", []),
])
def test_request_smuggling_is_refused(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """CR, LF or NUL in a value, or a name, method or target that is not a token."""
    with pytest.raises(InvalidRequestError):
        encode_request(method, target, headers, b"")


@pytest.mark.parametrize("step", [None, 1, 7])
def test_content_length_body_in_any_pieces(step: int | None) -> None:
    """Headers and body arrive in pieces of any size."""
    parser = parse(b"HTTP/1.1 201 Created\r\nContent-Type: text/xml\r\nContent-Length: 5\r\n\r\nhello", step=step)
    assert (parser.status, parser.reason, parser.body, parser.keep_alive) == (201, b"Created", b"hello", True)
    assert parser.headers == [(b"Content-Type", b"text/xml"), (b"Content-Length", b"5")]


@pytest.mark.parametrize("step", [None, 1, 3])
def test_chunked_body_with_extensions_and_trailers(step: int | None) -> None:
    """Chunk extensions and trailer fields are read and dropped."""
    data = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"4;name=value\r\nWiki\r\nA\r\npedia in\r\n\r\n0\r\nExpires: never\r\n\r\n")
    parser = parse(data, step=step)
    assert parser.body == b"Wikipedia in\r\n" and parser.keep_alive and not parser.trailing


def test_close_delimited_body_needs_the_eof() -> None:
    """Without length or chunking the body ends at the close, and the connection is not reused."""
    parser = ResponseParser()
    assert not parser.feed(b"HTTP/1.1 200 OK\r\n\r\npart one, ")
    assert not parser.feed(b"part two")
    assert parser.feed_eof() and parser.body == b"part one, part two" and not parser.keep_alive


def test_interim_responses_are_skipped() -> None:
    """1xx heads precede the final response (RFC 9110, 15.2)."""
    parser = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                   b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", step=5)
    assert parser.status == 200 and parser.headers == [(b"Content-Length", b"2")] and parser.body == b"ok"


def test_bare_lf_and_folded_headers_are_tolerated() -> None:
    """Bare LF line ends and obs-fold continuation, as h11 accepts them."""
    parser = parse(b"HTTP/1.1 200 OK\nX-Long: a\n  b\nContent-Length: 0\n\n")
    assert parser.headers[0] == (b"X-Long", b"a b") and parser.body == b""


@pytest.mark.parametrize("head,keep_alive", [
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\n", False),
    (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\n", False),
    (b"HTTP/1.0 200 OK\r\n", False),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0, 0\r\n", True),
])
def test_keep_alive_follows_version_and_connection(head: bytes, keep_alive: bool) -> None:
    """HTTP/1.1 persists unless `close`; HTTP/1.0 only with `keep-alive`."""
    parser = parse(head + (b"" if b"Content-Length" in head else b"Content-Length: 0\r\n") + b"\r\n")
    assert parser.keep_alive is keep_alive


def test_length_and_chunked_together_is_not_reused() -> None:
    """Both framings: chunked wins and the connection is dropped afterwards (RFC 9112, 6.3)."""
    parser = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n")
    assert parser.body == b"x" and not parser.keep_alive


def test_bytes_after_the_response_are_flagged() -> None:
    """Anything past the response would be misread as the next one."""
    assert parse(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxEXTRA").trailing


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+1\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxYZ",
    b"HTTP/2 200\r\n\r\n",
    b"HTTP/1.1 99 Low\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b" HTTP/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n folded-first: x\r\n\r\n",
])
def test_malformed_framing_is_a_violation(data: bytes) -> None:
    """Lengths, chunk sizes, status lines and headers that RFC 9112 does not allow."""
    with pytest.raises(ProtocolViolationError):
        ResponseParser().feed(data)


def test_oversize_bodies_are_refused_early() -> None:
    """Declared, chunked or close-delimited: beyond `max_body` is BodyTooLargeError."""
    with pytest.raises(BodyTooLargeError):
        ResponseParser(max_body=10).feed(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")
    with pytest.raises(BodyTooLargeError):
        ResponseParser(max_body=10).feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nxxxxxx\r\n6\r\n")
    with pytest.raises(BodyTooLargeError):
        ResponseParser(max_body=10).feed(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 11)


def test_endless_head_is_refused() -> None:
    """A head that never ends is cut at 64 KiB."""
    with pytest.raises(ProtocolViolationError):
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000)


def test_eof_mid_response_is_a_violation() -> None:
    """The close ends only a close-delimited body."""
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(ProtocolViolationError):
        parser.feed_eof()
    with pytest.raises(ProtocolViolationError, match="without sending a response"):
        ResponseParser().feed_eof()


def test_head_request_has_no_body() -> None:
    """A HEAD reply's Content-Length describes the GET's body, not this one."""
    parser = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", head_request=True)
    assert parser.body == b"" and parser.keep_alive
