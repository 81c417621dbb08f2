"""What the engine knows about its layers' compressed forms in registries.

A registry stores layers compressed (``tar+gzip``), the image store keeps
them by ``diff_id`` (the digest of the uncompressed tar). To push without
compressing again, and to mount a blob from another repository of the same
registry, the engine remembers, per diff_id, the compressed blobs it has
seen and where::

    distribution/diffid/<diff hex>.json
      [{"digest": "sha256:...", "mediaType": "...", "size": 123,
        "repos": ["127.0.0.1:5000/x"]}]

The files are small and written atomically (temp file, rename).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Metadata:
    def __init__(self, root: Path) -> None:
        self.dir = root / "diffid"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _path(self, diff_id: str) -> Path:
        return self.dir / f"{diff_id.split(':', 1)[-1]}.json"

    def blobs(self, diff_id: str) -> list[dict[str, Any]]:
        """Compressed forms known for ``diff_id``, most recently seen first."""
        try:
            doc = json.loads(self._path(diff_id).read_text())
        except (OSError, ValueError):
            return []
        return [entry for entry in doc if isinstance(entry, dict)]

    def remember(
        self, diff_id: str, digest: str, media_type: str, size: int, repo: str | None
    ) -> None:
        """Record that ``digest`` is a compressed form of ``diff_id`` (in ``repo``)."""
        with self._lock:
            entries = self.blobs(diff_id)
            entry = next((e for e in entries if e.get("digest") == digest), None)
            if entry is None:
                entry = {
                    "digest": digest,
                    "mediaType": media_type,
                    "size": size,
                    "repos": [],
                }
            else:
                entries.remove(entry)
            repos = [r for r in entry.get("repos", []) if r != repo]
            entry["repos"] = ([repo] if repo else []) + repos[:15]
            entries.insert(0, entry)
            self._write(diff_id, entries[:8])

    def _write(self, diff_id: str, entries: list[dict[str, Any]]) -> None:
        fd, name = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(entries, f)
            os.replace(name, self._path(diff_id))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise

    def clean(self) -> None:
        for stale in self.dir.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                stale.unlink()
