"""The build cache: which image a step produced from which parent.

A step's key is a digest over its parent image id and everything that decides
its outcome: the instruction after expansion, the build args it sees and, for
COPY and ADD, the content and metadata of the files it copies. The index
maps keys to the image each step made and lives in
``<data-root>/builder/cache.json``::

    key = step_key(parent_id, "run", ["/bin/sh", "-c", "make"], {"X": "1"})
    cache.get(key)          # -> "sha256:..." or None
    cache.put(key, image_id)

An entry whose image was deleted since is a miss, and is dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def step_key(parent: str, *parts: Any) -> str:
    """A stable digest over the parent id and JSON-able step parts."""
    payload = json.dumps([parent, *parts], sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


class BuildCache:
    """The persistent key -> image id index."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "cache.json"
        self._lock = threading.Lock()
        self._entries: dict[str, str] = {}
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            self._entries = json.loads(self.path.read_text())
        except FileNotFoundError:
            self._entries = {}
        except (OSError, ValueError) as err:
            log.warning("build cache index unreadable, starting empty: %s", err)
            self._entries = {}

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._entries))
        os.replace(tmp, self.path)

    def get(self, key: str, exists: Callable[[str], bool]) -> str | None:
        """The cached image for ``key`` if it still exists."""
        with self._lock:
            self._load()
            image_id = self._entries.get(key)
            if image_id is None:
                return None
            if exists(image_id):
                return image_id
            del self._entries[key]
            self._save()
            return None

    def put(self, key: str, image_id: str) -> None:
        with self._lock:
            self._load()
            self._entries[key] = image_id
            self._save()

    def prune(self) -> list[str]:
        """Forget every entry; the images themselves stay until image prune."""
        with self._lock:
            self._load()
            keys = list(self._entries)
            self._entries = {}
            self._save()
            return keys
