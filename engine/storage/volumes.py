"""Named and anonymous volumes of the local driver.

A volume is a directory the engine owns, ``data_root/volumes/<name>/_data``,
with its record beside it in ``volume.json``. Containers get it bind-mounted;
it outlives them. A volume a container mounts for the first time is filled
with what the image has at the mount point (docker's copy-up), once::

    vol = volumes.create("pgdata", labels={"app": "db"})
    volumes.populate("pgdata", rootfs / "var/lib/postgresql/data")
    volumes.remove("pgdata")       # Conflict while a container uses it

Anonymous volumes (``-v /data``, an image's ``VOLUME``) get a random 64-hex
name and the ``com.docker.volume.anonymous`` label, which is what prune
looks at by default, as dockerd 23+ does.

The local driver's options cover a tmpfs (``type=tmpfs device=tmpfs
o=size=64m``) and a bind of a host directory (``type=none o=bind
device=/srv/x``), mounted on ``_data`` at first use and unmounted when the
volume is removed. Other filesystems are refused at create.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.component import Component
from engine.errors import Conflict, EngineError, InvalidParameter, NotFound, Unsupported

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
ANONYMOUS_LABEL = "com.docker.volume.anonymous"


@dataclass
class Volume:
    name: str
    path: Path  # data_root/volumes/<name>
    driver: str = "local"
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    populated: bool = False

    @property
    def mountpoint(self) -> Path:
        return self.path / "_data"

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in self.labels

    def record(self) -> dict[str, Any]:
        return {
            "Name": self.name,
            "Driver": self.driver,
            "Labels": self.labels,
            "Options": self.options,
            "CreatedAt": self.created_at,
            "Populated": self.populated,
        }

    def inspect(self) -> dict[str, Any]:
        return {
            "CreatedAt": self.created_at,
            "Driver": self.driver,
            # dockerd answers null for a volume created without labels (what
            # `docker volume create NAME` and docker-py send).
            "Labels": dict(self.labels) or None,
            "Mountpoint": str(self.mountpoint),
            "Name": self.name,
            "Options": dict(self.options) or None,
            "Scope": "local",
        }


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _du(path: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def _is_mountpoint(path: Path) -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == str(path) for line in f)
    except OSError:
        return False


class VolumeStore(Component):
    def __init__(self, daemon: Any) -> None:
        super().__init__(daemon)
        self.root = self.config.data_root / "volumes"
        self.volumes: dict[str, Volume] = {}

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o701)
        for record_path in sorted(self.root.glob("*/volume.json")):
            try:
                record = json.loads(record_path.read_text())
                volume = Volume(
                    name=record["Name"],
                    path=record_path.parent,
                    driver=record.get("Driver") or "local",
                    labels=record.get("Labels") or {},
                    options=record.get("Options") or {},
                    created_at=record.get("CreatedAt") or "",
                    populated=bool(record.get("Populated")),
                )
            except (OSError, ValueError, KeyError) as err:
                log.warning("skipping unreadable volume %s: %s", record_path, err)
                continue
            self.volumes[volume.name] = volume

    def _save(self, volume: Volume) -> None:
        path = volume.path / "volume.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(volume.record()))
        tmp.replace(path)

    def create(
        self,
        name: str | None = None,
        driver: str = "local",
        labels: dict[str, str] | None = None,
        driver_opts: dict[str, str] | None = None,
    ) -> Volume:
        """A new volume, or the existing one of that name.

        Raises InvalidParameter (bad name, bad options) and Unsupported
        (other drivers, filesystems other than tmpfs and bind).
        """
        driver = driver or "local"
        if driver != "local":
            raise Unsupported(
                f'volume driver "{driver}" is not supported by Dockyard: only "local" volumes'
            )
        anonymous = not name
        if not name:
            name = secrets.token_hex(32)
        if not NAME_RE.match(name):
            raise InvalidParameter(
                f'create {name}: "{name}" includes invalid characters for a local volume name, '
                f'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
                f"directory, use absolute path"
            )
        existing = self.volumes.get(name)
        if existing is not None:
            return existing
        options = {str(k): str(v) for k, v in (driver_opts or {}).items()}
        _check_options(name, options)
        labels = {str(k): str(v) for k, v in (labels or {}).items()}
        if anonymous:
            labels[ANONYMOUS_LABEL] = ""
        volume = Volume(
            name=name,
            path=self.root / name,
            labels=labels,
            options=options,
            created_at=_now(),
        )
        volume.mountpoint.mkdir(parents=True, exist_ok=True)
        self._save(volume)
        self.volumes[name] = volume
        self.events.publish("volume", "create", name, {"driver": "local"})
        log.info("created volume %s", name if not anonymous else name[:12])
        return volume

    def get(self, name: str) -> Volume:
        """Raises NotFound("get <name>: no such volume")."""
        volume = self.volumes.get(name)
        if volume is None:
            raise NotFound(f"get {name}: no such volume")
        return volume

    def users(self, name: str) -> list[str]:
        """Ids of the containers that mount the volume (created ones too)."""
        using = getattr(self.daemon.containers, "using_volume", None)
        if not callable(using):
            return []
        found = using(name)
        if isinstance(found, (list, tuple, set)):
            return [str(x) for x in found]
        return ["(a container)"] if found else []

    def list_volumes(self, filters: dict[str, list[str]] | None = None) -> list[Volume]:
        """Volumes matching the ``dangling``, ``name``, ``label``, ``driver`` filters."""
        filters = filters or {}
        for key in filters:
            if key not in ("dangling", "name", "label", "driver"):
                raise InvalidParameter(f"invalid filter '{key}'")
        out = []
        for volume in self.volumes.values():
            if filters.get("name") and not any(
                n in volume.name for n in filters["name"]
            ):
                continue
            if filters.get("driver") and volume.driver not in filters["driver"]:
                continue
            if filters.get("label") and not _labels_match(
                volume.labels, filters["label"]
            ):
                continue
            if filters.get("dangling"):
                value = filters["dangling"][-1].lower()
                if value not in ("1", "true", "0", "false"):
                    raise InvalidParameter(f"invalid filter 'dangling={value}'")
                if (value in ("1", "true")) == bool(self.users(volume.name)):
                    continue
            out.append(volume)
        return sorted(out, key=lambda v: v.name)

    def remove(self, name: str, force: bool = False) -> None:
        """Delete a volume and its data.

        Raises NotFound (unless ``force``), Conflict while a container uses
        it (even with ``force``, as dockerd).
        """
        volume = self.volumes.get(name)
        if volume is None:
            if force:
                return
            raise NotFound(f"get {name}: no such volume")
        users = self.users(name)
        if users:
            raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
        self._unmount(volume)
        try:
            shutil.rmtree(volume.path)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise EngineError(f"remove {name}: {err}") from err
        del self.volumes[name]
        self.events.publish("volume", "destroy", name, {"driver": volume.driver})

    def prune(
        self, filters: dict[str, list[str]] | None = None, all: bool = False
    ) -> tuple[list[str], int]:
        """Remove unused volumes: anonymous ones, or every one with ``all``.

        Returns the names removed and the bytes reclaimed.
        """
        filters = filters or {}
        if filters.get("all"):
            all = filters["all"][-1].lower() in ("1", "true")
        wanted = filters.get("label", [])
        unwanted = filters.get("label!", [])
        removed: list[str] = []
        reclaimed = 0
        for volume in list(self.volumes.values()):
            if not all and not volume.anonymous:
                continue
            if wanted and not _labels_match(volume.labels, wanted):
                continue
            if unwanted and _labels_any(volume.labels, unwanted):
                continue
            if self.users(volume.name):
                continue
            size = _du(volume.mountpoint)
            try:
                self.remove(volume.name)
            except EngineError as err:
                log.warning("prune: cannot remove volume %s: %s", volume.name, err)
                continue
            removed.append(volume.name)
            reclaimed += size
        return removed, reclaimed

    def df(self) -> list[dict[str, Any]]:
        out = []
        for volume in self.list_volumes():
            body = volume.inspect()
            body["UsageData"] = {
                "Size": _du(volume.mountpoint),
                "RefCount": len(self.users(volume.name)),
            }
            out.append(body)
        return out

    def populate(self, name: str, source_dir: Path, root: Path | None = None) -> bool:
        """Copy the image's content at the mount point into a new volume.

        Only a volume never populated and still empty is filled; it is then
        marked so a later container never copies again. With ``root`` (the
        container's rootfs) a ``source_dir`` whose symlinks lead out of it is
        not copied: an image must not make the engine copy host files.
        Blocking: the caller may run it in a thread. Returns whether anything
        was copied.
        """
        volume = self.get(name)
        if volume.populated:
            return False
        self._ensure_mounted(volume)
        copied = False
        target = volume.mountpoint
        inside = True
        if root is not None:
            real = os.path.realpath(source_dir)
            base = os.path.realpath(root)
            inside = real == base or real.startswith(base.rstrip("/") + "/")
        if (
            inside
            and source_dir.is_dir()
            and not source_dir.is_symlink()
            and not any(target.iterdir())
        ):
            result = subprocess.run(
                ["cp", "-a", "--", f"{source_dir}/.", f"{target}/"],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise EngineError(
                    f"cannot copy {source_dir} into volume {name}: {result.stderr.strip()}"
                )
            copied = True
        volume.populated = True
        self._save(volume)
        return copied

    def mount(self, name: str, container_id: str) -> None:
        """A container starts using the volume: mount its driver options if
        any, publish ``volume mount``."""
        volume = self.get(name)
        self._ensure_mounted(volume)
        self.events.publish(
            "volume",
            "mount",
            name,
            {"container": container_id, "driver": volume.driver},
        )

    def unmount(self, name: str, container_id: str) -> None:
        volume = self.volumes.get(name)
        if volume is None:
            return
        self.events.publish(
            "volume",
            "unmount",
            name,
            {"container": container_id, "driver": volume.driver},
        )

    def _ensure_mounted(self, volume: Volume) -> None:
        if not volume.options or _is_mountpoint(volume.mountpoint):
            return
        kind = volume.options.get("type", "")
        device = volume.options.get("device", "")
        opts = volume.options.get("o", "")
        if kind == "tmpfs":
            args = [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                opts or "rw",
                "tmpfs",
                str(volume.mountpoint),
            ]
        else:
            args = ["mount", "--bind", device, str(volume.mountpoint)]
            if "ro" in opts.split(","):
                args[1:2] = ["-o", "bind,ro"]
        result = subprocess.run(args, capture_output=True, text=True)
        if result.returncode != 0:
            raise EngineError(
                f"error while mounting volume '{volume.mountpoint}': {result.stderr.strip()}"
            )

    def _unmount(self, volume: Volume) -> None:
        if volume.options and _is_mountpoint(volume.mountpoint):
            subprocess.run(
                ["umount", "-l", str(volume.mountpoint)], capture_output=True
            )


def _check_options(name: str, options: dict[str, str]) -> None:
    if not options:
        return
    unknown = set(options) - {"type", "device", "o"}
    if unknown:
        raise InvalidParameter(
            f"create {name}: invalid option key: {sorted(unknown)[0]!r}"
        )
    kind = options.get("type", "")
    opts = [o for o in options.get("o", "").split(",") if o]
    if kind == "tmpfs":
        return
    if "bind" in opts and kind in ("none", ""):
        device = options.get("device", "")
        if not device or not os.path.isabs(device):
            raise InvalidParameter(
                f"create {name}: a bind volume needs device=/absolute/path"
            )
        if not os.path.isdir(device):
            raise InvalidParameter(f"create {name}: device {device} is not a directory")
        return
    raise Unsupported(
        f"create {name}: local volume type {kind!r} is not supported by Dockyard: "
        "use type=tmpfs, or type=none o=bind device=/path"
    )


def _labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _labels_any(labels: dict[str, str], unwanted: list[str]) -> bool:
    for item in unwanted:
        key, sep, value = item.partition("=")
        if key in labels and (not sep or labels[key] == value):
            return True
    return False
