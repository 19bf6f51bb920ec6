"""HTTP/1.1 on the wire for the agency connection pool: the request bytes and a response parser.

Pure byte handling with its own errors; `adapters/http_pool.py` owns the sockets and translates
these errors into httpx's tree once. Framing follows RFC 9112 (sections 6 and 7).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "DEFAULT_MAX_BODY",
    "BodyTooLargeError",
    "InvalidRequestError",
    "ProtocolViolationError",
    "ResponseParser",
    "encode_request",
]

#: Largest response body accepted by default: agency receipts are a few KiB.
DEFAULT_MAX_BODY = 16 * 1024 * 1024
#: Largest status line plus headers (h11 allows 16 KiB; agencies' proxies add a few headers).
MAX_HEAD = 64 * 1024
#: Longest chunk-size line, extensions included.
_MAX_CHUNK_LINE = 4096

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
#: The blank line ending a head; a bare LF is tolerated as h11 does.
_HEAD_END = re.compile(rb"\n\r?\n")


class InvalidRequestError(ValueError):
    """The request cannot be written as HTTP/1.1 (a header smuggling CR/LF, a bad name)."""


class ProtocolViolationError(Exception):
    """The peer's bytes are not a well-framed HTTP/1.1 response, or it stopped mid-message."""


class BodyTooLargeError(ProtocolViolationError):
    """The response body exceeds the configured cap."""


def encode_request(method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]],
                   body: bytes, *, chunked: bool = False) -> bytes:
    """The whole request as one buffer, so it leaves in a single write.

    Args:
        method: the request method, a token (`POST`).
        target: origin-form target, path and query (`/soap?x=1`).
        headers: raw header pairs, in order; `Host` is expected among them.
        body: the complete body.
        chunked: frame `body` as one chunk (the headers already say `Transfer-Encoding: chunked`).

    Raises:
        InvalidRequestError: a name that is not a token, or CR/LF/NUL in the target or a value.
    """
    if not _TOKEN.fullmatch(method) or not target or _BAD_TARGET.search(target):
        raise InvalidRequestError(f"invalid request line: {method!r} {target!r}")
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise InvalidRequestError(f"invalid header name {name!r}")
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    head = b"".join(parts)
    # One line per header plus the request line and the blank line: any other count of CR or
    # LF means a value carries its own line break (header injection).
    lines = len(headers) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head:
        raise InvalidRequestError("a header value contains CR, LF or NUL")
    if chunked:
        if not body:
            return head + b"0\r\n\r\n"
        return b"".join((head, b"%x\r\n" % len(body), body, b"\r\n0\r\n\r\n"))
    return head + body


# Parser states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


def _tokens(values: list[bytes]) -> set[bytes]:
    return {t.strip().lower() for v in values for t in v.split(b",")}


class ResponseParser:
    """Reads one response incrementally: `feed` bytes as they arrive, `feed_eof` at close.

    1xx interim responses are skipped. After completion `status`, `reason`, `http_version`,
    `headers`, `body` and `keep_alive` describe the final response; `trailing` says bytes
    followed it (the connection is then not reusable).
    """

    __slots__ = ("_buf", "_chunks", "_head_request", "_max_body", "_remaining", "_size",
                 "_state", "body", "headers", "http_version", "keep_alive", "reason",
                 "started", "status", "trailing")

    def __init__(self, *, head_request: bool = False, max_body: int = DEFAULT_MAX_BODY) -> None:
        self._buf = bytearray()
        self._chunks: list[bytes] = []
        self._head_request = head_request
        self._max_body = max_body
        self._remaining = 0
        self._size = 0
        self._state = _HEAD
        self.body = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.http_version = b"HTTP/1.1"
        self.keep_alive = False
        self.reason = b""
        self.started = False  #: whether any byte of a response arrived
        self.status = 0
        self.trailing = False

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> bool:
        """Take more bytes; True once the final response is complete.

        Raises:
            ProtocolViolationError: malformed framing; BodyTooLargeError beyond the cap.
        """
        if self._state == _DONE:
            self.trailing = True
            return True
        self.started = True
        self._buf += data
        return self._advance()

    def feed_eof(self) -> bool:
        """The peer closed: True when that ends a close-delimited body.

        Raises:
            ProtocolViolationError: the response was incomplete.
        """
        if self._state == _DONE:
            return True
        if self._state == _UNTIL_CLOSE:
            self.body = bytes(self._buf)
            self._buf.clear()
            self._state = _DONE
            return True
        if not self.started:
            raise ProtocolViolationError("the server closed the connection without sending a response")
        raise ProtocolViolationError("the server closed the connection before the response was complete")

    def _advance(self) -> bool:
        buf = self._buf
        while True:
            state = self._state
            if state == _LENGTH:
                if len(buf) < self._remaining:
                    return False
                n = self._remaining
                self.body = bytes(buf[:n])
                del buf[:n]
                return self._finish()
            if state == _HEAD:
                match = _HEAD_END.search(buf)
                if match is None:
                    if len(buf) > MAX_HEAD:
                        raise ProtocolViolationError("response head larger than 64 KiB")
                    return False
                head = bytes(buf[:match.start()])
                del buf[:match.end()]
                self._read_head(head)
            elif state == _UNTIL_CLOSE:
                if len(buf) > self._max_body:
                    raise BodyTooLargeError(f"response body larger than {self._max_body} bytes")
                return False
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\n")
                if end < 0:
                    if len(buf) > _MAX_CHUNK_LINE:
                        raise ProtocolViolationError("chunk size line too long")
                    return False
                line = bytes(buf[:end]).rstrip(b"\r").split(b";", 1)[0].strip()
                del buf[:end + 1]
                # A regex, not int() alone: int(..., 16) also takes "+1", "0x1" and "1_0".
                if not _HEX.fullmatch(line):
                    raise ProtocolViolationError(f"invalid chunk size {line[:40]!r}")
                size = int(line, 16)
                if size == 0:
                    self._state = _TRAILERS
                else:
                    self._size += size
                    if self._size > self._max_body:
                        raise BodyTooLargeError(f"response body larger than {self._max_body} bytes")
                    self._remaining = size
                    self._state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                if len(buf) < self._remaining:
                    return False
                n = self._remaining
                self._chunks.append(bytes(buf[:n]))
                del buf[:n]
                self._state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                if len(buf) < 2 and buf[:1] != b"\n":
                    return False
                if buf[:1] == b"\n":
                    del buf[:1]
                elif buf[:2] == b"\r\n":
                    del buf[:2]
                else:
                    raise ProtocolViolationError("missing CRLF after a chunk")
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                # Trailer fields are read and dropped, as httpx does.
                end = buf.find(b"\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise ProtocolViolationError("trailer section too long")
                    return False
                line = bytes(buf[:end]).rstrip(b"\r")
                del buf[:end + 1]
                if not line:
                    self.body = b"".join(self._chunks)
                    self._chunks = []
                    return self._finish()
            else:  # _DONE
                return True

    def _finish(self) -> bool:
        self._state = _DONE
        if self._buf:
            self.trailing = True
        return True

    def _read_head(self, head: bytes) -> None:
        lines = head.split(b"\n")
        status_line = lines[0].rstrip(b"\r")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[0]) != 8:
            raise ProtocolViolationError(f"invalid status line {status_line[:80]!r}")
        code = parts[1]
        if len(code) != 3 or not code.isdigit():
            raise ProtocolViolationError(f"invalid status code {code[:20]!r}")
        status = int(code)
        headers: list[tuple[bytes, bytes]] = []
        for raw in lines[1:]:
            line = raw.rstrip(b"\r")
            if line[:1] in (b" ", b"\t"):  # obs-fold (RFC 9112, 5.2): joined with one space
                if not headers:
                    raise ProtocolViolationError("continuation line before any header")
                name, value = headers[-1]
                headers[-1] = (name, value + b" " + line.strip(b" \t"))
                continue
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN.fullmatch(name):
                raise ProtocolViolationError(f"invalid header line {line[:80]!r}")
            headers.append((name, value.strip(b" \t")))
        if 100 <= status < 200:
            if status == 101:
                raise ProtocolViolationError("the server switched protocols (101), which is not supported")
            return  # interim response (RFC 9110, 15.2): the final one follows
        self.status = status
        self.reason = parts[2] if len(parts) > 2 else b""
        self.http_version = parts[0]
        self.headers = headers
        self._frame(status, headers)

    def _frame(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Pick the body framing (RFC 9112, 6.3) and whether the connection stays open."""
        lengths: list[bytes] = []
        codings: list[bytes] = []
        connection: list[bytes] = []
        for name, value in headers:
            lname = name.lower()
            if lname == b"content-length":
                lengths.append(value)
            elif lname == b"transfer-encoding":
                codings.append(value)
            elif lname == b"connection":
                connection.append(value)
        options = _tokens(connection) if connection else set()
        if self.http_version == b"HTTP/1.1":
            self.keep_alive = b"close" not in options
        else:
            self.keep_alive = b"keep-alive" in options
        if self._head_request or status in (204, 304):
            self._finish()
            return
        if codings:
            last = [t.strip().lower() for v in codings for t in v.split(b",")][-1]
            if last == b"chunked":
                self._state = _CHUNK_SIZE
                # Both headers: a message smuggling attempt or a broken proxy; do not reuse.
                self.keep_alive = self.keep_alive and not lengths
            else:
                self._until_close()
            return
        if lengths:
            values = {v.strip() for joined in lengths for v in joined.split(b",")}
            if len(values) != 1:
                raise ProtocolViolationError("conflicting Content-Length values")
            value = values.pop()
            if not value.isdigit() or len(value) > 18:
                raise ProtocolViolationError(f"invalid Content-Length {value[:20]!r}")
            length = int(value)
            if length > self._max_body:
                raise BodyTooLargeError(f"response body of {length} bytes, more than {self._max_body}")
            if length == 0:
                self._finish()
            else:
                self._remaining = length
                self._state = _LENGTH
            return
        self._until_close()

    def _until_close(self) -> None:
        self._state = _UNTIL_CLOSE
        self.keep_alive = False
