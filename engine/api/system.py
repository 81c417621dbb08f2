"""Engine API: ping, version, info, events and disk usage."""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from collections.abc import AsyncIterator

from engine import API_VERSION, MIN_API_VERSION, __version__
from engine.errors import InvalidParameter
from engine.http.server import (
    Request,
    Response,
    RouteTable,
    StreamResponse,
    json_response,
)

routes = RouteTable()

# The Docker release that shipped API 1.47: clients that compare engine
# versions (compose, testcontainers) see the release they expect.
DOCKER_COMPAT_VERSION = "27.3.1"
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


def go_arch() -> str:
    machine = platform.machine()
    return ARCHITECTURES.get(machine, machine)


@routes.get("/_ping")
async def ping(req: Request) -> Response:
    headers = {
        "Cache-Control": "no-cache, no-store, must-revalidate",
        "Pragma": "no-cache",
    }
    return Response(
        body=b"OK", content_type="text/plain; charset=utf-8", headers=headers
    )


@routes.get("/version")
async def version(req: Request) -> Response:
    kernel = platform.release()
    details = {
        "ApiVersion": API_VERSION,
        "Arch": go_arch(),
        "BuildTime": "",
        "Experimental": "false",
        "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}",
        "KernelVersion": kernel,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
        "DockyardVersion": __version__,
    }
    components = await req.app.containers.runtime.components()
    return json_response(
        {
            "Platform": {"Name": f"Dockyard Engine {__version__}"},
            "Components": [
                {
                    "Name": "Engine",
                    "Version": DOCKER_COMPAT_VERSION,
                    "Details": details,
                },
                *components,
            ],
            "Version": DOCKER_COMPAT_VERSION,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": details["GoVersion"],
            "Os": "linux",
            "Arch": go_arch(),
            "KernelVersion": kernel,
            "BuildTime": "",
        }
    )


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _operating_system() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


@routes.get("/info")
async def info(req: Request) -> Response:
    daemon = req.app
    config = daemon.config
    counts = daemon.containers.counts()
    runtime = daemon.containers.runtime_name
    components = await daemon.containers.runtime.components()
    runtime_info = components[0]
    init_info = next((c for c in components if c["Name"] == "docker-init"), None)
    cgroup_version = "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"
    return json_response(
        {
            "ID": daemon.images.engine_id(),
            "Containers": counts["total"],
            "ContainersRunning": counts["running"],
            "ContainersPaused": counts["paused"],
            "ContainersStopped": counts["stopped"],
            "Images": len(daemon.images.list_images()),
            "Driver": "overlay2",
            "DriverStatus": [
                ["Backing Filesystem", "extfs"],
                ["Supports d_type", "true"],
            ],
            "DockerRootDir": str(config.data_root),
            "Plugins": {
                "Volume": ["local"],
                "Network": ["bridge", "host", "null"],
                "Authorization": None,
                "Log": ["json-file"],
            },
            "MemoryLimit": True,
            "SwapLimit": True,
            "CpuCfsPeriod": True,
            "CpuCfsQuota": True,
            "CPUShares": True,
            "CPUSet": True,
            "PidsLimit": True,
            "IPv4Forwarding": True,
            "BridgeNfIptables": False,
            "BridgeNfIp6tables": False,
            "Debug": config.log_level == "debug",
            "NFd": len(os.listdir("/proc/self/fd")),
            "OomKillDisable": False,
            "NGoroutines": 0,
            "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            # conmon writes the log; clients (docker-py's run()) only read
            # logs back from drivers they know, and json-file is what
            # HostConfig.LogConfig reports.
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": cgroup_version,
            "NEventsListener": 0,
            "KernelVersion": platform.release(),
            "OperatingSystem": _operating_system(),
            "OSVersion": "",
            "OSType": "linux",
            "Architecture": platform.machine(),
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": daemon.registry.registry_config(),
            "NCPU": os.cpu_count() or 1,
            "MemTotal": _mem_total(),
            "GenericResources": None,
            "HttpProxy": os.environ.get("HTTP_PROXY", ""),
            "HttpsProxy": os.environ.get("HTTPS_PROXY", ""),
            "NoProxy": os.environ.get("NO_PROXY", ""),
            "Name": socket.gethostname(),
            "Labels": [],
            "ExperimentalBuild": False,
            "ServerVersion": DOCKER_COMPAT_VERSION,
            "Runtimes": {runtime: {"path": daemon.containers.runtime_path}},
            "DefaultRuntime": runtime,
            "Swarm": {
                "NodeID": "",
                "NodeAddr": "",
                "LocalNodeState": "inactive",
                "ControlAvailable": False,
                "Error": "",
                "RemoteManagers": None,
            },
            "LiveRestoreEnabled": True,
            "Isolation": "",
            "InitBinary": "docker-init" if init_info else "",
            "ContainerdCommit": {"ID": ""},
            # `docker info` prints it as "runc version", whichever runtime.
            "RuncCommit": {"ID": str(runtime_info["Details"].get("GitCommit", ""))},
            # tini prints no commit: its version stands in for one.
            "InitCommit": {"ID": str(init_info["Version"]) if init_info else ""},
            # Dockyard's seccomp profile is a deny list (see containers/spec.py).
            "SecurityOptions": ["name=seccomp,profile=dockyard-denylist"],
            "Warnings": None,
        }
    )


def _nano(value: str | None, name: str) -> int | None:
    """A ``since``/``until`` value (seconds, with an optional fraction)."""
    if value is None or value == "":
        return None
    try:
        return int(float(value) * 1_000_000_000)
    except ValueError:
        raise InvalidParameter(f"invalid value for {name}: {value!r}") from None


@routes.get("/events")
async def events(req: Request) -> StreamResponse:
    filters = req.filters()
    since = _nano(req.arg("since"), "since")
    until = _nano(req.arg("until"), "until")

    async def stream() -> AsyncIterator[bytes]:
        async for event in req.app.events.subscribe(filters, since, until):
            yield json.dumps(event.to_json()).encode() + b"\n"

    return StreamResponse(stream())


@routes.get("/system/df")
async def disk_usage(req: Request) -> Response:
    daemon = req.app
    wanted = set(req.args("type")) or {"container", "image", "volume", "build-cache"}
    body: dict[str, object] = {"LayersSize": daemon.images.layers_size()}
    if "image" in wanted:
        body["Images"] = daemon.images.df()
    if "container" in wanted:
        body["Containers"] = daemon.containers.df()
    if "volume" in wanted:
        body["Volumes"] = daemon.volumes.df()
    if "build-cache" in wanted:
        body["BuildCache"] = []
    return json_response(body)
