"""Progress messages of pulls and pushes, in the JSON shape the CLI renders.

The CLI draws one line per ``id`` (a layer's short digest) and redraws it
in place as messages for that id arrive::

    {"status": "Downloading", "progressDetail": {"current": 1048576,
     "total": 3145728}, "progress": "[=====>    ]  1.049MB/3.146MB",
     "id": "a3ed95caeb02"}

Workers run in threads; :class:`Channel` carries their messages into the
event loop and rate-limits byte counters (one update per 100 ms per id).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

Message = dict[str, Any]
BAR_WIDTH = 50
UPDATE_INTERVAL = 0.1


def human_size(size: float) -> str:
    """Decimal units with three significant digits, as docker prints them."""
    units = ["B", "kB", "MB", "GB", "TB"]
    unit = 0
    while size >= 1000 and unit < len(units) - 1:
        size /= 1000
        unit += 1
    return f"{size:.4g}{units[unit]}"


def bar(current: int, total: int) -> str:
    if total <= 0:
        return f"{human_size(current):>8}"
    filled = min(BAR_WIDTH, BAR_WIDTH * current // total)
    arrow = ">" if filled < BAR_WIDTH else ""
    body = "=" * max(filled - (1 if arrow else 0), 0) + arrow
    return f"[{body:<{BAR_WIDTH}}] {human_size(current):>8}/{human_size(total)}"


def status(text: str, layer: str | None = None, **extra: Any) -> Message:
    message: Message = {"status": text}
    if layer is not None:
        message["progressDetail"] = {}
        message["id"] = layer
    message.update(extra)
    return message


def counter(text: str, layer: str, current: int, total: int) -> Message:
    return {
        "status": text,
        "progressDetail": {"current": current, "total": total},
        "progress": bar(current, total),
        "id": layer,
    }


def short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class Channel:
    """A queue of messages fed from the loop or from worker threads."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self._last: dict[tuple[str, str], float] = {}

    def put(self, message: Message) -> None:
        """From the event loop."""
        self.queue.put_nowait(message)

    def put_threadsafe(self, message: Message) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, message)

    def progress(self, text: str, layer: str, current: int, total: int) -> None:
        """From a worker thread; drops updates closer than UPDATE_INTERVAL."""
        now = time.monotonic()
        key = (text, layer)
        if current < total and now - self._last.get(key, 0.0) < UPDATE_INTERVAL:
            return
        self._last[key] = now
        self.put_threadsafe(counter(text, layer, current, total))
