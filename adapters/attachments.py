"""Attachments on the wire: MTOM/XOP and inline base64 for SOAP, multipart/form-data for REST.

Each body is an async stream of pieces: the message, then each attachment read from the blob
store in chunks, so a delivery never holds an attachment whole in memory. A `StreamedBody`
is a list of pieces, streamed afresh for each try, and hashed in a pass of its own when a
signature needs the body's Digest (a ModI-signed REST agency).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from lxml import etree

from service.attachments import BlobStore

__all__ = [
    "XOP_NS",
    "BlobPart",
    "StreamedBody",
    "blob_chunks",
    "include",
    "form_data_body",
    "inline_base64_body",
    "mtom_body",
]

#: The XOP namespace of `xop:Include` (W3C XML-binary Optimized Packaging, §3).
XOP_NS = "http://www.w3.org/2004/08/xop/include"
#: Bytes read from a blob at a time; a multiple of 3 so base64 pieces join without padding.
CHUNK = 3 * 21_846  # 65,538 bytes

@dataclass(frozen=True, slots=True)
class BlobPart:
    """One attachment to stream: its blob, how it is named and typed on the wire."""

    sha256: str
    media_type: str
    file_name: str = ""

    @property
    def content_id(self) -> str:
        """The MIME Content-ID (without brackets) an xop:Include names it by."""
        return f"{self.sha256}@crocevia"


async def blob_chunks(blobs: BlobStore, sha256: str, chunk: int = CHUNK) -> AsyncIterator[bytes]:
    """The blob's bytes in chunks; the reads run in a thread (a disk may be slow)."""
    source = await asyncio.to_thread(blobs.open, sha256)
    try:
        while data := await asyncio.to_thread(source.read, chunk):
            yield data
    finally:
        source.close()


def _boundary() -> str:
    return "crocevia-" + secrets.token_hex(16)


#: One piece of a body: bytes as they are, or a blob's content (raw, or base64 when True).
Segment = bytes | tuple[BlobPart, bool]


@dataclass(frozen=True, slots=True)
class StreamedBody:
    """A body made of literal pieces and blobs, streamed afresh for each try."""

    segments: tuple[Segment, ...]
    blobs: BlobStore

    async def stream(self) -> AsyncIterator[bytes]:
        """The body's bytes, each blob read in chunks (never whole)."""
        for segment in self.segments:
            if isinstance(segment, bytes):
                yield segment
                continue
            part, encode = segment
            async for chunk in blob_chunks(self.blobs, part.sha256):
                yield base64.b64encode(chunk) if encode else chunk

    def sha256(self) -> bytes:
        """The body's SHA-256 in one blocking pass over the blobs (a signature's Digest).

        Blocking: a 20 MiB attachment hashes in some tens of milliseconds.
        """
        digest = hashlib.sha256()
        for segment in self.segments:
            if isinstance(segment, bytes):
                digest.update(segment)
                continue
            part, encode = segment
            with self.blobs.open(part.sha256) as source:
                while data := source.read(CHUNK):
                    digest.update(base64.b64encode(data) if encode else data)
        return digest.digest()


def mtom_body(envelope: bytes, parts: Sequence[BlobPart], blobs: BlobStore,
              soap_media_type: str = "text/xml") -> tuple[str, StreamedBody]:
    """A SOAP message with its attachments as MTOM (multipart/related, XOP root part first).

    Returns:
        The HTTP Content-Type and the body.
    """
    boundary = _boundary()
    root_id = "root.message@crocevia"
    content_type = (f'multipart/related; type="application/xop+xml"; start="<{root_id}>"; '
                    f'start-info="{soap_media_type}"; boundary="{boundary}"')
    segments: list[Segment] = [
        (f"--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; "
         f'type="{soap_media_type}"\r\nContent-Transfer-Encoding: 8bit\r\n'
         f"Content-ID: <{root_id}>\r\n\r\n").encode() + envelope]
    for part in parts:
        segments.append((f"\r\n--{boundary}\r\nContent-Type: {part.media_type}\r\n"
                         f"Content-Transfer-Encoding: binary\r\nContent-ID: <{part.content_id}>\r\n\r\n").encode())
        segments.append((part, False))
    segments.append(f"\r\n--{boundary}--\r\n".encode())
    return content_type, StreamedBody(tuple(segments), blobs)


def inline_base64_body(envelope: bytes, markers: Sequence[tuple[bytes, BlobPart]],
                       blobs: BlobStore) -> StreamedBody:
    """The envelope with each marker text replaced by its blob in base64, streamed.

    The envelope is rendered (and validated) with a short marker in each content element;
    the marker is cut out here and the blob's base64 streamed in its place.

    Raises:
        ValueError: a marker is not in the envelope.
    """
    segments: list[Segment] = []
    rest = envelope
    for marker, part in markers:
        before, found, rest = rest.partition(marker)
        if not found:
            raise ValueError("an attachment marker is missing from the envelope")
        segments += [before, (part, True)]
    segments.append(rest)
    return StreamedBody(tuple(segments), blobs)


def _quoted(value: str) -> str:
    # RFC 7578 §4.2: a file name in a quoted-string; quotes and line breaks percent-encoded.
    return value.replace("\\", "%5C").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def form_data_body(message: bytes, parts: Sequence[BlobPart], blobs: BlobStore, *,
                   message_part: str = "message", file_part: str = "allegato") -> tuple[str, StreamedBody]:
    """A REST message as multipart/form-data: the JSON in `message_part`, each file after it.

    Returns:
        The HTTP Content-Type and the body.
    """
    boundary = _boundary()
    segments: list[Segment] = [
        (f'--{boundary}\r\nContent-Disposition: form-data; name="{message_part}"\r\n'
         f"Content-Type: application/json\r\n\r\n").encode() + message]
    for part in parts:
        segments.append((f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="{file_part}"; '
                         f'filename="{_quoted(part.file_name or part.sha256)}"\r\n'
                         f"Content-Type: {part.media_type}\r\n\r\n").encode())
        segments.append((part, False))
    segments.append(f"\r\n--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", StreamedBody(tuple(segments), blobs)


def include(element: etree._Element, part: BlobPart) -> None:
    """Put an xop:Include of `part` inside `element` (its base64 content travels as a MIME part)."""
    element.text = None
    etree.SubElement(element, f"{{{XOP_NS}}}Include", nsmap={"xop": XOP_NS}, href=f"cid:{part.content_id}")
