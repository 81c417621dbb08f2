"""The one place that refuses container options this engine does not implement.

Clients send every HostConfig field, most at their zero value (the docker
CLI sends ``"BlkioWeight": 0``, ``"CpuCount": 0`` ...). A field is refused
only when it asks for something: a value other than its default. Silently
ignoring it would run a container unlike the one asked for::

    check_supported(body, host_config)   # InvalidParameter naming the option
"""

from __future__ import annotations

from typing import Any

from engine.containers import health
from engine.errors import InvalidParameter, Unsupported

# HostConfig keys this engine cannot honour, with the flag users know them by.
UNSUPPORTED_HOST = {
    "BlkioWeight": "--blkio-weight",
    "BlkioWeightDevice": "--blkio-weight-device",
    "BlkioDeviceReadBps": "--device-read-bps",
    "BlkioDeviceWriteBps": "--device-write-bps",
    "BlkioDeviceReadIOps": "--device-read-iops",
    "BlkioDeviceWriteIOps": "--device-write-iops",
    "CpuCount": "--cpu-count",
    "CpuPercent": "--cpu-percent",
    "CpuRealtimePeriod": "--cpu-rt-period",
    "CpuRealtimeRuntime": "--cpu-rt-runtime",
    "IOMaximumBandwidth": "--io-maxbandwidth",
    "IOMaximumIOps": "--io-maxiops",
    "DeviceCgroupRules": "--device-cgroup-rule",
    "DeviceRequests": "--gpus",
    "KernelMemory": "--kernel-memory",
    "KernelMemoryTCP": "kernel TCP memory",
    "Links": "--link",
    "UsernsMode": "--userns",
    "VolumeDriver": "--volume-driver",
    "CgroupParent": "--cgroup-parent",
    "Cgroup": "--cgroup",
    "Runtime": "--runtime",
    "StorageOpt": "--storage-opt",
}

# Values that mean "nothing asked" for the keys above and the mode keys below.
DEFAULTS: tuple[Any, ...] = (None, 0, -1, "", [], {}, False)

MODES = {
    "IpcMode": ("", "private", "shareable", "host"),
    "PidMode": ("", "host"),
    "UTSMode": ("", "host"),
    "CgroupnsMode": ("", "private", "host"),
    "Isolation": ("", "default"),
}

LOG_DRIVERS = ("", "json-file", "k8s-file", "local")
SECURITY_OPTS = (
    "no-new-privileges",
    "no-new-privileges:true",
    "no-new-privileges=true",
    "no-new-privileges:false",
    "no-new-privileges=false",
    "seccomp=unconfined",
    "seccomp:unconfined",
    "apparmor=unconfined",
    "apparmor:unconfined",
    "label=disable",
    "label:disable",
)


def check_supported(body: dict[str, Any], host_config: dict[str, Any]) -> None:
    """Raises Unsupported (400) naming the first option that asks for too much."""
    for key, flag in UNSUPPORTED_HOST.items():
        if host_config.get(key) not in DEFAULTS:
            if key == "Runtime" and host_config[key] in ("runc", "crun", "default"):
                continue
            raise Unsupported(f"{flag} ({key}) is not supported by this engine")
    for key, allowed in MODES.items():
        value = host_config.get(key) or ""
        if value not in allowed:
            raise Unsupported(f"{key} {value!r} is not supported by this engine")
    log_config = host_config.get("LogConfig") or {}
    log_type = log_config.get("Type") or ""
    if log_type not in LOG_DRIVERS:
        raise Unsupported(
            f"logging driver {log_type!r} is not supported: containers log with conmon's k8s-file"
        )
    for key, value in (log_config.get("Config") or {}).items():
        if key == "max-size":
            log_size_max(str(value))
        elif key == "max-file" and str(value) == "1":
            continue
        else:
            raise Unsupported(
                f"log option {key}={value} is not supported: only max-size (the log is cut, not rotated)"
            )
    for opt in host_config.get("SecurityOpt") or []:
        if opt not in SECURITY_OPTS:
            raise Unsupported(
                f"security option {opt!r} is not supported by this engine"
            )
    health.validate(body.get("Healthcheck"))


SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def log_size_max(value: str) -> int:
    """``--log-opt max-size`` (``10m``, ``512k``, ``1GB``) in bytes.

    Raises InvalidParameter for a malformed size.
    """
    text = value.strip().lower()
    if len(text) > 2 and text.endswith("b") and text[-2] in "kmg":
        text = text[:-1]
    number = text.rstrip("bkmg")
    unit = text[len(number) :]
    try:
        size = int(float(number) * SIZE_UNITS[unit])
    except (ValueError, KeyError):
        raise InvalidParameter(f"invalid max-size {value!r}") from None
    if size <= 0:
        raise InvalidParameter(f"invalid max-size {value!r}")
    return size
