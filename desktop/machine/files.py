"""A machine's folder under ``DOCKYARD_HOME`` and the records kept in it.

    machines/NAME/machine.json   spec + creation facts (``MachineRecord``)
    machines/NAME/run.json       facts of the current run (``RunRecord``)

Everything a machine owns lives in its folder, so removing the folder (plus
the backend's VM and the docker context) leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from desktop.machine.errors import MachineError
from desktop.machine.spec import MachineSpec

# sockaddr_un.sun_path is 108 bytes on Linux, 104 on macOS.
MAX_SOCKET_PATH = 100


class MachineDir:
    """Paths of one machine's files."""

    def __init__(self, home: Path, name: str) -> None:
        self.home = home
        self.name = name
        self.root = home / "machines" / name
        self.record = self.root / "machine.json"
        self.run = self.root / "run.json"
        self.key = self.root / "id_ed25519"
        self.known_hosts = self.root / "known_hosts"
        self.data_disk = self.root / "data.img"
        self.log = self.root / "machine.log"
        self.console = self.root / "console.log"
        self.forwarder_pid = self.root / "forwarder.pid"
        self.forwarder_log = self.root / "forwarder.log"
        self.ports = self.root / "ports.json"
        self.socket = self.root / "docker.sock"
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            # A long DOCKYARD_HOME would overflow sun_path: use a short
            # per-home folder under the runtime dir instead.
            tag = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
            self.socket = Path(tempfile.gettempdir()) / f"dockyard-{tag}.sock"

    @property
    def host_alias(self) -> str:
        return f"dockyard-{self.name}"

    @property
    def domain_name(self) -> str:
        """A VM name unique per DOCKYARD_HOME, so test homes never collide."""
        tag = hashlib.sha256(str(self.home.absolute()).encode()).hexdigest()[:8]
        return f"dockyard-{self.name}-{tag}"


@dataclass
class MachineRecord:
    spec: MachineSpec
    created_at: float
    image_dir: str
    image_version: str = ""
    backend_data: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        data = asdict(self)
        data["spec"] = self.spec.to_dict()
        write_json(path, data)

    @classmethod
    def load(cls, path: Path) -> MachineRecord:
        data = read_json(path)
        data["spec"] = MachineSpec.from_dict(data["spec"])
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class RunRecord:
    """What the running machine needs to be reached; absent when stopped."""

    state: str
    ssh_port: int
    started_at: float
    accelerator: str = "tcg"
    error: str | None = None
    starter_pid: int | None = None
    stages: dict[str, float] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> RunRecord | None:
        try:
            data = read_json(path)
        except (OSError, ValueError):
            return None
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def make_data_disk(path: Path, size_gib: int, seed: Path) -> None:
    """A sparse raw disk with an ext4 file system holding ``seed``'s files.

    Raises ``MachineError`` when mkfs fails.
    """
    with path.open("wb") as f:
        f.truncate(size_gib * 2**30)
    if shutil.which("mkfs.ext4") is None:
        path.unlink(missing_ok=True)
        raise MachineError("mkfs.ext4 is not installed: install e2fsprogs")
    proc = subprocess.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "dockyard-data",
            "-E",
            "root_owner=0:0,lazy_itable_init=1,nodiscard",
            "-d",
            str(seed),
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        path.unlink(missing_ok=True)
        raise MachineError(f"cannot make the data disk: {proc.stderr.strip()}")


def grow_data_disk(path: Path, size_gib: int) -> None:
    """Grow the (stopped) machine's data disk and its file system."""
    with path.open("r+b") as f:
        f.truncate(size_gib * 2**30)
    for argv in (["e2fsck", "-f", "-p", str(path)], ["resize2fs", str(path)]):
        proc = subprocess.run(argv, capture_output=True, text=True)
        # e2fsck exits 1 when it fixed something, which is fine here.
        if proc.returncode not in (0, 1):
            raise MachineError(
                f"{argv[0]} failed on the data disk: {proc.stderr.strip()}"
            )


def disk_used_bytes(path: Path) -> int:
    try:
        return path.stat().st_blocks * 512
    except OSError:
        return 0
