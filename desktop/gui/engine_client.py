"""The dashboard's view of an engine: rows for its tables, actions, streams.

A thin layer over docker-py's low-level ``APIClient`` that returns small
records shaped for the tables and raises one error type whose text is the
engine's own message::

    client = EngineClient("unix:///run/dockyard/docker.sock")
    for row in client.containers():
        print(row.name, row.status, [p.url for p in row.ports])
    events = client.events()          # blocks per event; close() from
    for event in events: ...          # another thread ends it

Every call blocks; the GUI runs them in ``workers``. No Qt here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Short calls; streams (events, logs, pulls) are opened without a timeout.
CALL_TIMEOUT = 30


class EngineError(Exception):
    """An Engine API call failed; the text is the engine's message."""


class Stream(Protocol):
    """An open response stream: iterate it, ``close()`` it from any thread."""

    def __iter__(self) -> Iterator[Any]: ...

    def __next__(self) -> Any: ...

    def close(self) -> None: ...


@dataclass
class Port:
    """A published port: ``0.0.0.0:8080->80/tcp``."""

    private: int
    public: int | None
    protocol: str = "tcp"
    ip: str = ""

    @property
    def url(self) -> str | None:
        if self.public is None or self.protocol != "tcp":
            return None
        host = self.ip if self.ip and self.ip not in ("0.0.0.0", "::") else "localhost"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.public}"

    def __str__(self) -> str:
        if self.public is None:
            return f"{self.private}/{self.protocol}"
        return f"{self.public}→{self.private}/{self.protocol}"


@dataclass
class ContainerRow:
    id: str
    name: str
    image: str
    state: str
    status: str
    ports: list[Port] = field(default_factory=list)
    cpu_percent: float | None = None
    memory_bytes: int | None = None

    @property
    def running(self) -> bool:
        return self.state in ("running", "restarting", "paused")


@dataclass
class ImageRow:
    id: str
    tags: list[str]
    size: int
    created: datetime | None

    @property
    def name(self) -> str:
        return self.tags[0] if self.tags else self.id.removeprefix("sha256:")[:12]


@dataclass
class VolumeRow:
    name: str
    driver: str
    mountpoint: str
    size: int | None = None


class EngineClient:
    """A client for one engine socket (``unix://``, ``tcp://``, ``npipe://``)."""

    def __init__(self, host: str, streams_only: bool = False) -> None:
        """``streams_only``: no read timeout once connected, for a client that
        follows a log that may stay quiet for long."""
        self.host = host
        self.streams_only = streams_only
        self._api: Any = None
        self._lock = threading.Lock()

    @property
    def api(self) -> Any:
        # docker-py pulls in requests and urllib3; import it only when the
        # first call runs (on a worker), so the window paints sooner.
        with self._lock:
            return self._connect()

    def _connect(self) -> Any:
        if self._api is None:
            import docker

            # "auto" asks /version: Docker 20.10 refuses clients newer than
            # its API 1.41, and Dockyard's engine serves 1.47.
            try:
                self._api = docker.APIClient(
                    base_url=self.host, version="auto", timeout=CALL_TIMEOUT
                )
            except docker.errors.DockerException as err:
                raise EngineError(
                    f"Cannot reach the engine at {self.host}: {err}"
                ) from err
            if self.streams_only:
                # The version check above stays bounded; the streams do not.
                self._api.timeout = None
        return self._api

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        import docker
        import requests

        try:
            return getattr(self.api, method)(*args, **kwargs)
        except docker.errors.APIError as err:
            message = err.explanation or str(err)
            if isinstance(message, bytes):
                message = message.decode(errors="replace")
            raise EngineError(str(message)) from err
        except (requests.exceptions.RequestException, OSError) as err:
            raise EngineError(f"Cannot reach the engine at {self.host}: {err}") from err
        except docker.errors.DockerException as err:
            raise EngineError(str(err)) from err

    def close(self) -> None:
        if self._api is not None:
            self._api.close()

    # system

    def ping(self) -> bool:
        try:
            return bool(self._call("ping"))
        except EngineError:
            return False

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = self._call("info")
        return info

    def disk_used(self) -> int | None:
        """Bytes used by layers, containers and volumes; None when unknown."""
        try:
            df = self._call("df")
        except EngineError:
            return None
        total = int(df.get("LayersSize") or 0)
        for container in df.get("Containers") or []:
            total += int(container.get("SizeRw") or 0)
        for volume in df.get("Volumes") or []:
            total += max(0, int((volume.get("UsageData") or {}).get("Size", 0) or 0))
        return total

    def events(self) -> Stream:
        """The engine's live ``/events``, decoded; ``close()`` ends it."""
        import docker

        try:
            stream: Stream = self._call("events", decode=True)
        except docker.errors.DockerException as err:
            raise EngineError(str(err)) from err
        return stream

    # containers

    def containers(self) -> list[ContainerRow]:
        rows = []
        for c in self._call("containers", all=True):
            names = c.get("Names") or [c["Id"][:12]]
            ports = [
                Port(
                    private=int(p.get("PrivatePort") or 0),
                    public=int(p["PublicPort"]) if p.get("PublicPort") else None,
                    protocol=p.get("Type") or "tcp",
                    ip=p.get("IP") or "",
                )
                for p in c.get("Ports") or []
            ]
            # docker lists 0.0.0.0 and :: bindings of one port; show it once.
            unique: dict[tuple[int, int | None, str], Port] = {}
            for port in ports:
                unique.setdefault((port.private, port.public, port.protocol), port)
            rows.append(
                ContainerRow(
                    id=c["Id"],
                    name=names[0].lstrip("/"),
                    image=c.get("Image") or "",
                    state=c.get("State") or "",
                    status=c.get("Status") or "",
                    ports=sorted(
                        unique.values(), key=lambda p: (p.public or 0, p.private)
                    ),
                )
            )
        return sorted(rows, key=lambda r: r.name)

    def start(self, container: str) -> None:
        log.info("starting container %s", container)
        self._call("start", container)

    def stop(self, container: str) -> None:
        log.info("stopping container %s", container)
        self._call("stop", container)

    def restart(self, container: str) -> None:
        log.info("restarting container %s", container)
        self._call("restart", container)

    def remove(self, container: str) -> None:
        log.info("removing container %s", container)
        self._call("remove_container", container, force=True)

    def stats(self, container: str) -> tuple[float | None, int | None]:
        """CPU percent and memory in use, from one ``stats`` sample."""
        raw = self._call("stats", container, stream=False, one_shot=True)
        return cpu_percent(raw), memory_used(raw)

    def logs(self, container: str, tail: int = 500) -> Stream:
        """The container's log from the last ``tail`` lines on, followed."""
        stream: Stream = self._call(
            "logs", container, stream=True, follow=True, tail=tail, timestamps=False
        )
        return stream

    def run(self, image: str) -> str:
        """Create and start a detached container from ``image``; its id."""
        log.info("running a container from %s", image)
        created = self._call("create_container", image, detach=True)
        self._call("start", created["Id"])
        return str(created["Id"])

    # images

    def images(self) -> list[ImageRow]:
        """One row per tag, as ``docker images`` lists them; untagged once."""
        rows = []
        for image in self._call("images"):
            tags = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
            created = image.get("Created")
            for tag in tags or [None]:
                rows.append(
                    ImageRow(
                        id=image["Id"],
                        tags=[tag] if tag else [],
                        size=int(image.get("Size") or 0),
                        created=datetime.fromtimestamp(created, UTC)
                        if created
                        else None,
                    )
                )
        return sorted(rows, key=lambda r: r.name)

    def pull(self, reference: str) -> Iterator[dict[str, Any]]:
        """Pull ``reference``; yields the engine's progress messages."""
        log.info("pulling %s", reference)
        repository, tag = split_reference(reference)
        stream = self._call("pull", repository, tag=tag, stream=True, decode=True)
        for message in stream:
            if "error" in message:
                raise EngineError(message.get("error") or "pull failed")
            yield message

    def remove_image(self, image: str) -> None:
        log.info("removing image %s", image)
        self._call("remove_image", image)

    # volumes

    def volumes(self) -> list[VolumeRow]:
        listed = self._call("volumes") or {}
        sizes: dict[str, int] = {}
        try:
            for volume in self._call("df").get("Volumes") or []:
                size = (volume.get("UsageData") or {}).get("Size", -1)
                if size is not None and size >= 0:
                    sizes[volume["Name"]] = int(size)
        except EngineError as err:
            log.debug("no volume sizes: %s", err)
        rows = [
            VolumeRow(
                name=v["Name"],
                driver=v.get("Driver") or "local",
                mountpoint=v.get("Mountpoint") or "",
                size=sizes.get(v["Name"]),
            )
            for v in listed.get("Volumes") or []
        ]
        return sorted(rows, key=lambda r: r.name)

    def remove_volume(self, name: str) -> None:
        log.info("removing volume %s", name)
        self._call("remove_volume", name)


def split_reference(reference: str) -> tuple[str, str]:
    """``registry:5000/app:1`` -> (``registry:5000/app``, ``1``)."""
    if "@" in reference:
        repository, digest = reference.split("@", 1)
        return repository, digest
    name, _, last = reference.rpartition("/")
    if ":" in last:
        last, tag = last.split(":", 1)
        return (f"{name}/{last}" if name else last), tag
    return reference, "latest"


def cpu_percent(stats: dict[str, Any]) -> float | None:
    """docker's CPU %: the container's share of the host's time, times CPUs."""
    try:
        cpu = stats["cpu_stats"]
        pre = stats.get("precpu_stats") or {}
        used = cpu["cpu_usage"]["total_usage"] - (pre.get("cpu_usage") or {}).get(
            "total_usage", 0
        )
        system = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
        cpus = cpu.get("online_cpus") or len(
            cpu["cpu_usage"].get("percpu_usage") or [1]
        )
    except (KeyError, TypeError):
        return None
    if system <= 0 or used < 0:
        return 0.0
    return float(used) / system * cpus * 100.0


def memory_used(stats: dict[str, Any]) -> int | None:
    """Memory in use less the page cache, as ``docker stats`` shows it."""
    memory = stats.get("memory_stats") or {}
    usage = memory.get("usage")
    if usage is None:
        return None
    details = memory.get("stats") or {}
    cache = details.get("inactive_file", details.get("total_inactive_file", 0))
    return max(0, int(usage) - int(cache or 0))


def human_size(size: int | None) -> str:
    """``12.3 MB`` in decimal units, as the docker CLI prints sizes."""
    if size is None:
        return "—"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
