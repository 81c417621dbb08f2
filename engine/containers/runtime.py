"""The OCI runtime (crun or runc), driven through conmon.

conmon is the container's parent for its whole life, so the container
outlives the engine: conmon runs ``<runtime> create``, keeps the stdio
pipes, writes the k8s-file log and, when the container ends, its exit code
to ``<exec-root>/exits/<id>``. The engine then only runs the short runtime
commands (``start``, ``kill``, ``pause``, ``resume``, ``delete``)::

    runtime = Runtime.choose(config.runtime, exec_root)
    pid = await runtime.create(container)     # conmon + runtime create
    await runtime.start(container.id)

Which runtime: crun is faster, but crun 1.8 refuses a hybrid cgroup v1/v2
host ("cgroups in hybrid mode not supported") unless the v1 hugetlb
controller is mounted; runc copes. The cgroup layout decides, which costs
two ``stat`` calls and never a trial container.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal as signals
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from engine.containers.spec import init_binary
from engine.containers.validate import log_size_max
from engine.errors import Conflict, EngineError, InvalidParameter

if TYPE_CHECKING:
    from engine.containers.model import Container

log = logging.getLogger(__name__)

CONMON = "conmon"
SIGNALS = {
    name[3:]: int(value)
    for name, value in signals.Signals.__members__.items()
    if name.startswith("SIG") and not name.startswith("SIG_")
}


class RuntimeError_(EngineError):
    """The OCI runtime or conmon failed; the message carries their stderr."""


def parse_signal(value: str | int | None, default: int = signals.SIGKILL) -> int:
    """A signal given as ``9``, ``KILL`` or ``SIGKILL``.

    Raises InvalidParameter for an unknown name or number.
    """
    if value is None or value == "":
        return default
    if isinstance(value, int) or str(value).isdigit():
        number = int(value)
        if not 0 < number < 65:
            raise InvalidParameter(f"Invalid signal: {value}")
        return number
    name = str(value).upper()
    name = name[3:] if name.startswith("SIG") else name
    if name not in SIGNALS:
        raise InvalidParameter(f"Invalid signal: {value}")
    return SIGNALS[name]


def cgroup_layout() -> str:
    """``"v2"`` (unified), ``"hybrid"`` (v1 plus a v2 mount) or ``"v1"``."""
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "v2"
    if Path("/sys/fs/cgroup/unified/cgroup.controllers").exists():
        return "hybrid"
    return "v1"


def probe_runtime(wanted: str | None) -> tuple[str, str, str]:
    """Choose the runtime: ``(name, path, reason)``.

    Raises EngineError when no usable runtime is installed.
    """
    if wanted:
        path = shutil.which(wanted) or shutil.which(wanted, path="/usr/sbin:/sbin")
        if not path:
            raise EngineError(f"--runtime {wanted}: not installed")
        return wanted, path, "chosen with --runtime"
    crun = shutil.which("crun")
    runc = shutil.which("runc") or shutil.which("runc", path="/usr/sbin:/sbin")
    layout = cgroup_layout()
    hugetlb_v1 = Path("/sys/fs/cgroup/hugetlb").is_dir()
    if crun and (layout != "hybrid" or hugetlb_v1):
        return "crun", crun, f"cgroup layout {layout}: crun handles it"
    if runc:
        why = (
            "hybrid cgroup v1/v2 without v1 hugetlb, which crun 1.8 refuses"
            if layout == "hybrid"
            else "crun is not installed"
        )
        return "runc", runc, why
    if crun:
        return "crun", crun, "runc is not installed; crun may refuse this host"
    raise EngineError("no OCI runtime found: install crun or runc")


def component_version(name: str, path: str) -> dict[str, object]:
    """``NAME version X`` and ``commit: Y`` from ``path --version``, as dockerd
    lists runc; an empty version when the binary cannot tell.
    """
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("cannot read the version of %s: %s", path, err)
        out = ""
    version = re.search(r"^\S+ version (\S+)", out, re.MULTILINE)
    commit = re.search(r"^commit: (\S+)", out, re.MULTILINE)
    details = {"GitCommit": commit.group(1)} if commit else {}
    return {
        "Name": name,
        "Version": version.group(1) if version else "",
        "Details": details,
    }


class Runtime:
    """One OCI runtime binary with its state directory, and conmon."""

    def __init__(self, name: str, path: str, exec_root: Path) -> None:
        self.name = name
        self.path = path
        self.exec_root = exec_root
        self.root = exec_root / name  # the runtime's own --root
        self.exits = exec_root / "exits"
        self.sockets = exec_root / "sock"
        self.conmon = shutil.which(CONMON) or "/usr/bin/conmon"
        for d in (self.root, self.exits, self.sockets):
            d.mkdir(parents=True, exist_ok=True)
        self._components: list[dict[str, object]] | None = None

    async def components(self) -> list[dict[str, object]]:
        """The runtime, conmon and docker-init as ``/version`` lists components.

        ``{"Name": "crun", "Version": "1.8.1", "Details": {"GitCommit": ...}}``,
        read from each binary's ``--version`` once, at the first call; the
        runtime first, docker-init (tini, for ``--init``) only when installed.
        """
        if self._components is None:
            binaries = [(self.name, self.path), (CONMON, self.conmon)]
            tini = init_binary()
            if tini:
                binaries.append(("docker-init", tini))
            self._components = [
                await asyncio.to_thread(component_version, name, path)
                for name, path in binaries
            ]
        return self._components

    @property
    def base_args(self) -> list[str]:
        return [self.path, "--root", str(self.root)]

    # -- conmon --

    def conmon_args(self, c: Container) -> list[str]:
        """The conmon command line; docs/DESIGN.md ("Containers") lists it."""
        args = [
            self.conmon,
            "--api-version", "1",
            "-c", c.id,
            "-u", c.id[:12],
            "-n", c.name,
            "-r", self.path,
            "--runtime-arg", "--root",
            "--runtime-arg", str(self.root),
            "-b", str(c.bundle),
            "-p", str(c.pidfile),
            "-P", str(c.conmon_pidfile),
            "--persist-dir", str(c.bundle),
            "--exit-dir", str(self.exits),
            "--socket-dir-path", str(self.sockets),
            "-l", f"k8s-file:{c.log_path}",
            "--log-level", "warning",
            "--syslog",
        ]  # fmt: skip
        max_size = ((c.host_config.get("LogConfig") or {}).get("Config") or {}).get(
            "max-size"
        )
        if max_size:
            args += ["--log-size-max", str(log_size_max(str(max_size)))]
        if c.config.get("OpenStdin"):
            args.append("-i")
            if not c.config.get("StdinOnce"):
                args.append("--leave-stdin-open")
        if c.config.get("Tty"):
            args.append("-t")
        return args

    def _create_blocking(self, c: Container) -> int:
        for stale in (c.exit_file, c.bundle / "exit", c.oom_file, c.pidfile):
            stale.unlink(missing_ok=True)
        read_end, write_end = os.pipe()
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "_OCI_SYNCPIPE": str(write_end),
        }
        try:
            proc = subprocess.Popen(
                self.conmon_args(c),
                pass_fds=(write_end,),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                cwd=c.bundle,
                start_new_session=True,
            )
        finally:
            os.close(write_end)
        # conmon reports {"data": <pid>} once `runtime create` succeeded, or
        # {"data": -1, "message": "..."}; EOF means conmon itself failed.
        data = b""
        with os.fdopen(read_end, "rb") as sync:
            while b"\n" not in data:
                chunk = sync.read1(4096)
                if not chunk:
                    break
                data += chunk
        _, stderr = proc.communicate()
        try:
            reply = json.loads(data.split(b"\n")[0] or b"{}")
        except ValueError:
            reply = {}
        pid = int(reply.get("data", -1))
        if pid <= 0:
            message = reply.get("message") or stderr.decode(errors="replace").strip()
            raise RuntimeError_(_runtime_message(message or "conmon failed"))
        c.conmon_pid = int(c.conmon_pidfile.read_text().strip())
        return pid

    async def create(self, c: Container) -> int:
        """Run conmon, which runs ``runtime create``; returns the container pid.

        Raises RuntimeError_ with the runtime's own message on failure.
        """
        return await asyncio.to_thread(self._create_blocking, c)

    # -- short runtime commands --

    async def _run(self, *args: str, check: bool = True) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self.base_args,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if check and proc.returncode != 0:
            message = err.decode(errors="replace").strip() or out.decode().strip()
            raise RuntimeError_(_runtime_message(message))
        return out.decode()

    async def start(self, cid: str) -> None:
        await self._run("start", cid)

    async def kill(self, cid: str, sig: int, all_processes: bool = False) -> None:
        """Signal the container's init (or every process with ``all_processes``).

        Raises Conflict when the container is not running any more.
        """
        args = ["kill", *(["--all"] if all_processes else []), cid, str(sig)]
        try:
            await self._run(*args)
        except RuntimeError_ as err:
            text = err.message.lower()
            if "not running" in text or "does not exist" in text or "stopped" in text:
                raise Conflict(f"Container {cid} is not running") from err
            raise

    async def pause(self, cid: str) -> None:
        await self._run("pause", cid)

    async def resume(self, cid: str) -> None:
        await self._run("resume", cid)

    async def delete(self, cid: str) -> None:
        """Forget the container (its cgroups and runtime state); never raises."""
        await self._run("delete", "--force", cid, check=False)

    async def update(self, cid: str, resources: dict[str, object]) -> None:
        """Apply new OCI ``linux.resources`` to a running container."""
        path = self.exec_root / f"update-{cid}.json"
        path.write_text(json.dumps(resources))
        try:
            await self._run("update", "--resources", str(path), cid)
        finally:
            path.unlink(missing_ok=True)

    async def version(self) -> str:
        out = await self._run("--version", check=False)
        first = out.splitlines()[0] if out else ""
        return first.split()[-1] if first else ""


LOGRUS_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


def _runtime_message(text: str) -> str:
    """The useful line of runc/crun output: JSON, logrus text or plain."""
    lines = [line for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict) and entry.get("msg"):
            return str(entry["msg"])
        found = LOGRUS_MSG.search(line)
        if found:
            # runc logs with logrus: time="..." level=error msg="quoted text"
            return found.group(1).replace('\\"', '"').replace("\\\\", "\\")
    return lines[-1] if lines else text
