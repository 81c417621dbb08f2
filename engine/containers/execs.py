"""Exec: more processes in a running container (``docker exec``).

Each exec runs under a conmon of its own in exec mode, which runs
``<runtime> exec --process <spec>`` and, being a subreaper, learns the exit
code even when the engine restarts::

    conmon --api-version 1 -e --exec-process-spec <dir>/process.json
           --exec-attach -c <container id> -b <dir> --full-attach ...

Three pipes drive it (all ``{"data": N}`` lines or single writes):

1. the engine writes the *start* pipe once: conmon may go on;
2. with ``--exec-attach`` conmon answers on the *attach* pipe when its attach
   socket (``<dir>/attach``) is ready; the engine connects and writes the
   start pipe again, and only then does the process start, so no output is
   lost;
3. the *sync* pipe reports the pid (or ``-1`` and the runtime's message),
   then the exit code.

The process spec is the container's own (``config.json`` in its bundle)
with the exec's command, environment, user, working directory and TTY. A
TTY is resized through ``<dir>/ctl`` like a container's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.containers.archive import read_table
from engine.containers.attach import (
    bridge,
    config_of,
    is_running,
    pid_of,
    state_of,
)
from engine.containers.spec import ALL_CAPS
from engine.containers.streams import (
    STDOUT,
    ConmonSocket,
    encode,
    parse_detach_keys,
    write_resize,
)
from engine.errors import Conflict, EngineError, InvalidParameter, NotFound

if TYPE_CHECKING:
    from engine.daemon import Daemon

log = logging.getLogger(__name__)

# Finished execs stay inspectable this long (the CLI asks for the exit code).
KEEP_FINISHED = 300.0
_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


@dataclass
class ExecInstance:
    id: str
    container: Any
    config: dict[str, Any]
    dir: Path
    running: bool = False
    started: bool = False
    exit_code: int | None = None
    pid: int = 0
    finished_at: float = 0.0
    conn: ConmonSocket | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # Between start and run: the start pipe and the sync pipe of its conmon.
    pending: Any = None

    @property
    def tty(self) -> bool:
        return bool(self.config.get("Tty"))

    @property
    def cmd(self) -> list[str]:
        return [str(a) for a in self.config.get("Cmd") or []]

    def inspect(self) -> dict[str, Any]:
        cmd = self.cmd
        return {
            "ID": self.id,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {
                "tty": self.tty,
                "entrypoint": cmd[0] if cmd else "",
                "arguments": cmd[1:],
                "privileged": bool(self.config.get("Privileged")),
                "user": self.config.get("User") or "",
            },
            "OpenStdin": bool(self.config.get("AttachStdin")),
            "OpenStderr": bool(self.config.get("AttachStderr")),
            "OpenStdout": bool(self.config.get("AttachStdout")),
            "CanRemove": False,
            "ContainerID": self.container.id,
            "DetachKeys": self.config.get("DetachKeys") or "",
            "Pid": self.pid,
        }


def _runtime_message(text: str) -> str:
    found = _MSG.search(text)
    if found:
        return found.group(1).replace('\\"', '"').replace("\\\\", "\\")
    return text.strip()


def _sync_value(line: bytes) -> tuple[int | None, str]:
    """``{"data": N, "message": "..."}`` from conmon, parsed leniently."""
    text = line.decode(errors="replace").strip()
    if not text:
        return None, ""
    try:
        reply = json.loads(text)
        return int(reply.get("data", -1)), str(reply.get("message") or "")
    except ValueError:
        found = re.search(r'"data":\s*(-?\d+)', text)
        return (int(found.group(1)) if found else None), text


class _PipeLines:
    """Lines conmon writes to a pipe, read without holding a thread.

    An exec's sync pipe stays open for the life of its process: a blocking
    read in the default executor would pin one of its few threads.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        os.set_blocking(fd, False)

    async def _chunk(self) -> bytes:
        loop = asyncio.get_running_loop()
        while True:
            try:
                return os.read(self.fd, 4096)
            except BlockingIOError:
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_reader(self.fd, _wake, ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(self.fd)

    async def line(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = await self._chunk()
            if not chunk:
                data, self.buffer = self.buffer, b""
                return data
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _env_merge(base: list[str], extra: list[str]) -> list[str]:
    merged: dict[str, str] = {}
    for item in [*base, *extra]:
        key = item.split("=", 1)[0]
        merged[key] = item
    return list(merged.values())


def resolve_user(root: Path, user: str) -> dict[str, Any]:
    """An OCI ``process.user`` for ``name``, ``uid``, ``name:group``, ``uid:gid``.

    Names are looked up in the container's /etc/passwd and /etc/group.
    Raises InvalidParameter with dockerd's text for an unknown name.
    """
    name, _, group = user.partition(":")
    passwd = read_table(root, "/etc/passwd")
    uid = gid = 0
    login = ""
    if name.isdigit():
        uid = int(name)
        for entry in passwd:
            if len(entry) > 3 and entry[2] == name:
                login = entry[0]
                gid = int(entry[3]) if entry[3].isdigit() else 0
                break
    else:
        for entry in passwd:
            if entry[0] == name and len(entry) > 3:
                uid, gid, login = int(entry[2]), int(entry[3]), name
                break
        else:
            raise InvalidParameter(
                f"unable to find user {name}: no matching entries in passwd file"
            )
    groups = read_table(root, "/etc/group")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            for entry in groups:
                if entry[0] == group and len(entry) > 2:
                    gid = int(entry[2])
                    break
            else:
                raise InvalidParameter(
                    f"unable to find group {group}: no matching entries in group file"
                )
    extra = []
    if login:
        for entry in groups:
            member = len(entry) > 3 and login in entry[3].split(",")
            if member and entry[2].isdigit() and int(entry[2]) != gid:
                extra.append(int(entry[2]))
    out: dict[str, Any] = {"uid": uid, "gid": gid}
    if extra:
        out["additionalGids"] = extra
    return out


class ExecManager:
    """The exec instances of all containers (``daemon.execs``)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._execs: dict[str, ExecInstance] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.root = Path(daemon.config.exec_root) / "execs"

    # -- create, inspect --

    def create(self, c: Any, body: dict[str, Any]) -> ExecInstance:
        """Register an exec; Conflict if the container does not run.

        Raises InvalidParameter without a command.
        """
        self._prune()
        if not is_running(c):
            raise Conflict(f"Container {c.id} is not running")
        if state_of(c).get("Paused"):
            raise Conflict(
                f"Container {c.id} is paused, unpause the container before exec"
            )
        if state_of(c).get("Restarting"):
            raise Conflict(
                f"Container {c.id} is restarting, wait until the container is running"
            )
        cmd = body.get("Cmd")
        if isinstance(cmd, str):
            cmd = [cmd]
        if not cmd:
            raise InvalidParameter("No exec command specified")
        body = dict(body, Cmd=cmd)
        if body.get("DetachKeys"):
            parse_detach_keys(body["DetachKeys"])
        exec_id = secrets.token_hex(32)
        ex = ExecInstance(exec_id, c, body, self.root / exec_id[:16])
        self._execs[exec_id] = ex
        ids = getattr(c, "exec_ids", None)
        if isinstance(ids, list):
            ids.append(exec_id)
        # dockerd joins entrypoint and args with a space each: "exec_create: true ".
        self._publish(ex, f"exec_create: {cmd[0]} {' '.join(cmd[1:])}")
        return ex

    def get(self, exec_id: str) -> ExecInstance:
        """Raises NotFound("No such exec instance: <id>")."""
        ex = self._execs.get(exec_id)
        if ex is None:
            matches = [e for key, e in self._execs.items() if key.startswith(exec_id)]
            if len(matches) == 1 and exec_id:
                return matches[0]
            raise NotFound(f"No such exec instance: {exec_id}")
        return ex

    def forget(self, ex: ExecInstance) -> None:
        """Drop a finished exec from the table (health probes, for one)."""
        self._execs.pop(ex.id, None)

    def _prune(self) -> None:
        now = time.time()
        for key, ex in list(self._execs.items()):
            if (
                not ex.running
                and ex.finished_at
                and now - ex.finished_at > KEEP_FINISHED
            ):
                del self._execs[key]

    # -- start --

    async def start(
        self, ex: ExecInstance, *, detach: bool, console_size: list[int] | None = None
    ) -> None:
        """Start the exec; attached, only prepare it (see :meth:`run`).

        An attached exec gets its conmon and attach socket here, before the
        ``101`` goes out; the process itself starts in :meth:`run`, once the
        client reads the stream (clients that buffer the response headers
        would swallow output sent with them).
        Raises Conflict if it ran already or the container stopped,
        EngineError with the runtime's message if it cannot start.
        """
        c = ex.container
        if ex.started:
            if ex.running:
                raise Conflict(f"Error: Exec command {ex.id} is already running")
            raise Conflict(f"Error: Exec command {ex.id} has already run")
        if not is_running(c):
            raise Conflict(f"Container {c.id} is not running")
        ex.started = True
        if console_size and len(console_size) == 2 and all(console_size):
            ex.config["ConsoleSize"] = console_size
        try:
            await self._launch(ex, attach=not detach)
            if detach:
                await self.run(ex)
        except BaseException:
            self._failed(ex)
            raise

    async def run(self, ex: ExecInstance) -> None:
        """Let conmon run the prepared process; EngineError if it cannot."""
        start_w, sync = ex.pending
        ex.pending = None
        if start_w >= 0:
            # Without --exec-attach conmon does not wait for this write.
            try:
                os.write(start_w, b"0")
            finally:
                os.close(start_w)
        value, message = _sync_value(await sync.line())
        if value is None or value <= 0:
            sync.close()
            reason = _runtime_message(message) or "exec failed"
            ex.exit_code = 127 if _not_found(reason) else 126
            self._failed(ex)
            raise EngineError(f"OCI runtime exec failed: {reason}: unknown")
        ex.pid = value
        ex.running = True
        self._publish(ex, f"exec_start: {ex.cmd[0]} {' '.join(ex.cmd[1:])}")
        task = asyncio.ensure_future(self._wait_exit(ex, sync))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _failed(self, ex: ExecInstance) -> None:
        if ex.pending is not None:
            start_w, sync = ex.pending
            ex.pending = None
            if start_w >= 0:
                with contextlib.suppress(OSError):
                    os.close(start_w)
            sync.close()
        if ex.conn is not None:
            ex.conn.close()
        ex.running = False
        ex.exit_code = 126 if ex.exit_code is None else ex.exit_code
        ex.finished_at = time.time()
        ex.done.set()
        self._exited(ex)

    def _process_spec(self, ex: ExecInstance) -> dict[str, Any]:
        c = ex.container
        bundle = Path(getattr(c, "bundle", "") or "")
        try:
            spec = json.loads((bundle / "config.json").read_text())
        except (OSError, ValueError) as err:
            raise EngineError(f"cannot read the container's OCI spec: {err}") from err
        process = dict(spec.get("process") or {})
        config = ex.config
        process["args"] = ex.cmd
        process["terminal"] = ex.tty
        process.pop("consoleSize", None)
        size = config.get("ConsoleSize") or [0, 0]
        if ex.tty and len(size) == 2 and size[0] and size[1]:
            process["consoleSize"] = {"height": int(size[0]), "width": int(size[1])}
        process["env"] = _env_merge(process.get("env") or [], config.get("Env") or [])
        if ex.tty and not any(e.startswith("TERM=") for e in process["env"]):
            process["env"].append("TERM=xterm")
        if config.get("WorkingDir"):
            process["cwd"] = config["WorkingDir"]
        root = Path(f"/proc/{pid_of(c)}/root")
        if config.get("User"):
            process["user"] = resolve_user(root, str(config["User"]))
        if config.get("Privileged"):
            caps = list(ALL_CAPS)
            process["capabilities"] = {
                key: caps for key in ("bounding", "effective", "permitted")
            }
            process.pop("selinuxLabel", None)
            process.pop("apparmorProfile", None)
        return process

    def _conmon_args(self, ex: ExecInstance, attach: bool) -> list[str]:
        c = ex.container
        runtime = getattr(self.daemon.containers, "runtime", None)
        conmon = getattr(runtime, "conmon", None) or shutil.which("conmon") or "conmon"
        runtime_path = getattr(runtime, "path", None) or getattr(
            self.daemon.containers, "runtime_path", "runc"
        )
        args = [
            conmon,
            "--api-version", "1",
            "-c", c.id,
            "-u", ex.id[:16],
            "-n", str(getattr(c, "name", c.id)),
            "-r", str(runtime_path),
            "-b", str(ex.dir),
            "-p", str(ex.dir / "pid"),
            "-l", "none",
            "--exit-dir", str(ex.dir / "exit"),
            "--full-attach",
            "--log-level", "warning",
            "-e",
            "--exec-process-spec", str(ex.dir / "process.json"),
        ]  # fmt: skip
        runtime_root = getattr(runtime, "root", None)
        if runtime_root:
            args += ["--runtime-arg", "--root", "--runtime-arg", str(runtime_root)]
        if attach:
            args.append("--exec-attach")
        if ex.tty:
            args.append("-t")
        if attach and ex.config.get("AttachStdin"):
            args.append("-i")
            if ex.tty:
                # A TTY client that detaches (or hangs up) leaves the
                # process its stdin, as dockerd does.
                args.append("--leave-stdin-open")
        return args

    async def _launch(self, ex: ExecInstance, attach: bool) -> None:
        """Run conmon up to the point where it waits to start the process."""
        spec = await asyncio.to_thread(self._process_spec, ex)
        (ex.dir / "exit").mkdir(parents=True, exist_ok=True)
        (ex.dir / "process.json").write_text(json.dumps(spec))
        sync_r, sync_w = os.pipe()
        start_r, start_w = os.pipe()
        attach_r, attach_w = os.pipe() if attach else (-1, -1)
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "_OCI_SYNCPIPE": str(sync_w),
            "_OCI_STARTPIPE": str(start_r),
        }
        passed = [sync_w, start_r]
        if attach:
            env["_OCI_ATTACHPIPE"] = str(attach_w)
            passed.append(attach_w)
        ex.pending = (start_w, _PipeLines(sync_r))
        ready = _PipeLines(attach_r) if attach else None
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self._conmon_args(ex, attach),
                    pass_fds=passed,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                    cwd=ex.dir,
                    start_new_session=True,
                )
            finally:
                for fd in passed:
                    os.close(fd)
            os.write(start_w, b"0")
            _, stderr = await proc.communicate()
            if proc.returncode != 0:
                raise EngineError(
                    f"exec failed: conmon: {stderr.decode(errors='replace').strip()}"
                )
            if ready is not None:
                value, message = _sync_value(await ready.line())
                if value != 0:
                    raise EngineError(
                        f"exec failed: conmon: {message or 'no attach socket'}"
                    )
                ex.conn = await ConmonSocket.connect(ex.dir / "attach")
            else:
                os.close(start_w)
                ex.pending = (-1, ex.pending[1])
        finally:
            if ready is not None:
                ready.close()

    async def _wait_exit(self, ex: ExecInstance, sync: _PipeLines) -> None:
        try:
            value, _ = _sync_value(await sync.line())
        finally:
            sync.close()
        if value is None:
            exit_file = ex.dir / "exit" / ex.container.id
            with contextlib.suppress(OSError, ValueError):
                value = int(exit_file.read_text().strip())
        ex.exit_code = 137 if value is None or value < 0 else value
        ex.running = False
        ex.finished_at = time.time()
        ex.done.set()
        log.debug(
            "exec %s in %s exited with %s", ex.id[:12], ex.container.id[:12], value
        )
        self._exited(ex)
        self.daemon.events.publish(
            "container",
            "exec_die",
            ex.container.id,
            {**self._attributes(ex), "exitCode": str(ex.exit_code)},
        )

    def _exited(self, ex: ExecInstance) -> None:
        ids = getattr(ex.container, "exec_ids", None)
        if isinstance(ids, list) and ex.id in ids:
            ids.remove(ex.id)
        shutil.rmtree(ex.dir, ignore_errors=True)

    # -- attached I/O --

    async def serve(
        self,
        ex: ExecInstance,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Bridge a hijacked client to the exec until the process is done."""
        if ex.conn is None:
            return
        conn: ConmonSocket = ex.conn
        if ex.pending is not None:
            try:
                await self.run(ex)
            except EngineError as err:
                writer.write(self.error_output(ex, err.message))
                await writer.drain()
                return
        config = ex.config
        keys = parse_detach_keys(config.get("DetachKeys") or None)

        class _Stdin:
            async def write(self, data: bytes) -> None:
                await conn.send(data)

            async def close(self) -> None:
                conn.close_stdin()

        try:
            await bridge(
                reader,
                writer,
                next_output=conn.recv,
                stdin=_Stdin() if config.get("AttachStdin") else None,
                tty=ex.tty,
                stdout=bool(config.get("AttachStdout")),
                stderr=bool(config.get("AttachStderr")),
                detach_keys=keys,
                close_stdin_on_eof=not ex.tty,
            )
        finally:
            conn.close()
        # The client asks for the exit code right after the stream ends.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ex.done.wait(), 5)

    @staticmethod
    def error_output(ex: ExecInstance, message: str) -> bytes:
        """A start error as dockerd writes it into the hijacked stream."""
        return encode(STDOUT, (message + "\r\n").encode(), ex.tty)

    # -- resize --

    def resize(self, ex: ExecInstance, height: int, width: int) -> None:
        """Resize the exec's TTY; EngineError (500, as dockerd) if it is not running."""
        if not ex.running and ex.pending is None:
            raise EngineError(f"exec {ex.id} is not running")
        if not ex.tty:
            return
        try:
            write_resize(ex.dir / "ctl", height, width)
        except OSError as err:
            raise EngineError(f"exec {ex.id} is not running") from err

    # -- events --

    def _attributes(self, ex: ExecInstance) -> dict[str, str]:
        c = ex.container
        attrs = {
            "name": str(getattr(c, "name", "")).lstrip("/"),
            "image": str(config_of(c).get("Image", "")),
            "execID": ex.id,
        }
        for key, value in (config_of(c).get("Labels") or {}).items():
            attrs.setdefault(key, str(value))
        return attrs

    def _publish(self, ex: ExecInstance, action: str) -> None:
        self.daemon.events.publish(
            "container", action, ex.container.id, self._attributes(ex)
        )

    async def close(self) -> None:
        for ex in self._execs.values():
            if ex.conn is not None:
                ex.conn.close()


def _not_found(reason: str) -> bool:
    lowered = reason.lower()
    return (
        "executable file not found" in lowered or "no such file or directory" in lowered
    )


def exec_manager(daemon: Any) -> ExecManager:
    """The daemon's ExecManager, made on first use."""
    manager = getattr(daemon, "execs", None)
    if manager is None:
        manager = ExecManager(daemon)
        daemon.execs = manager
    return manager  # type: ignore[no-any-return]
