"""`POST /v1/attachments`: a signed upload streamed to the blob store, hashed on the way.

The body is never held whole: it is read in the server's chunks, each written to a temporary
blob and fed to SHA-256. The ModI tokens are verified before a byte of the body is read (the
`Digest` header and its `Agid-JWT-Signature` cover the declared hash, INTEGRITY_REST_01), so an
unsigned upload costs no disk; the body must then hash to that declared `Digest` (else 422 and
nothing is kept), and stay within `[attachments] max_bytes` (413 as soon as it is passed).
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import Caller, authenticate_sync
from api.context import context_of
from api.modi import declared_sha256
from api.problems import json_response, problem_response, store_unavailable
from service.attachments import AttachmentLimits, AttachmentRecord, AttachmentService
from service.ports import StoreError

__all__ = ["attachment_json", "attachment_routes", "get_attachment", "upload_attachment"]

log = structlog.get_logger("crocevia.api")

#: A file name's characters we refuse: controls and path separators (it becomes a file name
#: at the agencies).
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


def attachment_json(record: AttachmentRecord) -> dict[str, Any]:
    """The attachment as the API shows it (timestamps RFC 3339 with an offset)."""
    return {"attachmentId": record.id, "sha256": record.sha256, "size": record.size,
            "mediaType": record.media_type, "fileName": record.file_name,
            "createdAt": record.created_at.isoformat()}


#: The longest `Content-Disposition` read (the document's bound): a file name has at most 255
#: characters, even percent-encoded in `filename*` it fits.
_MAX_DISPOSITION = 1024


class _Refused(Exception):
    def __init__(self, status: int, slug: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail


def _file_name(request: Request) -> str | None:
    """The optional `Content-Disposition` file name (RFC 6266, `filename*` included)."""
    header = request.headers.get("content-disposition")
    if header is None:
        return None
    name: str | None = None
    if len(header) <= _MAX_DISPOSITION:
        message = EmailMessage()
        try:
            message["content-disposition"] = header
            name = message.get_filename()
        except RecursionError:  # the stdlib parser recurses once per nested comment: "((((…"
            name = None
    if name is None or not name.strip() or len(name) > 255 or _BAD_NAME.search(name):
        raise _Refused(400, "invalid-file-name", "Bad Request",
                       "Content-Disposition must name a file of 1 to 255 characters without "
                       "path separators or control characters")
    return name.strip()


async def upload_attachment(request: Request) -> Response:
    """`POST /v1/attachments`: 201 with `{attachmentId, sha256, size, mediaType, fileName, createdAt}`."""
    ctx = context_of(request)
    service = ctx.attachments
    assert service is not None  # the route is mounted only with the service
    caller = await run_in_threadpool(authenticate_sync, ctx.guard, request, b"", streamed=True)
    if isinstance(caller, Response):
        return caller
    assert caller.user is not None
    try:
        media_type, file_name, declared = _check_head(request, service.limits)
        record = await _receive(request, service, caller, media_type, file_name, declared, ctx.guard.now())
    except _Refused as refused:
        await _audit(ctx.store, caller, "attachment_refused", refused.slug, {"status": refused.status})
        log.info("attachment_refused", problem=refused.slug)
        # The rest of an unread body is not waited for: the connection is closed after the answer.
        return problem_response(refused.status, refused.slug, refused.title, refused.detail,
                                instance=request.url.path, headers={"Connection": "close"})
    except StoreError:
        log.warning("store_unavailable", exc_info=True)
        return store_unavailable(request, "the attachment store is not reachable; nothing was kept, retry later")
    except ClientDisconnect:
        # The portal went away mid-upload: the temporary blob is gone, nobody reads an answer.
        log.info("attachment_abandoned")
        return problem_response(400, "upload-interrupted", "Bad Request", "the upload was interrupted",
                                instance=request.url.path)
    log.info("attachment_uploaded", attachment_id=record.id, size=record.size)
    if service.sweep_due(record.created_at):
        await _sweep(service, record.created_at)
    return json_response(attachment_json(record), 201, {"Location": f"/v1/attachments/{record.id}"})


def _check_head(request: Request, limits: AttachmentLimits) -> tuple[str, str | None, str]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in limits.media_types:
        raise _Refused(415, "unsupported-media-type", "Unsupported Media Type",
                       f"an attachment must be one of: {', '.join(sorted(limits.media_types))}")
    declared_length = request.headers.get("content-length")
    if declared_length is not None and declared_length.isdigit() and int(declared_length) > limits.max_bytes:
        raise _Refused(413, "attachment-too-large", "Content Too Large",
                       f"an attachment may be at most {limits.max_bytes} bytes")
    declared = declared_sha256(request.headers)
    assert declared is not None  # the streamed verification refused a request without one
    return media_type, _file_name(request), declared


async def _receive(request: Request, service: AttachmentService, caller: Caller, media_type: str,
                   file_name: str | None, declared: str, now: datetime) -> AttachmentRecord:
    """Stream the body into a blob, check size and hash, keep blob and row (or neither)."""
    assert caller.user is not None
    writer = service.blobs.writer()
    try:
        async for chunk in request.stream():
            if writer.size + len(chunk) > service.limits.max_bytes:
                raise _Refused(413, "attachment-too-large", "Content Too Large",
                               f"an attachment may be at most {service.limits.max_bytes} bytes")
            # A chunk is at most the server's read size (64 KiB): a local write, not worth a thread.
            writer.write(chunk)
        if writer.size == 0:
            raise _Refused(400, "empty-attachment", "Bad Request", "the attachment is empty")
        actual = writer.hexdigest()
        if actual != declared:
            raise _Refused(422, "attachment-digest-mismatch", "Unprocessable Content",
                           f"the body's SHA-256 is {actual}, the signed Digest declares {declared}: "
                           "it changed after signing or was cut short; nothing was kept")
        sha256 = await run_in_threadpool(writer.commit)
    finally:
        writer.discard()
    record = AttachmentRecord(id="att_" + secrets.token_hex(12), sha256=sha256, size=writer.size,
                              media_type=media_type, file_name=file_name, portal=caller.portal,
                              owner=caller.user.tax_code,
                              created_at=now.replace(microsecond=0))
    try:
        await run_in_threadpool(service.store.add, record)
    except StoreError:
        # The same bytes may back another attachment: remove the blob only when none names it.
        try:
            if not await run_in_threadpool(service.store.sha256_in_use, sha256):
                service.blobs.delete(sha256)
        except StoreError:
            pass  # the expiry sweep removes blobs no row names
        raise
    return record


async def _sweep(service: AttachmentService, now: datetime) -> None:
    """Expire unreferenced attachments (uploads drive it: no upload, nothing new to expire)."""
    try:
        expired = await run_in_threadpool(service.expire, now)
    except StoreError:
        log.warning("attachment_sweep_failed", exc_info=True)
        return
    if expired:
        log.info("attachments_expired", count=expired)


async def _audit(store: Any, caller: Caller, action: str, outcome: str, detail: dict[str, Any]) -> None:
    try:
        await run_in_threadpool(store.audit, caller.actor, action, "", outcome,
                                {**detail, **caller.audit_context()})
    except StoreError:
        log.warning("audit_unavailable", exc_info=True)


async def get_attachment(request: Request) -> Response:
    """`GET /v1/attachments/{attachmentId}`: the metadata of one of the caller's own uploads."""
    ctx = context_of(request)
    service = ctx.attachments
    assert service is not None  # the route is mounted only with the service
    caller = await run_in_threadpool(authenticate_sync, ctx.guard, request, b"")
    if isinstance(caller, Response):
        return caller
    assert caller.user is not None
    attachment_id = request.path_params["attachmentId"]
    try:
        record = (await run_in_threadpool(service.store.get_many, [attachment_id])).get(attachment_id)
    except StoreError:
        return store_unavailable(request, "the attachment store is not reachable; retry later")
    # Another portal's or user's upload is as absent as an unknown one.
    if record is None or record.portal != caller.portal or record.owner != caller.user.tax_code:
        return problem_response(404, "not-found", "Not Found", f"no attachment {attachment_id}",
                                instance=request.url.path)
    return json_response(attachment_json(record))


def attachment_routes() -> list[Route]:
    """The attachments routes (mounted when the hub has a blob store)."""
    return [Route("/v1/attachments", upload_attachment, methods=["POST"]),
            Route("/v1/attachments/{attachmentId}", get_attachment, methods=["GET"])]
