"""Containers: create, start, stop, remove, and adopt after an engine restart.

The ContainerManager owns every container's record and lifecycle. A start
mounts the overlay rootfs, asks the network for a namespace, writes the OCI
spec, has conmon run ``<runtime> create``, lets attached clients in, then
runs ``<runtime> start``::

    c = daemon.containers.create({"Image": "busybox", "Cmd": ["true"]}, "t1")
    await daemon.containers.start(c)
    code = await daemon.containers.wait(c, "next-exit")

Exits are noticed without polling: a pidfd on conmon's pid becomes readable
when conmon (which outlives the container by a moment and has written the
exit file by then) ends. conmon processes survive the engine; at start the
engine reads ``containers/*/container.json`` and either watches conmon
again or records the exit that happened while it was away.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import ctypes
import json
import logging
import os
import re
import secrets
import shutil
import signal as signals
import time
from pathlib import Path
from typing import Any

from engine.component import Component
from engine.containers import health as healthcheck
from engine.containers import restart as restart_policy
from engine.containers.attach import AttachManager
from engine.containers.model import Container, now_rfc3339, parse_rfc3339, rfc3339_of
from engine.containers.names import generate_name
from engine.containers.overlay import (
    is_mounted,
    make_init_layer,
    mount_rootfs,
    umount_rootfs,
)
from engine.containers.runtime import (
    Runtime,
    RuntimeError_,
    cgroup_layout,
    parse_signal,
    probe_runtime,
)
from engine.containers.spec import (
    INIT_PATH,
    MASKED_PATHS,
    READONLY_PATHS,
    build_spec,
    init_binary,
    merge_env,
    resources,
)
from engine.containers.validate import check_supported
from engine.errors import (
    Conflict,
    EngineError,
    InvalidParameter,
    NotFound,
    NotModified,
)
from engine.images.reference import parse_repo_tag
from engine.storage.mounts import Mount, inspect_mounts, resolve_mounts

log = logging.getLogger(__name__)

# Empty files the runtime creates in the writable layer as bind-mount
# targets; commit leaves them out (dockerd keeps them in an init layer).
# How long a SIGKILL's answer waits for the container to be gone.
KILL_WAIT = 10.0
RUNTIME_MOUNT_POINTS = frozenset({"etc/hosts", "etc/hostname", "etc/resolv.conf"})

NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
PR_SET_CHILD_SUBREAPER = 36
DEFAULT_STOP_TIMEOUT = 10


class ContainerManager(Component):
    def __init__(self, daemon: Any) -> None:
        super().__init__(daemon)
        self.root = self.config.data_root / "containers"
        self.run_root = self.config.exec_root / "containers"
        self.root.mkdir(parents=True, exist_ok=True)
        self.run_root.mkdir(parents=True, exist_ok=True)
        name, path, why = probe_runtime(self.config.runtime)
        self.runtime_name = name
        self.runtime_path = path
        self._why = why
        self.runtime = Runtime(name, path, self.config.exec_root)
        self.cgroup_v2 = cgroup_layout() == "v2"
        self._containers: dict[str, Container] = {}
        self._names: dict[str, str] = {}
        self._pidfds: dict[str, int] = {}
        self._exit_waiters: dict[str, builtins.list[asyncio.Future[int]]] = {}
        self._remove_waiters: dict[str, builtins.list[asyncio.Future[int]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rootfs_users: dict[str, int] = {}
        self._stopping = False
        self.attach = AttachManager(daemon)
        self.health = healthcheck.HealthMonitor(daemon)

    # -- component lifecycle --

    async def start(self, c: Container | None = None) -> None:  # type: ignore[override]
        """Start the component (no argument) or a container (the contract's start(c))."""
        if c is None:
            await self._start_component()
        else:
            await self.start_container(c)

    async def stop(  # type: ignore[override]
        self, c: Container | None = None, timeout: int | None = None
    ) -> None:
        """Stop the component (no argument; containers keep running) or a container."""
        if c is None:
            await self._stop_component()
        else:
            await self.stop_container(c, timeout)

    async def _start_component(self) -> None:
        log.info(
            "OCI runtime: %s (%s) because %s",
            self.runtime_name,
            self.runtime_path,
            self._why,
        )
        # conmon double-forks; as subreaper the engine gets it as a child and
        # can reap it instead of leaving a zombie to an init that may not.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        for directory in sorted(self.root.iterdir()):
            if not (directory / "container.json").exists():
                continue
            try:
                c = Container.load(directory)
            except (OSError, ValueError, KeyError) as err:
                log.warning(
                    "skipping unreadable container record in %s: %s", directory, err
                )
                continue
            self._containers[c.id] = c
            self._names[c.name] = c.id
        for c in list(self._containers.values()):
            try:
                await self._adopt(c)
            except Exception:
                log.exception("adopting container %s failed", c.id[:12])

    async def _stop_component(self) -> None:
        self._stopping = True
        loop = asyncio.get_running_loop()
        for cid, fd in list(self._pidfds.items()):
            loop.remove_reader(fd)
            os.close(fd)
            self._pidfds.pop(cid, None)
        for task in list(self._tasks):
            task.cancel()
        await self.health.close()
        # Attach connections to conmon end; conmon and the processes stay.
        with contextlib.suppress(Exception):
            await self.attach.close()

    async def _adopt(self, c: Container) -> None:
        if c.status == "restarting" and not (c.conmon_pid and self._conmon_alive(c)):
            # Between two runs of a restart policy when the engine stopped.
            if c.restart_policy["Name"] not in ("", "no") and not c.manually_stopped:
                self._spawn(self._restart_later(c, 0))
            else:
                c.set_status("exited")
                c.save()
            return
        if c.status in ("running", "paused", "restarting") or c.state.get("Pid"):
            if c.conmon_pid and self._conmon_alive(c):
                log.info("adopting running container %s (%s)", c.name, c.id[:12])
                self._watch(c)
                self.health.container_adopted(c)
                await self.daemon.networks.restore(c)
                return
            log.info("container %s exited while the engine was down", c.name)
            await self._handle_exit(c, adopted=True)
            return
        if c.status == "removing":
            # The engine stopped half way through a removal: finish it.
            self._containers.pop(c.id, None)
            if self._names.get(c.name) == c.id:
                self._names.pop(c.name, None)
            await self._delete_files(c)
            return
        if c.status == "exited":
            with contextlib.suppress(Exception):
                await self.daemon.networks.teardown(c)
        if (
            c.status in ("exited", "created")
            and c.extra.get("WasRunning")
            and restart_policy.restarts_with_engine(c)
        ):
            # "always" comes back with the engine even after a docker stop.
            c.manually_stopped = False
            self._spawn(self._restart_later(c, 0))

    def _conmon_alive(self, c: Container) -> bool:
        try:
            cmdline = Path(f"/proc/{c.conmon_pid}/cmdline").read_bytes()
        except OSError:
            return False
        return b"conmon" in cmdline and c.id.encode() in cmdline

    # -- lookup --

    def get(self, name_or_id: str) -> Container:
        """A container by full id, name (with or without "/") or unique id prefix.

        Raises NotFound("No such container: x").
        """
        key = name_or_id.lstrip("/") if name_or_id.startswith("/") else name_or_id
        if key in self._containers:
            return self._containers[key]
        if key in self._names:
            return self._containers[self._names[key]]
        if key and re.fullmatch(r"[0-9a-f]+", key):
            found = [c for cid, c in self._containers.items() if cid.startswith(key)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise InvalidParameter(
                    f"multiple IDs found with provided prefix: {key}"
                )
        raise NotFound(f"No such container: {name_or_id}")

    def list(self) -> builtins.list[Container]:
        """Every container, newest first."""
        return sorted(self._containers.values(), key=lambda c: c.created, reverse=True)

    list_containers = list

    def save(self, c: Container) -> None:
        if c.id in self._containers:
            c.save()

    def counts(self) -> dict[str, int]:
        out = {"total": 0, "running": 0, "paused": 0, "stopped": 0}
        for c in self._containers.values():
            out["total"] += 1
            if c.status == "paused":
                out["paused"] += 1
            elif c.running:
                out["running"] += 1
            else:
                out["stopped"] += 1
        return out

    def using_image(self, image_id: str) -> bool:
        return any(c.image_id == image_id for c in self._containers.values())

    def image_users(self, image_id: str) -> builtins.list[tuple[str, bool]]:
        """(container id, running) of every container made from the image."""
        return [
            (c.id, c.running)
            for c in self._containers.values()
            if c.image_id == image_id
        ]

    def using_volume(self, name: str) -> builtins.list[str]:
        """Ids of containers that mount volume ``name`` (truthy when in use)."""
        return [
            c.id
            for c in self._containers.values()
            if any(
                m.get("Type") == "volume" and m.get("Name") == name for m in c.mounts
            )
        ]

    def size_rw(self, c: Container) -> int:
        return _tree_size(c.upper)

    def size_root_fs(self, c: Container) -> int:
        try:
            image_size = int(self.daemon.images.get(c.image_id).size)
        except Exception:
            image_size = 0
        return image_size + self.size_rw(c)

    def df(self) -> builtins.list[dict[str, Any]]:
        from engine.containers.views import summary

        return [summary(self, c, size=True) for c in self.list()]

    def _lock(self, c: Container) -> asyncio.Lock:
        return self._locks.setdefault(c.id, asyncio.Lock())

    # -- create --

    def create(self, body: Any, name: str | None = None) -> Container:
        """Create a container from an API create body.

        Raises InvalidParameter (bad input, unsupported option), NotFound
        ("No such image: x") and Conflict (name in use).
        """
        if not isinstance(body, dict):
            raise InvalidParameter(
                "invalid JSON: the container config must be an object"
            )
        if name:
            if not NAME_RE.match(name):
                raise InvalidParameter(
                    f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                )
            name = name.lstrip("/")
            if name in self._names:
                raise Conflict(
                    f'Conflict. The container name "/{name}" is already in use by container "{self._names[name]}". You have to remove (or rename) that container to be able to reuse that name.'
                )
        image_ref = body.get("Image")
        if not image_ref or not isinstance(image_ref, str):
            raise InvalidParameter(
                "config cannot be empty in order to create a container"
            )
        host_config = dict(body.get("HostConfig") or {})
        if body.get("NetworkDisabled"):
            host_config["NetworkMode"] = "none"
        networking = body.get("NetworkingConfig") or None
        check_supported(body, host_config)
        restart_policy.validate(
            host_config.get("RestartPolicy"), bool(host_config.get("AutoRemove"))
        )
        image = self.daemon.images.get(image_ref)
        image_config = dict((image.config or {}).get("config") or {})

        config = _merge_config(body, image_config)
        entrypoint = list(config.get("Entrypoint") or [])
        if entrypoint == [""]:
            entrypoint = []
        command = [*entrypoint, *list(config.get("Cmd") or [])]
        if not command:
            raise InvalidParameter("No command specified")
        _normalize_resources(host_config)
        host_config.setdefault("Runtime", self.runtime_name)

        cid = self._new_id()
        name = name or self._generate_name()
        if host_config.get("NetworkMode") == "host" and not body.get("Hostname"):
            config["Hostname"] = os.uname().nodename
        config.setdefault("Hostname", "")
        if not config["Hostname"]:
            config["Hostname"] = cid[:12]
        networks = self.daemon.networks
        networks.validate(host_config, config, networking)

        c = Container(
            id=cid,
            name=name,
            config=config,
            host_config=host_config,
            image_id=image.id,
            dir=self.root / cid,
            bundle=self.run_root / cid,
            path=command[0],
            args=command[1:],
        )
        if host_config.get("Init"):
            c.path, c.args = INIT_PATH, ["--", *command]
        c.network_settings = networks.initial_settings(host_config, networking)
        c.dir.mkdir(parents=True)
        try:
            self._resolve_mounts(c, image_config, bool(body.get("Volumes")))
            c.log_path.touch()
            c.save()
        except BaseException:
            shutil.rmtree(c.dir, ignore_errors=True)
            raise
        self._containers[cid] = c
        self._names[name] = cid
        self._publish(c, "create")
        log.info("created container %s (%s) from %s", name, cid[:12], image_ref)
        return c

    def _resolve_mounts(
        self, c: Container, image_config: dict[str, Any], user_volumes: bool
    ) -> None:
        # Config.Volumes (``-v /data``) is the body's and the image's together.
        volumes = c.config.get("Volumes") or {}
        mounts = resolve_mounts(self.daemon, c, {**image_config, "Volumes": volumes})
        c.extra["MountSpecs"] = [m.to_dict() for m in mounts]
        c.mounts = inspect_mounts(mounts)

    def _load_mounts(self, c: Container) -> builtins.list[Any]:
        specs = c.extra.get("MountSpecs") or []
        if not specs:
            return []
        return [Mount.from_dict(d) for d in specs]

    def _new_id(self) -> str:
        while True:
            cid = secrets.token_hex(32)
            if not any(k.startswith(cid[:12]) for k in self._containers):
                return cid

    def _generate_name(self) -> str:
        for _ in range(100):
            name = generate_name()
            if name not in self._names:
                return name
        return generate_name() + str(secrets.randbelow(1000))

    # -- start --

    async def start_container(self, c: Container) -> None:
        """Start a created or exited container.

        Raises NotModified when it runs already, Conflict when it is paused or
        being removed, EngineError with the runtime's message when it fails.
        """
        async with self._lock(c):
            if c.status == "paused":
                raise Conflict("cannot start a paused container, try unpause instead")
            if c.running:
                raise NotModified("container already started")
            if c.status in ("removing", "dead"):
                raise Conflict("container is marked for removal and cannot be started")
            c.manually_stopped = False
            await self._start_locked(c)

    async def _start_locked(self, c: Container) -> None:
        try:
            await self._run(c)
        except EngineError as err:
            failure = _start_error(err)
            c.state["Error"] = failure.message
            if c.status != "created":
                c.set_status("exited")
            code = _start_exit_code(err.message)
            c.state["ExitCode"] = code
            await self._cleanup_after_run(c)
            c.save()
            # Clients attached before /start must not wait for a process
            # that never ran; --rm removes the container as dockerd does.
            with contextlib.suppress(Exception):
                await self.attach.container_exited(c)
            if c.host_config.get("AutoRemove"):
                self._spawn(self.remove(c, force=True, volumes=True))
            raise failure from err

    async def _run(self, c: Container) -> None:
        image = self.daemon.images.get(c.image_id)
        lower = list(self.daemon.images.layer_dirs(image))
        await asyncio.to_thread(self._prepare_bundle, c, lower)
        mounts = self._load_mounts(c)
        volumes = self.daemon.volumes
        for m in mounts:
            if m.needs_copy_up:
                target = c.rootfs / m.destination.lstrip("/")
                await asyncio.to_thread(volumes.populate, m.name, target, c.rootfs)
            if m.type == "volume":
                volumes.mount(m.name, c.id)
        oci_mounts = [m.to_oci() for m in mounts]

        netns = await self._setup_network(c)
        oci_mounts = [
            *self._etc_mounts(c, {m["destination"] for m in oci_mounts}),
            *oci_mounts,
        ]
        if c.host_config.get("Init"):
            tini = init_binary()
            if not tini:
                raise InvalidParameter(
                    "--init: no init binary installed (Debian package tini)"
                )
            oci_mounts.append({"destination": INIT_PATH, "type": "bind", "source": tini,
                               "options": ["rbind", "ro", "rprivate"]})  # fmt: skip
        cgroups_path = f"/dockyard/{c.id}" if self.cgroup_v2 else f"dockyard/{c.id}"
        spec = await asyncio.to_thread(
            build_spec,
            config=c.config,
            host_config=c.host_config,
            process_args=[c.path, *c.args],
            rootfs=c.rootfs,
            mounts=oci_mounts,
            netns=netns,
            cgroups_path=cgroups_path,
            cgroup_v2=self.cgroup_v2,
        )
        await asyncio.to_thread(self._write_spec, c, spec)
        await self.daemon.networks.publish(c)

        pid = await self.runtime.create(c)
        c.state["Pid"] = pid
        try:
            await self.attach.container_created(c)
            await self.runtime.start(c.id)
        except BaseException:
            await self.runtime.delete(c.id)
            raise
        c.set_status("running")
        c.state.update(
            Pid=pid,
            ExitCode=0,
            Error="",
            OOMKilled=False,
            StartedAt=now_rfc3339(),
            FinishedAt=c.state.get("FinishedAt") or "0001-01-01T00:00:00Z",
        )
        c.extra["WasRunning"] = True
        c.extra.pop("StopRequested", None)
        self.health.container_started(c)
        c.save()
        self._watch(c)
        self._publish(c, "start")
        log.info("started container %s (%s)", c.name, c.id[:12])

    def _prepare_bundle(self, c: Container, lower: builtins.list[Path]) -> None:
        c.bundle.mkdir(parents=True, exist_ok=True)
        if not is_mounted(c.rootfs):
            init = make_init_layer(c.dir / "init")
            mount_rootfs(c.rootfs, [init, *lower], c.upper, c.work)
        workdir = c.config.get("WorkingDir")
        if workdir:
            target = c.rootfs / workdir.lstrip("/")
            if not target.exists() and not target.is_symlink():
                target.mkdir(parents=True, exist_ok=True)

    async def mount_rootfs(self, c: Container) -> Path:
        """The container's merged rootfs, mounted for a stopped container too.

        For archive and export; pair with ``release_rootfs``.
        """
        self._rootfs_users[c.id] = self._rootfs_users.get(c.id, 0) + 1
        if not await asyncio.to_thread(is_mounted, c.rootfs):
            image = self.daemon.images.get(c.image_id)
            lower = list(self.daemon.images.layer_dirs(image))
            await asyncio.to_thread(self._prepare_bundle, c, lower)
        return c.rootfs

    async def release_rootfs(self, c: Container) -> None:
        users = self._rootfs_users.get(c.id, 1) - 1
        if users > 0:
            self._rootfs_users[c.id] = users
            return
        self._rootfs_users.pop(c.id, None)
        if not c.running:
            await asyncio.to_thread(umount_rootfs, c.rootfs)

    def _write_spec(self, c: Container, spec: dict[str, Any]) -> None:
        (c.bundle / "config.json").write_text(json.dumps(spec))

    async def _setup_network(self, c: Container) -> str | None:
        result = await self.daemon.networks.setup(c)
        return str(result) if result else None

    def _etc_mounts(
        self, c: Container, taken: set[str]
    ) -> builtins.list[dict[str, Any]]:
        files = self.daemon.networks.write_etc_files(c)
        out = []
        for dest, source in files.items():
            if dest in taken:
                continue
            out.append({"destination": dest, "type": "bind", "source": str(source),
                        "options": ["rbind", "rprivate"]})  # fmt: skip
        c.hosts_path = str(files.get("/etc/hosts", ""))
        c.hostname_path = str(files.get("/etc/hostname", ""))
        c.resolv_conf_path = str(files.get("/etc/resolv.conf", ""))
        return out

    # -- exit handling --

    def _watch(self, c: Container) -> None:
        if c.id in self._pidfds or not c.conmon_pid:
            return
        try:
            fd = os.pidfd_open(c.conmon_pid)
        except ProcessLookupError:
            self._spawn(self._handle_exit(c))
            return
        self._pidfds[c.id] = fd
        loop = asyncio.get_running_loop()
        loop.add_reader(fd, self._conmon_ended, c)

    def _conmon_ended(self, c: Container) -> None:
        fd = self._pidfds.pop(c.id, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(c.conmon_pid, os.WNOHANG)
        self._spawn(self._handle_exit(c))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("container task failed", exc_info=task.exception())

    def _read_exit_code(self, c: Container) -> int | None:
        for path in (c.exit_file, c.bundle / "exit"):
            try:
                text = path.read_text().strip()
            except OSError:
                continue
            if text.lstrip("-").isdigit():
                return int(text)
        return None

    async def _handle_exit(self, c: Container, adopted: bool = False) -> None:
        # Under the container's lock and still "running" while cleaning up:
        # a /start or /wait that comes meanwhile sees the finished state only.
        async with self._lock(c):
            code = self._read_exit_code(c)
            if code is None:
                # No exit file: conmon was killed, or the host rebooted.
                code = 255 if adopted else 137
            oom = c.oom_file.exists()
            started = parse_rfc3339(c.state.get("StartedAt", ""))
            finished = now_rfc3339()
            if adopted:
                # Exited while the engine was away: conmon stamped the exit file.
                with contextlib.suppress(OSError):
                    finished = rfc3339_of(c.exit_file.stat().st_mtime_ns)
            self.health.container_stopped(c)
            await self._cleanup_after_run(c)
            c.set_status("exited")
            c.state.update(Pid=0, ExitCode=code, OOMKilled=oom, FinishedAt=finished)
            c.conmon_pid = 0
            with contextlib.suppress(Exception):
                await self.attach.container_exited(c)
            stopped_by_api = bool(c.extra.pop("StopRequested", False))
            c.save()
            duration = str(int(time.time() - started))
            self._publish(c, "die", {"exitCode": str(code), "execDuration": duration})
            if oom:
                self._publish(c, "oom")
            log.info("container %s (%s) exited with %d", c.name, c.id[:12], code)
            self._resolve(self._exit_waiters, c, code)

        if c.host_config.get("AutoRemove") and not self._stopping:
            with contextlib.suppress(EngineError):
                await self.remove(c, force=True, volumes=True)
            return
        if stopped_by_api or c.manually_stopped or self._stopping:
            return
        if restart_policy.should_restart(c, code):
            delay = restart_policy.next_delay(c, time.time() - started)
            c.set_status("restarting")
            c.save()
            self._spawn(self._restart_later(c, delay))

    async def _restart_later(self, c: Container, delay: float) -> None:
        await asyncio.sleep(delay)
        if (
            c.id not in self._containers
            or c.manually_stopped
            or (c.running and c.status != "restarting")
        ):
            return
        async with self._lock(c):
            if c.id not in self._containers or c.manually_stopped:
                return
            c.restart_count += 1
            try:
                await self._start_locked(c)
            except EngineError as err:
                log.warning("restarting %s failed: %s", c.name, err.message)
                return
        self._publish(c, "restart")

    async def _cleanup_after_run(self, c: Container) -> None:
        await self.runtime.delete(c.id)
        try:
            await self.daemon.networks.teardown(c)
        except Exception:
            log.warning("network teardown of %s failed", c.id[:12], exc_info=True)
        for m in c.mounts:
            if m.get("Type") == "volume" and m.get("Name"):
                with contextlib.suppress(Exception):
                    self.daemon.volumes.unmount(m["Name"], c.id)
        await asyncio.to_thread(umount_rootfs, c.rootfs)

    def _resolve(
        self,
        table: dict[str, builtins.list[asyncio.Future[int]]],
        c: Container,
        code: int,
    ) -> None:
        for fut in table.pop(c.id, []):
            if not fut.done():
                fut.set_result(code)

    # -- stop, kill, restart, pause --

    async def stop_container(
        self, c: Container, timeout: int | None = None, signal: str | None = None
    ) -> None:
        """StopSignal (or ``signal``), then SIGKILL after ``timeout`` seconds.

        ``timeout`` None means the container's StopTimeout or 10 s.

        Raises NotModified when the container is not running.
        """
        await self._settle(c)
        if c.status == "restarting":
            c.manually_stopped = True
            c.set_status("exited")
            c.save()
            return
        if not c.running:
            raise NotModified("container already stopped")
        c.manually_stopped = True
        c.extra["StopRequested"] = True
        if timeout is None:
            timeout = c.config.get("StopTimeout")
            timeout = DEFAULT_STOP_TIMEOUT if timeout is None else int(timeout)
        sig = parse_signal(signal or c.config.get("StopSignal"), signals.SIGTERM)
        waiter = self._exit_future(c)
        if c.paused:
            await self.runtime.resume(c.id)
        with contextlib.suppress(Conflict):
            await self._signal(c, sig)
        try:
            if timeout < 0:
                await asyncio.shield(waiter)
            else:
                await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            log.info(
                "container %s ignored signal %d for %ds; killing it",
                c.name,
                sig,
                timeout,
            )
            with contextlib.suppress(Conflict):
                await self._signal(c, signals.SIGKILL)
            await asyncio.shield(waiter)
        await self._removed_or_settled(c)
        self._publish(c, "stop")

    async def _removed_or_settled(self, c: Container) -> None:
        # _handle_exit runs in its own task: let it finish its bookkeeping.
        for _ in range(100):
            if c.status != "running":
                return
            await asyncio.sleep(0)

    async def _settle(self, c: Container) -> None:
        """Wait for a start or restart in progress; a pending restart is dropped."""
        if c.status == "restarting" or self._lock(c).locked():
            c.manually_stopped = True
        async with self._lock(c):
            pass

    def _exit_future(self, c: Container) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._exit_waiters.setdefault(c.id, []).append(fut)
        return fut

    async def _signal(self, c: Container, sig: int) -> None:
        self._publish(c, "kill", {"signal": str(sig)})
        await self.runtime.kill(c.id, sig, all_processes=sig == signals.SIGKILL)

    async def kill(self, c: Container, signal: str | int | None = None) -> None:
        """Send a signal (default SIGKILL). Raises Conflict when not running."""
        sig = parse_signal(signal)
        if not c.running or c.status == "restarting":
            raise Conflict(
                f"Cannot kill container: {c.id}: Container {c.id} is not running"
            )
        if sig in (signals.SIGKILL, signals.SIGTERM, signals.SIGINT):
            c.extra["StopRequested"] = True
            c.manually_stopped = True
        if c.paused and sig == signals.SIGKILL:
            await self.runtime.resume(c.id)
        waiter = self._exit_future(c) if sig == signals.SIGKILL else None
        try:
            await self._signal(c, sig)
        except Conflict:
            raise Conflict(
                f"Cannot kill container: {c.id}: Container {c.id} is not running"
            ) from None
        if waiter is not None:
            # As dockerd: after SIGKILL the answer waits for the exit, so
            # `docker kill x; docker rm x` finds the container stopped.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), KILL_WAIT)
            await self._removed_or_settled(c)

    async def restart(self, c: Container, timeout: int | None = None) -> None:
        with contextlib.suppress(NotModified):
            await self.stop_container(c, timeout)
        await self.start_container(c)
        self._publish(c, "restart")

    async def pause(self, c: Container) -> None:
        """Freeze every process. Raises Conflict unless running and not paused."""
        if not c.running or c.status == "restarting":
            raise Conflict(f"Container {c.id} is not running")
        if c.paused:
            raise Conflict(f"Container {c.id} is already paused")
        await self.runtime.pause(c.id)
        c.set_status("paused")
        self.health.container_stopped(c)
        c.save()
        self._publish(c, "pause")

    async def unpause(self, c: Container) -> None:
        if not c.paused:
            raise Conflict(f"Container {c.id} is not paused")
        await self.runtime.resume(c.id)
        c.set_status("running")
        self.health.container_resumed(c)
        c.save()
        self._publish(c, "unpause")

    # -- wait --

    async def wait(self, c: Container, condition: str = "not-running") -> int:
        """The exit code once ``condition`` holds: not-running, next-exit, removed.

        Raises InvalidParameter for another condition.
        """
        return await self.wait_future(c, condition)

    def wait_future(self, c: Container, condition: str) -> asyncio.Future[int]:
        """Register a waiter at once (before /start runs) and return its future.

        Raises InvalidParameter for an unknown condition.
        """
        condition = condition or "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidParameter(f"invalid condition: {condition!r}")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if condition == "not-running" and not c.running:
            fut.set_result(c.exit_code)
        elif condition == "removed":
            if c.id in self._containers:
                self._remove_waiters.setdefault(c.id, []).append(fut)
            else:
                fut.set_result(c.exit_code)
        else:
            self._exit_waiters.setdefault(c.id, []).append(fut)
        return fut

    # -- remove --

    async def remove(
        self, c: Container, force: bool = False, volumes: bool = False
    ) -> None:
        """Remove a container. Raises Conflict when it runs and not ``force``."""
        if force:
            await self._settle(c)
        if c.running and not force:
            raise Conflict(
                f'cannot remove container "/{c.name}": container is {c.status}: stop the container before removing or force remove'
            )
        if c.running and c.status != "restarting":
            c.manually_stopped = True
            c.extra["StopRequested"] = True
            waiter = self._exit_future(c)
            if c.paused:
                with contextlib.suppress(EngineError):
                    await self.runtime.resume(c.id)
            with contextlib.suppress(Conflict):
                await self._signal(c, signals.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), 15)
            await self._removed_or_settled(c)
        if c.id not in self._containers:
            return
        c.set_status("removing")
        self.health.container_stopped(c)
        self._containers.pop(c.id, None)
        if self._names.get(c.name) == c.id:
            self._names.pop(c.name, None)
        with contextlib.suppress(OSError):
            c.save()
        await self._cleanup_after_run(c)
        await self._delete_files(c)
        if volumes:
            self._remove_anonymous_volumes(c)
        self._locks.pop(c.id, None)
        with contextlib.suppress(Exception):
            self.attach.container_removed(c)
        self._publish(c, "destroy")
        self._resolve(self._exit_waiters, c, c.exit_code)
        self._resolve(self._remove_waiters, c, c.exit_code)
        log.info("removed container %s (%s)", c.name, c.id[:12])

    async def _delete_files(self, c: Container) -> None:
        await asyncio.to_thread(_remove_tree, c.dir)
        await asyncio.to_thread(_remove_tree, c.bundle)
        with contextlib.suppress(OSError):
            (self.runtime.sockets / c.id[:12]).unlink()
        with contextlib.suppress(OSError):
            c.exit_file.unlink()

    def _remove_anonymous_volumes(self, c: Container) -> None:
        store = self.daemon.volumes
        for m in c.mounts:
            name = m.get("Name") or ""
            if m.get("Type") != "volume" or not name:
                continue
            try:
                # ``rm -v`` removes anonymous volumes only, as dockerd.
                if store.get(name).anonymous:
                    store.remove(name)
            except EngineError as err:
                log.info("keeping volume %s: %s", name[:12], err.message)

    # -- rename, update, prune, commit --

    def rename(self, c: Container, new_name: str) -> None:
        """Raises InvalidParameter for a bad name and Conflict for a taken one."""
        if not new_name:
            raise InvalidParameter("Neither old nor new names may be empty")
        if not NAME_RE.match(new_name):
            raise InvalidParameter(
                f"Invalid container name ({new_name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )
        new_name = new_name.lstrip("/")
        if new_name == c.name:
            raise InvalidParameter(
                "Renaming a container with the same name as its current name"
            )
        if new_name in self._names:
            raise Conflict(
                f'Conflict. The container name "/{new_name}" is already in use by container "{self._names[new_name]}". You have to remove (or rename) that container to be able to reuse that name.'
            )
        old = c.name
        self._names.pop(old, None)
        c.name = new_name
        self._names[new_name] = c.id
        c.save()
        self._publish(c, "rename", {"oldName": "/" + old})

    async def update(self, c: Container, body: dict[str, Any]) -> builtins.list[str]:
        """``docker update``: resources and the restart policy.

        Raises InvalidParameter for a key that cannot change.
        """
        allowed = {
            "Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuShares",
            "CpuQuota", "CpuPeriod", "CpusetCpus", "CpusetMems", "PidsLimit",
            "RestartPolicy",
        }  # fmt: skip
        changes = {}
        for key, value in body.items():
            if value in (None, 0, "", [], {}) and key != "RestartPolicy":
                continue
            if key not in allowed:
                raise InvalidParameter(
                    f"docker update: {key} cannot be changed by this engine"
                )
            changes[key] = value
        if "RestartPolicy" in changes:
            restart_policy.validate(
                changes["RestartPolicy"], bool(c.host_config.get("AutoRemove"))
            )
        merged = {**c.host_config, **changes}
        _normalize_resources(merged, updating=True)
        if c.running:
            await self.runtime.update(c.id, resources(merged))
        c.host_config = merged
        c.save()
        self._publish(c, "update")
        return []

    async def prune(
        self, filters: dict[str, builtins.list[str]]
    ) -> tuple[builtins.list[str], int]:
        from engine.containers.views import label_matches, until_matches

        deleted, reclaimed = [], 0
        for c in list(self._containers.values()):
            if c.running or c.status == "removing":
                continue
            if not label_matches(c, filters) or not until_matches(c, filters):
                continue
            size = self.size_rw(c)
            await self.remove(c)
            deleted.append(c.id)
            reclaimed += size
        self.events.publish("container", "prune", "", {"reclaimed": str(reclaimed)})
        return deleted, reclaimed

    async def commit(
        self,
        c: Container,
        repo: str | None = None,
        tag: str | None = None,
        comment: str = "",
        author: str = "",
        changes: builtins.list[str] | None = None,
        pause: bool = True,
        config: dict[str, Any] | None = None,
    ) -> Any:
        """Make an image of the container's writable layer on top of its image.

        ``changes`` are Dockerfile lines (``CMD ["sh"]``); ``config`` replaces
        fields of the container's Config. Raises InvalidParameter for a bad
        change or reference.
        """
        images = self.daemon.images
        image = images.get(c.image_id)
        run_config = {
            k: v
            for k, v in c.config.items()
            if k not in ("Hostname", "Domainname", "Image")
        }
        if config:
            run_config.update(config)
        ref = str(parse_repo_tag(repo, tag)) if repo else None
        paused_here = False
        if pause and c.running and not c.paused:
            await self.runtime.pause(c.id)
            paused_here = True
        try:
            new_image = await asyncio.to_thread(
                images.commit,
                image,
                # A container never started has no writable layer yet.
                c.upper if c.upper.is_dir() else None,
                run_config,
                created_by=" ".join([c.path, *c.args]),
                comment=comment,
                author=author,
                changes=list(changes or []),
                ref=ref,
                skip_empty=RUNTIME_MOUNT_POINTS,
            )
        finally:
            if paused_here:
                await self.runtime.resume(c.id)
        self._publish(c, "commit", {"comment": comment})
        return new_image

    # -- events --

    def _publish(
        self, c: Container, action: str, extra: dict[str, str] | None = None
    ) -> None:
        attrs = {**c.labels, "name": c.name, "image": c.image_ref}
        attrs.update(extra or {})
        self.events.publish("container", action, c.id, attrs)


def _merge_config(body: dict[str, Any], image: dict[str, Any]) -> dict[str, Any]:
    """The container Config: the body with the image's defaults filled in."""
    keys = (
        "Hostname", "Domainname", "User", "AttachStdin", "AttachStdout",
        "AttachStderr", "ExposedPorts", "Tty", "OpenStdin", "StdinOnce", "Env",
        "Cmd", "Healthcheck", "ArgsEscaped", "Image", "Volumes", "WorkingDir",
        "Entrypoint", "NetworkDisabled", "MacAddress", "OnBuild", "Labels",
        "StopSignal", "StopTimeout", "Shell",
    )  # fmt: skip
    config: dict[str, Any] = {k: body.get(k) for k in keys if k in body}
    for flag in (
        "AttachStdin",
        "AttachStdout",
        "AttachStderr",
        "Tty",
        "OpenStdin",
        "StdinOnce",
    ):
        config[flag] = bool(config.get(flag))
    for text in ("Hostname", "Domainname", "User", "WorkingDir"):
        config[text] = config.get(text) or ""
    # dockerd's order: the client's variables, then the image's it did not set.
    user_env = list(body.get("Env") or [])
    user_names = {e.split("=", 1)[0] for e in user_env}
    config["Env"] = merge_env(
        user_env,
        [e for e in image.get("Env") or [] if e.split("=", 1)[0] not in user_names],
    )
    entrypoint = body.get("Entrypoint")
    cmd = body.get("Cmd")
    if isinstance(entrypoint, str):
        entrypoint = [entrypoint]
    if isinstance(cmd, str):
        cmd = [cmd]
    if not entrypoint:
        if not cmd:
            cmd = image.get("Cmd")
        if entrypoint is None:
            entrypoint = image.get("Entrypoint")
    config["Cmd"] = cmd or None
    config["Entrypoint"] = entrypoint if entrypoint else None
    if not config["User"]:
        config["User"] = image.get("User") or ""
    if not config["WorkingDir"]:
        config["WorkingDir"] = image.get("WorkingDir") or ""
    if config["WorkingDir"] and not config["WorkingDir"].startswith("/"):
        raise InvalidParameter(
            f"the working directory '{config['WorkingDir']}' is invalid, it needs to be an absolute path"
        )
    config["Labels"] = {**(image.get("Labels") or {}), **(body.get("Labels") or {})}
    exposed = {**(image.get("ExposedPorts") or {}), **(body.get("ExposedPorts") or {})}
    config["ExposedPorts"] = exposed or None
    if not config.get("StopSignal") and image.get("StopSignal"):
        config["StopSignal"] = image["StopSignal"]
    if config.get("StopSignal"):
        parse_signal(config["StopSignal"])
    volumes = {**(image.get("Volumes") or {}), **(body.get("Volumes") or {})}
    config["Volumes"] = volumes or None
    check = healthcheck.merge(body.get("Healthcheck"), image.get("Healthcheck"))
    if check is not None:
        config["Healthcheck"] = check
    config.setdefault("OnBuild", None)
    config["Image"] = body["Image"]
    return config


def _normalize_resources(host_config: dict[str, Any], updating: bool = False) -> None:
    """docker's checks and defaults for the resource fields.

    Raises InvalidParameter with docker's wording.
    """
    memory = int(host_config.get("Memory") or 0)
    swap = int(host_config.get("MemorySwap") or 0)
    if memory and memory < 6 * 1024 * 1024:
        raise InvalidParameter("Minimum memory limit allowed is 6MB")
    if swap > 0 and not memory:
        raise InvalidParameter(
            "You should always set the Memory limit when using Memoryswap limit"
        )
    if swap > 0 and swap < memory:
        raise InvalidParameter(
            "Minimum memoryswap limit should be larger than memory limit, see usage"
        )
    if memory and swap == 0 and not updating:
        host_config["MemorySwap"] = memory * 2
    nano = int(host_config.get("NanoCpus") or 0)
    if nano and (host_config.get("CpuQuota") or host_config.get("CpuPeriod")):
        raise InvalidParameter(
            "Conflicting options: Nano CPUs and CPU Period cannot both be set"
        )
    ncpu = os.cpu_count() or 1
    if nano and (nano < 10_000_000 or nano > ncpu * 1_000_000_000):
        raise InvalidParameter(
            f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
        )
    shares = int(host_config.get("CpuShares") or 0)
    if shares < 0:
        raise InvalidParameter("invalid CPU shares: must be positive")
    pids = host_config.get("PidsLimit")
    if pids is not None and int(pids) <= 0 and not updating:
        # dockerd stores "no limit" as null; update keeps -1 (unlimited).
        host_config["PidsLimit"] = None
    if not updating and not host_config.get("Privileged"):
        # Inspect shows the paths really masked, as dockerd does.
        if host_config.get("MaskedPaths") is None:
            host_config["MaskedPaths"] = list(MASKED_PATHS)
        if host_config.get("ReadonlyPaths") is None:
            host_config["ReadonlyPaths"] = list(READONLY_PATHS)
    host_config.setdefault("NetworkMode", "default")
    if host_config.get("NetworkMode") in ("", None):
        host_config["NetworkMode"] = "default"
    for key in (
        "Memory",
        "MemorySwap",
        "NanoCpus",
        "CpuShares",
        "CpuQuota",
        "CpuPeriod",
    ):
        host_config.setdefault(key, 0)
    host_config.setdefault("RestartPolicy", {"Name": "no", "MaximumRetryCount": 0})
    # The values dockerd fills in, so inspect shows the same HostConfig.
    if not host_config.get("ShmSize"):
        host_config["ShmSize"] = 64 * 1024 * 1024
    if not host_config.get("IpcMode"):
        host_config["IpcMode"] = "private"
    if not host_config.get("CgroupnsMode"):
        v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        host_config["CgroupnsMode"] = "private" if v2 else "host"
    if host_config.get("MemorySwappiness") == -1:
        host_config["MemorySwappiness"] = None
    host_config.setdefault("KernelMemory", 0)
    host_config.setdefault("KernelMemoryTCP", 0)
    host_config.setdefault("AutoRemove", False)
    # conmon writes k8s-file, but clients key on docker's default name:
    # docker-py's containers.run() reads the output only for "json-file".
    host_config.setdefault("LogConfig", {"Type": "json-file", "Config": {}})
    log_config = host_config.get("LogConfig") or {}
    if not log_config.get("Type"):
        host_config["LogConfig"] = {
            "Type": "json-file",
            "Config": log_config.get("Config") or {},
        }


def _start_exit_code(message: str) -> int:
    text = message.lower()
    if "executable file not found" in text or "no such file or directory" in text:
        return 127
    if "permission denied" in text:
        return 126
    return 128


def _start_error(err: EngineError) -> EngineError:
    if isinstance(err, RuntimeError_):
        message = f"failed to create shim task: OCI runtime create failed: {err.message}: unknown"
        if _start_exit_code(err.message) in (126, 127):
            return InvalidParameter(message)
        return EngineError(message)
    return err


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _remove_tree(path: Path) -> None:
    if is_mounted(path / "rootfs"):
        umount_rootfs(path / "rootfs")
    shutil.rmtree(path, ignore_errors=True)
