"""A container: its record on disk and the shapes the API shows of it.

The record lives in ``<data-root>/containers/<id>/container.json`` and holds
what ``docker inspect`` shows, so that an engine restart finds every
container again::

    c = Container.load(data_root / "containers" / cid)
    c.state["Status"]         # "running"
    c.inspect()["Name"]       # "/web"

Runtime files (the OCI bundle, conmon's sockets and fifos) live under the
exec root, which is a tmpfs on a real host: they last as long as the
container's processes do.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ZERO_TIME = "0001-01-01T00:00:00Z"


def now_rfc3339() -> str:
    """The current time as Go's RFC 3339 with nanoseconds, as dockerd prints it."""
    return rfc3339_of(time.time_ns())


def rfc3339_of(ns: int) -> str:
    stamp = datetime.fromtimestamp(ns // 1_000_000_000, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}Z"


def parse_rfc3339(value: str) -> float:
    """Seconds since the epoch of an RFC 3339 stamp; 0 for the zero time."""
    if not value or value.startswith("0001-"):
        return 0.0
    main, _, frac = value.rstrip("Z").partition(".")
    base = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return base.timestamp() + (float("0." + frac) if frac else 0.0)


def new_state() -> dict[str, Any]:
    """State as inspect shows it; ``Health`` is added only with a health check:

    ``{"Status": "starting"|"healthy"|"unhealthy", "FailingStreak": 0,
    "Log": [{"Start": ..., "End": ..., "ExitCode": 0, "Output": "..."}]}``
    (the last five probes; see health.py).
    """
    return {
        "Status": "created",
        "Running": False,
        "Paused": False,
        "Restarting": False,
        "OOMKilled": False,
        "Dead": False,
        "Pid": 0,
        "ExitCode": 0,
        "Error": "",
        "StartedAt": ZERO_TIME,
        "FinishedAt": ZERO_TIME,
    }


@dataclass
class Container:
    """One container; ``dir`` is its data directory, ``bundle`` its OCI bundle."""

    id: str
    name: str
    config: dict[str, Any]
    host_config: dict[str, Any]
    image_id: str
    dir: Path
    bundle: Path
    created: str = field(default_factory=now_rfc3339)
    path: str = ""
    args: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=new_state)
    network_settings: dict[str, Any] = field(default_factory=dict)
    # Mounts as ``docker inspect`` shows them, and as OCI mounts for the spec.
    mounts: list[dict[str, Any]] = field(default_factory=list)
    oci_mounts: list[dict[str, Any]] = field(default_factory=list)
    restart_count: int = 0
    # True once a user stopped it: ``unless-stopped`` stays down after that.
    manually_stopped: bool = False
    exec_ids: list[str] = field(default_factory=list)
    conmon_pid: int = 0
    # Paths of the /etc files bound into the container.
    resolv_conf_path: str = ""
    hostname_path: str = ""
    hosts_path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    # -- files --

    @property
    def record_path(self) -> Path:
        return self.dir / "container.json"

    @property
    def log_path(self) -> Path:
        """conmon's k8s-file log: ``<RFC3339Nano> stdout|stderr F|P <text>``."""
        return self.dir / "ctr.log"

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def work(self) -> Path:
        return self.dir / "work"

    @property
    def rootfs(self) -> Path:
        """Where the overlay is mounted while the container runs."""
        return self.bundle / "rootfs"

    @property
    def attach_socket(self) -> Path:
        """conmon's attach socket (a short symlinked path, see runtime.py)."""
        return self.bundle.parent.parent / "sock" / self.id[:12] / "attach"

    @property
    def ctl_path(self) -> Path:
        """conmon's control fifo: ``"1 <h> <w>\\n"`` resizes, ``"2 0 0\\n"`` reopens logs."""
        return self.bundle / "ctl"

    @property
    def winsz_path(self) -> Path:
        """conmon's window-size fifo (``"<h> <w>\\n"``)."""
        return self.bundle / "winsz"

    @property
    def exit_file(self) -> Path:
        return self.bundle.parent.parent / "exits" / self.id

    @property
    def conmon_pidfile(self) -> Path:
        return self.bundle / "conmon.pid"

    @property
    def pidfile(self) -> Path:
        return self.bundle / "pidfile"

    @property
    def oom_file(self) -> Path:
        return self.bundle / "oom"

    # -- state --

    @property
    def status(self) -> str:
        return str(self.state["Status"])

    @property
    def running(self) -> bool:
        return bool(self.state["Running"])

    @property
    def paused(self) -> bool:
        return bool(self.state["Paused"])

    @property
    def pid(self) -> int:
        return int(self.state["Pid"])

    @property
    def exit_code(self) -> int:
        return int(self.state["ExitCode"])

    @property
    def image_ref(self) -> str:
        return str(self.config.get("Image", ""))

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})

    @property
    def restart_policy(self) -> dict[str, Any]:
        policy = self.host_config.get("RestartPolicy") or {}
        return {
            "Name": policy.get("Name") or "no",
            "MaximumRetryCount": int(policy.get("MaximumRetryCount") or 0),
        }

    def set_status(self, status: str) -> None:
        self.state["Status"] = status
        self.state["Running"] = status in ("running", "paused", "restarting")
        self.state["Paused"] = status == "paused"
        self.state["Restarting"] = status == "restarting"
        self.state["Dead"] = status == "dead"

    # -- persistence --

    def to_record(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "Name": self.name,
            "Created": self.created,
            "Path": self.path,
            "Args": self.args,
            "Config": self.config,
            "HostConfig": self.host_config,
            "Image": self.image_id,
            "State": self.state,
            "NetworkSettings": self.network_settings,
            "Mounts": self.mounts,
            "OciMounts": self.oci_mounts,
            "RestartCount": self.restart_count,
            "ManuallyStopped": self.manually_stopped,
            "ConmonPid": self.conmon_pid,
            "Bundle": str(self.bundle),
            "ResolvConfPath": self.resolv_conf_path,
            "HostnamePath": self.hostname_path,
            "HostsPath": self.hosts_path,
            "Extra": self.extra,
        }

    def save(self) -> None:
        """Write the record atomically (a crash never leaves half a file)."""
        tmp = self.record_path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(self.to_record(), f)
        os.replace(tmp, self.record_path)

    @classmethod
    def load(cls, directory: Path) -> Container:
        with open(directory / "container.json") as f:
            rec = json.load(f)
        return cls(
            id=rec["Id"],
            name=rec["Name"],
            config=rec["Config"],
            host_config=rec["HostConfig"],
            image_id=rec["Image"],
            dir=directory,
            bundle=Path(rec["Bundle"]),
            created=rec["Created"],
            path=rec.get("Path", ""),
            args=rec.get("Args", []),
            state={**new_state(), **rec.get("State", {})},
            network_settings=rec.get("NetworkSettings", {}),
            mounts=rec.get("Mounts", []),
            oci_mounts=rec.get("OciMounts", []),
            restart_count=rec.get("RestartCount", 0),
            manually_stopped=rec.get("ManuallyStopped", False),
            conmon_pid=rec.get("ConmonPid", 0),
            resolv_conf_path=rec.get("ResolvConfPath", ""),
            hostname_path=rec.get("HostnamePath", ""),
            hosts_path=rec.get("HostsPath", ""),
            extra=rec.get("Extra", {}),
        )

    # -- API shapes --

    def command(self) -> str:
        """The ``Command`` column of ``docker ps``: dockerd quotes args with spaces."""
        args = [f"'{a}'" if " " in a else a for a in self.args]
        return " ".join([self.path, *args]).strip()

    def status_text(self) -> str:
        """``docker ps``'s Status: "Up 3 seconds", "Exited (0) 2 minutes ago"."""
        status = self.status
        now = time.time()
        if status in ("running", "paused"):
            since = parse_rfc3339(self.state["StartedAt"])
            text = "Up " + human_duration(now - since)
            if status == "paused":
                return text + " (Paused)"
            health = (self.state.get("Health") or {}).get("Status")
            if health == "starting":
                return text + " (health: starting)"
            return f"{text} ({health})" if health in ("healthy", "unhealthy") else text
        if status == "restarting":
            finished = parse_rfc3339(self.state["FinishedAt"])
            return f"Restarting ({self.exit_code}) {human_duration(now - finished)} ago"
        if status == "exited":
            finished = parse_rfc3339(self.state["FinishedAt"])
            return f"Exited ({self.exit_code}) {human_duration(now - finished)} ago"
        if status == "removing":
            return "Removal In Progress"
        if status == "dead":
            return "Dead"
        return "Created"

    def inspect(self, graph_driver: dict[str, Any]) -> dict[str, Any]:
        """``GET /containers/{id}/json``."""
        return {
            "Id": self.id,
            "Created": self.created,
            "Path": self.path,
            "Args": self.args,
            "State": dict(self.state),
            "Image": self.image_id,
            "ResolvConfPath": self.resolv_conf_path,
            "HostnamePath": self.hostname_path,
            "HostsPath": self.hosts_path,
            "LogPath": str(self.log_path),
            "Name": "/" + self.name,
            "RestartCount": self.restart_count,
            "Driver": "overlay2",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": list(self.exec_ids) or None,
            "HostConfig": self.host_config,
            "GraphDriver": graph_driver,
            "Mounts": self.mounts,
            "Config": self.config,
            "NetworkSettings": self.network_settings,
        }


def human_duration(seconds: float) -> str:
    """Go's ``units.HumanDuration``, which ``docker ps`` shows."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // (24 * 7)} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // (24 * 30)} months"
    return f"{hours // (24 * 365)} years"
