"""Resource usage of containers: ``docker stats`` and ``docker top``.

Both read the kernel directly. The container's cgroup comes from
``/proc/<pid>/cgroup`` of its first process, so the same code reads a cgroup
v1 hierarchy (a Linux host such as this one, one directory per controller)
and cgroup v2 (Dockyard's VM, one unified directory)::

    /sys/fs/cgroup/memory/dockyard/<id>/memory.usage_in_bytes   # v1
    /sys/fs/cgroup/dockyard/<id>/memory.current                 # v2

Network counters come from ``/proc/<pid>/net/dev``, which shows the
interfaces of the process's network namespace.

``docker stats --no-stream`` (``stream=0``) wants a CPU percentage, which
needs two samples: like dockerd it takes one, waits a second and sends the
second with the first as ``precpu_stats``. ``one-shot=1`` skips the wait.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shlex
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.containers.attach import is_running, pid_of
from engine.errors import Conflict, InvalidParameter

if TYPE_CHECKING:
    from engine.daemon import Daemon

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
INTERVAL = 1.0
ZERO_TIME = "0001-01-01T00:00:00Z"


def _rfc3339_now() -> str:
    ns = time.time_ns()
    seconds, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _int(path: Path) -> int:
    text = _read(path).strip()
    if not text or text == "max":
        return 0
    try:
        return int(text)
    except ValueError:
        return 0


def _keyed(path: Path) -> dict[str, int]:
    """A ``key value`` per line file such as memory.stat."""
    out: dict[str, int] = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


class Cgroups:
    """Where one process's cgroup files are, for v1 or v2."""

    def __init__(self, pid: int) -> None:
        self.v2 = (CGROUP_ROOT / "cgroup.controllers").exists()
        self.paths: dict[str, Path] = {}
        self.unified: Path | None = None
        for line in _read(Path(f"/proc/{pid}/cgroup")).splitlines():
            hierarchy, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            relative = path.lstrip("/")
            if hierarchy == "0" and not controllers:
                base = CGROUP_ROOT if self.v2 else CGROUP_ROOT / "unified"
                self.unified = base / relative
                continue
            for controller in controllers.split(","):
                for candidate in (
                    CGROUP_ROOT / controller / relative,
                    CGROUP_ROOT / controllers / relative,
                ):
                    if candidate.exists():
                        self.paths[controller] = candidate
                        break

    def v1(self, controller: str) -> Path | None:
        return self.paths.get(controller)

    def procs(self) -> list[int]:
        """Every process in the cgroup (the container's and its execs')."""
        places = [self.unified] if self.v2 else [self.v1("pids"), self.v1("memory")]
        for place in places:
            if place is None:
                continue
            text = _read(place / "cgroup.procs")
            if text:
                return sorted({int(p) for p in text.split()})
        return []


def _system_cpu_ns() -> int:
    """All CPUs' busy and idle time from /proc/stat, in ns (docker's system_cpu_usage)."""
    for line in _read(Path("/proc/stat")).splitlines():
        if line.startswith("cpu "):
            ticks = sum(int(v) for v in line.split()[1:8])
            return ticks * 1_000_000_000 // CLOCK_TICKS
    return 0


def _online_cpus() -> int:
    return len(os.sched_getaffinity(0)) or (os.cpu_count() or 1)


def _host_memory() -> int:
    for line in _read(Path("/proc/meminfo")).splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_stats(groups: Cgroups) -> dict[str, Any]:
    usage: dict[str, Any]
    throttling = {"periods": 0, "throttled_periods": 0, "throttled_time": 0}
    if groups.v2 or groups.v1("cpuacct") is None:
        base = groups.unified
        stat = _keyed(base / "cpu.stat") if base else {}
        usage = {
            "total_usage": stat.get("usage_usec", 0) * 1000,
            "usage_in_kernelmode": stat.get("system_usec", 0) * 1000,
            "usage_in_usermode": stat.get("user_usec", 0) * 1000,
        }
        throttling = {
            "periods": stat.get("nr_periods", 0),
            "throttled_periods": stat.get("nr_throttled", 0),
            "throttled_time": stat.get("throttled_usec", 0) * 1000,
        }
    else:
        acct = groups.v1("cpuacct")
        assert acct is not None
        times = _keyed(acct / "cpuacct.stat")
        percpu = [int(v) for v in _read(acct / "cpuacct.usage_percpu").split()]
        usage = {
            "total_usage": _int(acct / "cpuacct.usage"),
            "percpu_usage": percpu,
            "usage_in_kernelmode": times.get("system", 0)
            * 1_000_000_000
            // CLOCK_TICKS,
            "usage_in_usermode": times.get("user", 0) * 1_000_000_000 // CLOCK_TICKS,
        }
        cpu = groups.v1("cpu")
        if cpu is not None:
            stat = _keyed(cpu / "cpu.stat")
            throttling = {
                "periods": stat.get("nr_periods", 0),
                "throttled_periods": stat.get("nr_throttled", 0),
                "throttled_time": stat.get("throttled_time", 0),
            }
    return {
        "cpu_usage": usage,
        "system_cpu_usage": _system_cpu_ns(),
        "online_cpus": _online_cpus(),
        "throttling_data": throttling,
    }


def _memory_stats(groups: Cgroups) -> dict[str, Any]:
    if groups.v2 or groups.v1("memory") is None:
        base = groups.unified
        if base is None:
            return {}
        limit = _int(base / "memory.max") or _host_memory()
        return {
            "usage": _int(base / "memory.current"),
            "stats": _keyed(base / "memory.stat"),
            "limit": limit,
        }
    memory = groups.v1("memory")
    assert memory is not None
    limit = _int(memory / "memory.limit_in_bytes")
    host = _host_memory()
    out = {
        "usage": _int(memory / "memory.usage_in_bytes"),
        "max_usage": _int(memory / "memory.max_usage_in_bytes"),
        "stats": _keyed(memory / "memory.stat"),
        # v1 says "no limit" with a huge number; docker shows the host's memory.
        "limit": min(limit, host) if limit and host else limit or host,
    }
    # dockerd's failcnt is omitempty: absent until the limit was hit.
    failcnt = _int(memory / "memory.failcnt")
    if failcnt:
        out["failcnt"] = failcnt
    return out


def _pids_stats(groups: Cgroups) -> dict[str, Any]:
    base = groups.unified if groups.v2 else groups.v1("pids")
    if base is None:
        return {}
    out = {"current": _int(base / "pids.current")}
    limit = _int(base / "pids.max")
    if limit:
        out["limit"] = limit
    return out


def _blkio_stats(groups: Cgroups) -> dict[str, Any]:
    service_bytes: list[dict[str, Any]] = []
    serviced: list[dict[str, Any]] = []
    if groups.v2:
        base = groups.unified
        for line in _read(base / "io.stat").splitlines() if base else []:
            device, *fields = line.split()
            major, _, minor = device.partition(":")
            values = dict(f.split("=", 1) for f in fields if "=" in f)
            for key, op, target in (
                ("rbytes", "read", service_bytes),
                ("wbytes", "write", service_bytes),
                ("rios", "read", serviced),
                ("wios", "write", serviced),
            ):
                target.append(
                    {
                        "major": int(major),
                        "minor": int(minor),
                        "op": op,
                        "value": int(values.get(key, 0)),
                    }
                )
    else:
        blkio = groups.v1("blkio")
        for name, target in (
            ("blkio.throttle.io_service_bytes_recursive", service_bytes),
            ("blkio.throttle.io_serviced_recursive", serviced),
        ):
            for line in _read(blkio / name).splitlines() if blkio else []:
                fields = line.split()
                if len(fields) != 3:
                    continue
                major, _, minor = fields[0].partition(":")
                target.append(
                    {
                        "major": int(major),
                        "minor": int(minor),
                        "op": fields[1].lower(),
                        "value": int(fields[2]),
                    }
                )
    if not groups.v2:
        # dockerd copies every v1 list, so an idle container shows [] (a
        # client looping over io_service_bytes_recursive never sees null).
        return {
            "io_service_bytes_recursive": service_bytes,
            "io_serviced_recursive": serviced,
            "io_queue_recursive": [],
            "io_service_time_recursive": [],
            "io_wait_time_recursive": [],
            "io_merged_recursive": [],
            "io_time_recursive": [],
            "sectors_recursive": [],
        }
    return {
        "io_service_bytes_recursive": service_bytes or None,
        "io_serviced_recursive": serviced or None,
        "io_queue_recursive": None,
        "io_service_time_recursive": None,
        "io_wait_time_recursive": None,
        "io_merged_recursive": None,
        "io_time_recursive": None,
        "sectors_recursive": None,
    }


def _networks(pid: int) -> dict[str, Any] | None:
    networks: dict[str, Any] = {}
    for line in _read(Path(f"/proc/{pid}/net/dev")).splitlines()[2:]:
        name, _, counters = line.partition(":")
        name = name.strip()
        if name == "lo" or not counters:
            continue
        v = [int(x) for x in counters.split()]
        networks[name] = {
            "rx_bytes": v[0],
            "rx_packets": v[1],
            "rx_errors": v[2],
            "rx_dropped": v[3],
            "tx_bytes": v[8],
            "tx_packets": v[9],
            "tx_errors": v[10],
            "tx_dropped": v[11],
        }
    return networks or None


def _empty_cpu() -> dict[str, Any]:
    return {
        "cpu_usage": {
            "total_usage": 0,
            "usage_in_kernelmode": 0,
            "usage_in_usermode": 0,
        },
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }


def sample(c: Any) -> dict[str, Any]:
    """One reading of a container's counters, in the API's shape (blocking)."""
    base: dict[str, Any] = {
        "name": "/" + str(getattr(c, "name", "")).lstrip("/"),
        "id": c.id,
        "read": ZERO_TIME,
        "preread": ZERO_TIME,
        "pids_stats": {},
        "blkio_stats": _blkio_stats_empty(),
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": _empty_cpu(),
        "precpu_stats": _empty_cpu(),
        "memory_stats": {},
    }
    pid = pid_of(c)
    if not is_running(c) or pid <= 0:
        return base
    groups = Cgroups(pid)
    base.update(
        read=_rfc3339_now(),
        pids_stats=_pids_stats(groups),
        blkio_stats=_blkio_stats(groups),
        cpu_stats=_cpu_stats(groups),
        memory_stats=_memory_stats(groups),
    )
    networks = _networks(pid)
    if networks is not None:
        base["networks"] = networks
    return base


def _blkio_stats_empty() -> dict[str, Any]:
    return {
        key: None
        for key in (
            "io_service_bytes_recursive",
            "io_serviced_recursive",
            "io_queue_recursive",
            "io_service_time_recursive",
            "io_wait_time_recursive",
            "io_merged_recursive",
            "io_time_recursive",
            "sectors_recursive",
        )
    }


class StatsCollector:
    """Samples for ``GET /containers/{id}/stats``."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def samples(
        self, c: Any, *, stream: bool, one_shot: bool
    ) -> AsyncIterator[dict[str, Any]]:
        previous = await asyncio.to_thread(sample, c)
        if one_shot or not is_running(c):
            yield previous
            return
        while True:
            await asyncio.sleep(INTERVAL)
            current = await asyncio.to_thread(sample, c)
            current["precpu_stats"] = previous["cpu_stats"]
            current["preread"] = previous["read"]
            yield current
            if not stream or not is_running(c):
                return
            previous = current


# -- top --

PS_TITLES = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]


def _tty_name(tty_nr: int) -> str:
    if tty_nr == 0:
        return "?"
    major, minor = (tty_nr >> 8) & 0xFFF, (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    if 136 <= major <= 143:
        return f"pts/{(major - 136) * 256 + minor}"
    if major == 4:
        return f"tty{minor}"
    return "?"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _boot_time() -> float:
    for line in _read(Path("/proc/stat")).splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def _ps_row(pid: int, boot: float, now: float) -> list[str] | None:
    proc = Path(f"/proc/{pid}")
    stat = _read(proc / "stat")
    if not stat:
        return None
    # The command name may hold spaces and parentheses: split after the last ")".
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    tty_nr = int(fields[4])
    cpu_ticks = int(fields[11]) + int(fields[12])
    start = boot + int(fields[19]) / CLOCK_TICKS
    uid = 0
    for line in _read(proc / "status").splitlines():
        if line.startswith("Uid:"):
            uid = int(line.split()[1])
            break
    cmdline = _read(proc / "cmdline").replace("\0", " ").strip()
    elapsed = max(now - start, 1e-9)
    cpu_seconds = cpu_ticks / CLOCK_TICKS
    percent = int(cpu_seconds * 100 / elapsed)
    started = time.localtime(start)
    if now - start < 24 * 3600 and time.localtime(now).tm_yday == started.tm_yday:
        stime = time.strftime("%H:%M", started)
    else:
        stime = time.strftime("%b%d", started)
    total = int(cpu_seconds)
    cputime = f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"
    return [
        _user_name(uid),
        str(pid),
        str(ppid),
        str(percent),
        stime,
        _tty_name(tty_nr),
        cputime,
        cmdline or f"[{comm}]",
    ]


def container_pids(c: Any) -> list[int]:
    """The host pids of a running container's processes."""
    pid = pid_of(c)
    if pid <= 0:
        return []
    pids = Cgroups(pid).procs()
    return pids or [pid]


def top(c: Any, ps_args: str = "") -> dict[str, Any]:
    """``docker top``: ``ps -ef`` columns of the container's processes (blocking).

    Raises Conflict when the container is not running, InvalidParameter for
    ``ps_args`` the host's ps rejects.
    """
    if not is_running(c):
        raise Conflict(f"Container {c.id} is not running")
    pids = container_pids(c)
    if ps_args.strip() in ("", "-ef"):
        boot, now = _boot_time(), time.time()
        rows = [row for pid in pids if (row := _ps_row(pid, boot, now)) is not None]
        return {"Titles": PS_TITLES, "Processes": rows}
    return _ps_command(pids, ps_args)


def _ps_command(pids: list[int], ps_args: str) -> dict[str, Any]:
    """Other ``ps_args`` go to the host's ps, filtered to the container's pids."""
    try:
        proc = subprocess.run(
            ["ps", *shlex.split(ps_args)], capture_output=True, text=True, timeout=20
        )
    except (OSError, ValueError) as err:
        raise InvalidParameter(f"ps with {ps_args!r} failed: {err}") from err
    if proc.returncode != 0:
        raise InvalidParameter(
            f"Error running ps: exit status {proc.returncode}: {proc.stderr.strip()}"
        )
    lines = proc.stdout.splitlines()
    if not lines:
        return {"Titles": [], "Processes": []}
    titles = lines[0].split()
    if "PID" not in titles:
        raise InvalidParameter(f'Couldn\'t find PID field in ps output "{lines[0]}"')
    column = titles.index("PID")
    wanted = {str(p) for p in pids}
    rows = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) > column and fields[column] in wanted:
            rows.append(fields)
    return {"Titles": titles, "Processes": rows}
