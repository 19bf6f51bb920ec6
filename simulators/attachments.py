"""Attachments as the simulated agencies receive them: MTOM/XOP, inline base64, multipart/form-data.

Each attachment's content is hashed and checked against the SHA-256 the message declares for
it; a mismatch refuses the message (`InvalidMessageError` "ALLEGATO"), and what was received
is kept for the ledger (name, type, SHA-256, size, form), so a test proves it arrived intact.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from email.message import Message
from typing import Any

from lxml import etree

from simulators.desk import InvalidMessageError

__all__ = ["MAX_MULTIPART_BYTES", "Part", "content_type_params", "received_inline", "received_xop",
           "split_multipart", "verified"]

#: The largest multipart body a simulated agency reads (its documents travel in it).
MAX_MULTIPART_BYTES = 64 * 1024 * 1024
_XOP = "http://www.w3.org/2004/08/xop/include"


@dataclass(frozen=True, slots=True)
class Part:
    """One MIME part: its headers (names lower-cased) and its bytes."""

    headers: dict[str, str]
    body: bytes

    def param(self, header: str, name: str) -> str | None:
        return content_type_params(self.headers.get(header, "")).get(name)


def content_type_params(value: str) -> dict[str, str]:
    """A header's main value (key "") and its parameters, as RFC 2045 parses them."""
    message = Message()
    message["content-type"] = value
    params = {k.lower(): str(v) for k, v in (message.get_params() or [])[1:]}
    params[""] = value.split(";", 1)[0].strip().lower()
    return params


def split_multipart(body: bytes, boundary: str) -> list[Part]:
    """The parts of a multipart body (RFC 2046 §5.1.1).

    Raises:
        InvalidMessageError: "MULTIPART" when the body is not one.
    """
    delimiter = b"--" + boundary.encode()
    pieces = body.split(b"\r\n" + delimiter)
    first = pieces[0]
    if not first.startswith(delimiter):
        raise InvalidMessageError("MULTIPART", "il corpo non inizia con il delimitatore")
    pieces[0] = first[len(delimiter):]
    if not pieces[-1].startswith(b"--"):
        raise InvalidMessageError("MULTIPART", "manca il delimitatore di chiusura")
    parts = []
    for piece in pieces[:-1]:
        head, sep, content = piece.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise InvalidMessageError("MULTIPART", "parte senza intestazioni")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append(Part(headers, content))
    return parts


def verified(name: str, media_type: str, declared: str, content: bytes, form: str) -> dict[str, Any]:
    """What the ledger keeps of one attachment, once its content hashes as declared.

    Raises:
        InvalidMessageError: "ALLEGATO" when it does not.
    """
    actual = hashlib.sha256(content).hexdigest()
    if actual != declared:
        raise InvalidMessageError("ALLEGATO", f"l'allegato {name!r} ha SHA-256 {actual}, dichiarato {declared}")
    return {"nome": name, "mediaType": media_type, "sha256": actual, "size": len(content), "form": form}


def _sibling(element: etree._Element, name: str) -> str:
    parent = element.getparent()
    found = next(parent.iter(f"{{*}}{name}"), None) if parent is not None else None
    return (found.text or "").strip() if found is not None else ""


def received_xop(root: etree._Element, parts: dict[str, bytes]) -> list[dict[str, Any]]:
    """Resolve each xop:Include against the MIME parts (by Content-ID), check its hash, and
    empty its content element (so the envelope validates as base64Binary)."""
    received = []
    for include in list(root.iter(f"{{{_XOP}}}Include")):
        content = include.getparent()
        href = include.get("href", "")
        if content is None or not href.startswith("cid:"):
            raise InvalidMessageError("ALLEGATO", "xop:Include senza href cid:")
        data = parts.get(href[4:])
        if data is None:
            raise InvalidMessageError("ALLEGATO", f"nessuna parte MIME {href}")
        received.append(verified(_sibling(content, "nome"), _sibling(content, "mediaType"),
                                 _sibling(content, "sha256"), data, "mtom"))
        content.remove(include)
        content.text = ""
    return received


def received_inline(root: etree._Element, content_name: str = "contenuto") -> list[dict[str, Any]]:
    """Each content element's base64, decoded and checked against its declared hash."""
    received = []
    for content in root.iter(f"{{*}}{content_name}"):
        if not (content.text or "").strip():
            continue
        try:
            data = base64.b64decode("".join((content.text or "").split()), validate=True)
        except binascii.Error as exc:
            raise InvalidMessageError("ALLEGATO", f"contenuto non in base64: {exc}") from exc
        received.append(verified(_sibling(content, "nome"), _sibling(content, "mediaType"),
                                 _sibling(content, "sha256"), data, "base64"))
    return received
