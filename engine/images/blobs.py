"""Content-addressed blobs: manifests, image configs and layer tars.

A blob lives at ``blobs/sha256/<hex>`` and its name is the SHA-256 of its
bytes, so a blob on disk is always whole and always what was asked for.
New content goes to ``ingest/`` first and is renamed into place only once
its digest checks out::

    with store.blobs.ingest("sha256:ab12...") as writer:
        for chunk in response:
            writer.write(chunk)
    # renamed into blobs/sha256/ab12... on leaving the block; a mismatch raises
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from types import TracebackType

from engine.errors import InvalidParameter, NotFound

log = logging.getLogger(__name__)

ALGORITHM = "sha256"


def sha256_digest(data: bytes) -> str:
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def split_digest(digest: str) -> str:
    """The hex part of ``sha256:<hex>``; raises InvalidParameter otherwise."""
    algorithm, _, hex_part = digest.partition(":")
    if (
        algorithm != ALGORITHM
        or len(hex_part) != 64
        or any(c not in "0123456789abcdef" for c in hex_part)
    ):
        raise InvalidParameter(f"invalid digest {digest!r}: want sha256:<64 hex>")
    return hex_part


class BlobWriter:
    """A blob being written: hashes as it goes, lands atomically on commit.

    Used as a context manager, it commits when the block ends normally and
    discards the partial file when it raises.
    """

    def __init__(self, blobs: BlobStore, expected: str | None) -> None:
        self._blobs = blobs
        self.expected = expected
        self._hash = hashlib.sha256()
        self.size = 0
        fd, name = tempfile.mkstemp(dir=blobs.ingest_dir, prefix="blob-")
        self.temp_path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self.digest: str | None = None

    def write(self, data: bytes | memoryview) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._file.write(data)

    def commit(self) -> str:
        """Verify and move into place; returns the digest.

        Raises InvalidParameter when the content does not match the digest
        it was expected to have.
        """
        if self.digest is not None:
            return self.digest
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        digest = f"{ALGORITHM}:{self._hash.hexdigest()}"
        if self.expected is not None and digest != self.expected:
            self.abort()
            raise InvalidParameter(
                f"digest mismatch: expected {self.expected}, content has {digest}"
            )
        os.chmod(self.temp_path, 0o644)
        os.replace(self.temp_path, self._blobs.path(digest))
        self.digest = digest
        return digest

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.temp_path.unlink()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class BlobStore:
    """``blobs/sha256/<hex>`` under the image root, with an ingest area."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "blobs" / ALGORITHM
        self.ingest_dir = root / "ingest"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ingest_dir.mkdir(parents=True, exist_ok=True)
        # Leftovers of writes cut short by a crash are never referenced.
        for stale in self.ingest_dir.iterdir():
            with contextlib.suppress(OSError):
                stale.unlink()

    def path(self, digest: str) -> Path:
        return self.dir / split_digest(digest)

    def exists(self, digest: str) -> bool:
        try:
            return self.path(digest).is_file()
        except InvalidParameter:
            return False

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def read(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def write(self, data: bytes) -> str:
        """Store ``data``; returns its digest (a no-op when already present)."""
        digest = sha256_digest(data)
        if not self.exists(digest):
            with self.ingest(digest) as writer:
                writer.write(data)
        return digest

    def ingest(self, expected_digest: str | None = None) -> BlobWriter:
        """A writer for new content, verified against ``expected_digest``."""
        if expected_digest is not None:
            split_digest(expected_digest)
        return BlobWriter(self, expected_digest)

    def adopt(self, path: Path, digest: str) -> None:
        """Move an already hashed file (same filesystem) into the store."""
        os.chmod(path, 0o644)
        os.replace(path, self.path(digest))

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError, InvalidParameter):
            self.path(digest).unlink()
            log.debug("deleted blob %s", digest)
