"""The filesystem blob store: `<root>/sha256/ab/cd/<hash>`, written by atomic rename, mode 0600.

Content-addressed: two uploads of the same bytes share one file, and a file's name is its
proof of integrity. A blob is first streamed into `<root>/tmp/`, on the same filesystem, then
renamed into place, so a reader never sees half a blob and a crash leaves only a temporary.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

from service.attachments import BlobStore, BlobWriter

__all__ = ["FileBlobStore"]

_HEX = re.compile(r"[0-9a-f]{64}")


class _FileBlobWriter(BlobWriter):
    def __init__(self, store: FileBlobStore) -> None:
        self._store = store
        fd, name = tempfile.mkstemp(dir=store.root / "tmp", prefix="upload-")
        os.fchmod(fd, 0o600)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._path = Path(name)
        self._hash = hashlib.sha256()
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def write(self, chunk: bytes) -> None:
        assert self._file is not None, "the blob was already committed or discarded"
        self._file.write(chunk)
        self._hash.update(chunk)
        self._size += len(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def commit(self) -> str:
        assert self._file is not None, "the blob was already committed or discarded"
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        digest = self._hash.hexdigest()
        target = self._store.path_of(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path, target)  # atomic on one filesystem; same bytes if it existed
        return digest

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._path.unlink(missing_ok=True)


class FileBlobStore(BlobStore):
    """Blobs as files under `root` (created with mode 0700 when missing).

    Args:
        root: the store's folder; `tmp/` and `sha256/` live under it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        for folder in (root, root / "tmp", root / "sha256"):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path_of(self, sha256: str) -> Path:
        """Where the blob with this hash lives.

        Raises:
            ValueError: `sha256` is not 64 lower-case hex digits (never a path of its own).
        """
        if not _HEX.fullmatch(sha256):
            raise ValueError("a blob is named by its SHA-256 in lower-case hex")
        return self.root / "sha256" / sha256[:2] / sha256[2:4] / sha256

    def writer(self) -> BlobWriter:
        return _FileBlobWriter(self)

    def open(self, sha256: str) -> BinaryIO:
        return self.path_of(sha256).open("rb")

    def exists(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    def delete(self, sha256: str) -> None:
        self.path_of(sha256).unlink(missing_ok=True)
