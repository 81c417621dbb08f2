"""The engine's event bus, served as ``GET /events``.

Every component publishes what happened to the objects it owns::

    daemon.events.publish("container", "start", container.id,
                          {"name": "web", "image": "busybox"})

Subscribers get a live queue; a bounded history answers ``since``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

HISTORY = 1024


@dataclass
class Event:
    type: str
    action: str
    actor_id: str
    attributes: dict[str, str] = field(default_factory=dict)
    time_nano: int = field(default_factory=time.time_ns)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Type": self.type,
            "Action": self.action,
            "Actor": {"ID": self.actor_id, "Attributes": dict(self.attributes)},
            "scope": "local",
            "time": self.time_nano // 1_000_000_000,
            "timeNano": self.time_nano,
        }
        # Clients older than API 1.22 (and docker-py's helpers) read these.
        if self.type in ("container", "image"):
            body["status"] = self.action
            body["id"] = self.actor_id
            if "image" in self.attributes:
                body["from"] = self.attributes["image"]
        return body

    def matches(self, filters: dict[str, list[str]]) -> bool:
        for key, wanted in filters.items():
            if not wanted:
                continue
            if key == "type" and self.type not in wanted:
                return False
            if key == "event" and not any(
                self.action == w or self.action.split(":")[0] == w for w in wanted
            ):
                return False
            if key in ("container", "image", "volume", "network", "daemon"):
                if self.type != key:
                    return False
                names = {
                    self.actor_id,
                    self.actor_id[:12],
                    self.attributes.get("name", ""),
                }
                if self.type == "image":
                    names.add(self.attributes.get("name", ""))
                if not names & set(wanted) and not any(
                    self.actor_id.startswith(w) for w in wanted
                ):
                    return False
            if key == "label":
                for label in wanted:
                    name, _, value = label.partition("=")
                    if name not in self.attributes:
                        return False
                    if value and self.attributes[name] != value:
                        return False
        return True


class EventBus:
    def __init__(self) -> None:
        self._history: deque[Event] = deque(maxlen=HISTORY)
        self._queues: set[asyncio.Queue[Event]] = set()

    def publish(
        self,
        type: str,
        action: str,
        actor_id: str,
        attributes: dict[str, str] | None = None,
    ) -> Event:
        event = Event(type, action, actor_id, dict(attributes or {}))
        self._history.append(event)
        for queue in self._queues:
            queue.put_nowait(event)
        return event

    def history(self, since_nano: int | None = None) -> list[Event]:
        return [
            e for e in self._history if since_nano is None or e.time_nano >= since_nano
        ]

    async def subscribe(
        self,
        filters: dict[str, list[str]] | None = None,
        since_nano: int | None = None,
        until_nano: int | None = None,
    ) -> AsyncIterator[Event]:
        """Past events from ``since``, then live ones until ``until``."""
        filters = filters or {}
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._queues.add(queue)
        try:
            if since_nano is not None:
                for event in self.history(since_nano):
                    if until_nano is not None and event.time_nano > until_nano:
                        return
                    if event.matches(filters):
                        yield event
            while True:
                timeout = None
                if until_nano is not None:
                    timeout = max(0.0, (until_nano - time.time_ns()) / 1e9)
                try:
                    event = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    return
                if event.matches(filters):
                    yield event
        finally:
            self._queues.discard(queue)
