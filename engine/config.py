"""The engine's settings, from the command line, with dockerd's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Config:
    hosts: list[str] = field(default_factory=lambda: ["unix:///var/run/docker.sock"])
    data_root: Path = Path("/var/lib/dockyard")
    exec_root: Path = Path("/run/dockyard")
    runtime: str | None = None  # crun or runc; None: chosen by probing
    log_level: str = "info"
    tls_verify: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    bridge_ip: str = "172.30.0.1/16"  # --bip: the default bridge's gateway/prefix
    bridge_name: str = "dockyard0"
    insecure_registries: list[str] = field(default_factory=list)
    registry_mirrors: list[str] = field(default_factory=list)
    certs_dir: Path = Path("/etc/docker/certs.d")
    # Where the engine runs: "host" directly on Linux, "vm" inside Dockyard's guest.
    environment: str = "host"
