"""The OCI runtime spec (``config.json``) of a container, with docker's defaults.

Everything docker puts in a container's spec that a program can notice is
here: the default capability set, the masked and read-only /proc paths, the
/dev, /dev/pts, /dev/shm, /dev/mqueue, /proc, /sys and cgroup mounts, the
default device allow list, PATH and HOSTNAME in the environment, and the
resources from HostConfig::

    spec = build_spec(container, image_config, rootfs, mounts, netns="/run/netns/x")
    (bundle / "config.json").write_text(json.dumps(spec))

rlimits are clamped to the engine's own hard limits: root here lacks
CAP_SYS_RESOURCE, and the runtime fails with EPERM on anything higher.
"""

from __future__ import annotations

import os
import resource
import stat
from pathlib import Path
from typing import Any

from engine.errors import InvalidParameter

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

# Every capability, in the kernel's bit order (CAP_CHOWN is bit 0).
ALL_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
    "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
    "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
]  # fmt: skip


def engine_caps() -> set[str]:
    """The capabilities the engine itself holds (its bounding set).

    A container cannot get more: root here lacks CAP_SYS_RESOURCE.
    """
    try:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("CapBnd:"))
    except (OSError, StopIteration):
        return set(ALL_CAPS)
    mask = int(line.split()[1], 16)
    return {name for bit, name in enumerate(ALL_CAPS) if mask >> bit & 1}


MASKED_PATHS = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]

READONLY_PATHS = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
]

# (type, major, minor, access) that every container may use, as docker allows.
ALLOWED_DEVICES = [
    ("c", None, None, "m"),
    ("b", None, None, "m"),
    ("c", 1, 3, "rwm"),  # null
    ("c", 1, 8, "rwm"),  # random
    ("c", 1, 7, "rwm"),  # full
    ("c", 5, 0, "rwm"),  # tty
    ("c", 1, 5, "rwm"),  # zero
    ("c", 1, 9, "rwm"),  # urandom
    ("c", 136, None, "rwm"),  # pts
    ("c", 5, 1, "rwm"),  # console
    ("c", 5, 2, "rwm"),  # ptmx
    ("c", 10, 200, "rwm"),  # tun
]

RLIMITS = {
    "core": resource.RLIMIT_CORE,
    "cpu": resource.RLIMIT_CPU,
    "data": resource.RLIMIT_DATA,
    "fsize": resource.RLIMIT_FSIZE,
    "locks": 10,  # RLIMIT_LOCKS: not in the resource module
    "memlock": resource.RLIMIT_MEMLOCK,
    "msgqueue": resource.RLIMIT_MSGQUEUE,
    "nice": resource.RLIMIT_NICE,
    "nofile": resource.RLIMIT_NOFILE,
    "nproc": resource.RLIMIT_NPROC,
    "rss": resource.RLIMIT_RSS,
    "rtprio": resource.RLIMIT_RTPRIO,
    "rttime": resource.RLIMIT_RTTIME,
    "sigpending": resource.RLIMIT_SIGPENDING,
    "stack": resource.RLIMIT_STACK,
    "as": resource.RLIMIT_AS,
}

# The init docker binds as /sbin/docker-init for --init: Debian's tini-static
# runs in any image, even one without a libc.
INIT_CANDIDATES = ["/usr/bin/tini-static", "/usr/bin/docker-init", "/usr/bin/tini"]
INIT_PATH = "/sbin/docker-init"


def init_binary() -> str | None:
    for path in INIT_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return None


def merge_env(base: list[str], override: list[str]) -> list[str]:
    """``base`` with ``override`` replacing entries of the same name, in order."""
    out: list[str] = []
    index: dict[str, int] = {}
    for entry in [*base, *override]:
        name = entry.split("=", 1)[0]
        if name in index:
            out[index[name]] = entry
        else:
            index[name] = len(out)
            out.append(entry)
    return out


def process_env(config: dict[str, Any], hostname: str) -> list[str]:
    """The process environment: PATH default, HOSTNAME, TERM for a tty."""
    env = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"]
    if config.get("Tty"):
        env.append("TERM=xterm")
    return merge_env(env, list(config.get("Env") or []))


# -- users --


def _read_db(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and line[0] != "#"]


def resolve_user(
    rootfs: Path, user: str, group_add: list[str]
) -> tuple[int, int, list[int], str]:
    """``uid, gid, additional gids, home`` for ``user`` as docker resolves it.

    ``user`` is ``name``, ``uid``, ``name:group`` or ``uid:gid``; names are
    looked up in the container's /etc/passwd and /etc/group.

    Raises InvalidParameter for a name the image does not know.
    """
    passwd = _read_db(rootfs / "etc" / "passwd")
    groups = _read_db(rootfs / "etc" / "group")
    name, _, group = (user or "0").partition(":")
    uid, gid, home, login = 0, 0, "/", ""
    found = False
    for entry in passwd:
        if len(entry) < 7:
            continue
        if entry[0] == name or (name.isdigit() and entry[2] == name):
            uid, gid, home, login = int(entry[2]), int(entry[3]), entry[5], entry[0]
            found = True
            break
    if not found:
        if not name.isdigit():
            raise InvalidParameter(
                f"unable to find user {name}: no matching entries in passwd file"
            )
        uid = int(name)
    if group:
        gid = _group_id(groups, group)
    extra: list[int] = []
    if login:
        for entry in groups:
            member = len(entry) >= 4 and login in entry[3].split(",")
            if member and entry[2].isdigit() and int(entry[2]) != gid:
                extra.append(int(entry[2]))
    for g in group_add:
        extra.append(_group_id(groups, g))
    return uid, gid, extra, home or "/"


def _group_id(groups: list[list[str]], group: str) -> int:
    for entry in groups:
        if len(entry) >= 3 and entry[0] == group and entry[2].isdigit():
            return int(entry[2])
    if group.isdigit():
        return int(group)
    raise InvalidParameter(
        f"unable to find group {group}: no matching entries in group file"
    )


# -- pieces of the spec --


def default_mounts(
    host_config: dict[str, Any], cgroup_v2: bool
) -> list[dict[str, Any]]:
    shm_size = int(host_config.get("ShmSize") or 64 * 1024 * 1024)
    privileged = bool(host_config.get("Privileged"))
    sys_options = ["nosuid", "noexec", "nodev", "rw" if privileged else "ro"]
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666",
                     "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": sys_options},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm_size}"]},
    ]  # fmt: skip


def _device_rule(
    kind: str, major: int | None, minor: int | None, access: str
) -> dict[str, Any]:
    rule: dict[str, Any] = {"allow": True, "type": kind, "access": access}
    if major is not None:
        rule["major"] = major
    if minor is not None:
        rule["minor"] = minor
    return rule


def _device(host: str, inside: str) -> dict[str, Any] | None:
    """The OCI device for a host device node; None if ``host`` is not one."""
    st = os.stat(host)
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return {
        "path": inside, "type": kind,
        "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
        "fileMode": st.st_mode & 0o777, "uid": st.st_uid, "gid": st.st_gid,
    }  # fmt: skip


def _all_host_devices() -> list[dict[str, Any]]:
    """Every device node under /dev, as ``--privileged`` gives them (no ptys)."""
    out = []
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if d not in ("pts", "shm", "mqueue")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if path in ("/dev/console", "/dev/ptmx", "/dev/tty") or os.path.islink(
                path
            ):
                continue
            try:
                dev = _device(path, path)
            except OSError:
                continue
            if dev is not None:
                out.append(dev)
    return out


def host_devices(
    host_config: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``--device`` entries (every host device with ``--privileged``) and rules.

    Raises InvalidParameter for a path that is not a device.
    """
    devices: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    if host_config.get("Privileged"):
        devices = _all_host_devices()
    for entry in host_config.get("Devices") or []:
        host = entry.get("PathOnHost", "")
        inside = entry.get("PathInContainer") or host
        access = entry.get("CgroupPermissions") or "rwm"
        try:
            dev = _device(host, inside)
        except OSError as err:
            raise InvalidParameter(
                f"error gathering device information while adding custom device {host!r}: {err.strerror}"
            ) from err
        if dev is None:
            raise InvalidParameter(f"{host} is not a device node")
        devices = [d for d in devices if d["path"] != inside]
        devices.append(dev)
        rules.append(_device_rule(dev["type"], dev["major"], dev["minor"], access))
    return devices, rules


def resources(host_config: dict[str, Any]) -> dict[str, Any]:
    """OCI ``linux.resources`` from HostConfig (also used by ``update``)."""
    res: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    if host_config.get("Memory"):
        memory["limit"] = int(host_config["Memory"])
    swap = host_config.get("MemorySwap")
    if swap and memory:
        memory["swap"] = int(swap)
    if host_config.get("MemoryReservation"):
        memory["reservation"] = int(host_config["MemoryReservation"])
    swappiness = host_config.get("MemorySwappiness")
    if swappiness is not None and int(swappiness) >= 0:
        memory["swappiness"] = int(swappiness)
    if host_config.get("OomKillDisable"):
        memory["disableOOMKiller"] = True
    if memory:
        res["memory"] = memory
    cpu: dict[str, Any] = {}
    if host_config.get("CpuShares"):
        cpu["shares"] = int(host_config["CpuShares"])
    if host_config.get("NanoCpus"):
        cpu["period"] = 100000
        cpu["quota"] = int(host_config["NanoCpus"]) * 100000 // 1_000_000_000
    if host_config.get("CpuPeriod"):
        cpu["period"] = int(host_config["CpuPeriod"])
    if host_config.get("CpuQuota"):
        cpu["quota"] = int(host_config["CpuQuota"])
    if host_config.get("CpusetCpus"):
        cpu["cpus"] = str(host_config["CpusetCpus"])
    if host_config.get("CpusetMems"):
        cpu["mems"] = str(host_config["CpusetMems"])
    if cpu:
        res["cpu"] = cpu
    pids = host_config.get("PidsLimit")
    if pids and int(pids) > 0:
        res["pids"] = {"limit": int(pids)}
    return res


def rlimits(host_config: dict[str, Any]) -> list[dict[str, Any]]:
    """docker's open-files default plus ``--ulimit``, clamped to our hard limits.

    Raises InvalidParameter for an unknown ulimit name.
    """
    wanted: dict[str, tuple[int, int]] = {"nofile": (1048576, 1048576)}
    for ulimit in host_config.get("Ulimits") or []:
        name = str(ulimit.get("Name", ""))
        if name not in RLIMITS:
            raise InvalidParameter(f"invalid ulimit type: {name}")
        wanted[name] = (int(ulimit.get("Soft", 0)), int(ulimit.get("Hard", 0)))
    out = []
    for name, (soft, hard) in wanted.items():
        _, our_hard = resource.getrlimit(RLIMITS[name])
        if our_hard != resource.RLIM_INFINITY:
            hard = min(hard, our_hard) if hard >= 0 else our_hard
            soft = min(soft, hard) if soft >= 0 else hard
        out.append({"type": f"RLIMIT_{name.upper()}", "hard": hard, "soft": soft})
    return out


def capabilities(host_config: dict[str, Any]) -> list[str]:
    """docker's default set with CapAdd/CapDrop; all the engine has if privileged.

    Raises InvalidParameter for an unknown capability or one the engine lacks.
    """
    available = engine_caps()
    if host_config.get("Privileged"):
        return sorted(available)
    caps = set(DEFAULT_CAPS)
    add = [_cap_name(c) for c in host_config.get("CapAdd") or []]
    drop = [_cap_name(c) for c in host_config.get("CapDrop") or []]
    if "CAP_ALL" in drop:
        caps.clear()
    if "CAP_ALL" in add:
        caps = set(available)
    for cap in add:
        if cap != "CAP_ALL" and cap not in available:
            raise InvalidParameter(
                f"--cap-add {cap}: the engine itself does not hold this capability here"
            )
    caps |= {c for c in add if c != "CAP_ALL"}
    caps -= {c for c in drop if c != "CAP_ALL"}
    return sorted(caps & available)


def _cap_name(cap: str) -> str:
    name = cap.upper()
    name = name if name.startswith("CAP_") else f"CAP_{name}"
    if name != "CAP_ALL" and name not in ALL_CAPS:
        raise InvalidParameter(f"unknown capability: {cap!r}")
    return name


# Syscalls a container may not make unless it holds the capability that
# governs them (None: never). A deny list, not docker's allow list: it closes
# the kernel's privileged doors (modules, kexec, keyrings, mounts, clocks,
# bpf) without enumerating every ordinary syscall.
SECCOMP_DENIED: dict[str | None, list[str]] = {
    None: [
        "kexec_load", "kexec_file_load", "nfsservctl", "vm86", "vm86old",
        "create_module", "get_kernel_syms", "query_module", "uselib", "ustat",
        "sysfs", "_sysctl", "lookup_dcookie", "userfaultfd",
    ],
    "CAP_SYS_MODULE": ["init_module", "finit_module", "delete_module"],
    "CAP_SYS_RAWIO": ["iopl", "ioperm"],
    "CAP_SYS_BOOT": ["reboot"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYSLOG": ["syslog"],
    "CAP_SYS_TIME": ["settimeofday", "stime", "clock_settime", "clock_adjtime"],
    "CAP_DAC_READ_SEARCH": ["open_by_handle_at"],
    "CAP_SYS_ADMIN": [
        "mount", "umount", "umount2", "pivot_root", "swapon", "swapoff",
        "unshare", "setns", "quotactl", "add_key", "keyctl", "request_key",
        "bpf", "perf_event_open", "fsopen", "fsconfig", "fsmount", "fspick",
        "move_mount", "open_tree", "name_to_handle_at",
    ],
}  # fmt: skip

SECCOMP_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


def seccomp_profile(
    caps: list[str], host_config: dict[str, Any]
) -> dict[str, Any] | None:
    """The builtin seccomp filter; None when privileged or ``seccomp=unconfined``."""
    security = [str(s) for s in host_config.get("SecurityOpt") or []]
    if host_config.get("Privileged") or any(
        s.replace(":", "=") == "seccomp=unconfined" for s in security
    ):
        return None
    held = set(caps)
    denied = sorted(
        name
        for cap, names in SECCOMP_DENIED.items()
        if cap is None or cap not in held
        for name in names
    )
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": SECCOMP_ARCHES.get(os.uname().machine, []),
        "syscalls": [{"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }


def build_spec(
    *,
    config: dict[str, Any],
    host_config: dict[str, Any],
    process_args: list[str],
    rootfs: Path,
    mounts: list[dict[str, Any]],
    netns: str | None,
    cgroups_path: str,
    cgroup_v2: bool,
) -> dict[str, Any]:
    """The whole ``config.json``; ``rootfs`` must be mounted (users, workdir).

    Raises InvalidParameter for an unknown user or group, capability or ulimit.
    """
    hostname = config.get("Hostname") or ""
    uid, gid, extra_gids, home = resolve_user(
        rootfs, str(config.get("User") or ""), list(host_config.get("GroupAdd") or [])
    )
    env = process_env(config, hostname)
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={home}")
    caps = capabilities(host_config)
    privileged = bool(host_config.get("Privileged"))
    security = [str(s) for s in host_config.get("SecurityOpt") or []]
    no_new_privs = any(
        s in ("no-new-privileges", "no-new-privileges:true", "no-new-privileges=true")
        for s in security
    )
    cwd = config.get("WorkingDir") or "/"

    namespaces: list[dict[str, Any]] = [
        {"type": "pid"},
        {"type": "ipc"},
        {"type": "uts"},
        {"type": "mount"},
    ]
    if cgroup_v2 and host_config.get("CgroupnsMode") != "host":
        namespaces.append({"type": "cgroup"})
    if host_config.get("PidMode") == "host":
        namespaces = [n for n in namespaces if n["type"] != "pid"]
    if host_config.get("IpcMode") == "host":
        namespaces = [n for n in namespaces if n["type"] != "ipc"]
    if host_config.get("UTSMode") == "host":
        namespaces = [n for n in namespaces if n["type"] != "uts"]
    network_mode = host_config.get("NetworkMode") or "default"
    if network_mode != "host":
        namespaces.append({"type": "network", **({"path": netns} if netns else {})})

    devices, device_rules = host_devices(host_config)
    if privileged:
        device_rules = [{"allow": True, "access": "rwm"}]
    else:
        device_rules = [
            {"allow": False, "access": "rwm"},
            *(_device_rule(*d) for d in ALLOWED_DEVICES),
            *device_rules,
        ]
    res = resources(host_config)
    res["devices"] = device_rules

    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "resources": res,
        "cgroupsPath": cgroups_path,
        "devices": devices,
        "sysctl": dict(host_config.get("Sysctls") or {}),
    }
    if not privileged:
        masked = host_config.get("MaskedPaths")
        readonly = host_config.get("ReadonlyPaths")
        linux["maskedPaths"] = MASKED_PATHS if masked is None else list(masked)
        linux["readonlyPaths"] = READONLY_PATHS if readonly is None else list(readonly)

    process: dict[str, Any] = {
        "terminal": bool(config.get("Tty")),
        "user": {"uid": uid, "gid": gid, "additionalGids": extra_gids},
        "args": process_args,
        "env": env,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": rlimits(host_config),
        "noNewPrivileges": no_new_privs,
    }
    if host_config.get("OomScoreAdj"):
        process["oomScoreAdj"] = int(host_config["OomScoreAdj"])
    if config.get("Tty") and host_config.get("ConsoleSize"):
        height, width = [*host_config["ConsoleSize"], 0, 0][:2]
        if height and width:
            process["consoleSize"] = {"height": int(height), "width": int(width)}

    spec: dict[str, Any] = {
        "ociVersion": "1.0.2-dev",
        "process": process,
        "root": {
            "path": str(rootfs),
            "readonly": bool(host_config.get("ReadonlyRootfs")),
        },
        "hostname": hostname,
        "mounts": [*default_mounts(host_config, cgroup_v2), *mounts],
        "linux": linux,
    }
    seccomp = seccomp_profile(caps, host_config)
    if seccomp is not None:
        linux["seccomp"] = seccomp
    if config.get("Domainname"):
        spec["domainname"] = config["Domainname"]
    return spec
