"""Machines: create, start (stage by stage), stop and remove Dockyard VMs.

``Machine.start()`` walks the stages in order and reports each as a
``StageEvent``; a failure raises the stage's error naming ``machine.log``::

    image        the guest image is there (built once, cached by its inputs)
    accelerator  kvm only if a boot probe ran a kernel; else TCG (cached)
    boot         the backend boots kernel + initramfs + root + data disk
    ssh          an SSH handshake with the pinned host key (not just a TCP
                 accept: QEMU's user network accepts before the guest listens)
    engine       clock set, shares mounted, engine wheel (re)installed, /_ping
    forward      the forwarder daemon serves the API socket on the host
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import platformdirs

from desktop.machine import accel, api_listener, contexts, contexts_tls, ssh
from desktop.machine.backend import Backend, VMConfig, get_backend
from desktop.machine.errors import (
    AcceleratorError,
    BootError,
    EngineError,
    ForwardError,
    ImageError,
    MachineError,
    MachineExists,
    MachineNotFound,
    SSHError,
    StageError,
)
from desktop.machine.files import (
    MachineDir,
    MachineRecord,
    RunRecord,
    disk_used_bytes,
    grow_data_disk,
    make_data_disk,
)
from desktop.machine.spec import MachineSpec, MachineState, MachineStatus, StageEvent
from vmimage.builder import Manifest

log = logging.getLogger(__name__)

ENGINE_PORT = 2375
GUEST_ENGINE_DIR = "/mnt/data/engine"
SSH_TIMEOUT = 180.0
ENGINE_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
NINEP_OPTIONS = "trans=virtio,version=9p2000.L,msize=524288"

Progress = Callable[[StageEvent], None]


def default_image_dir() -> Path:
    """``DOCKYARD_IMAGE`` or the shared build cache of ``python -m vmimage``."""
    from vmimage import DEFAULT_CACHE

    return Path(os.environ.get("DOCKYARD_IMAGE", str(DEFAULT_CACHE)))


class MachineManager:
    """All machines under one ``DOCKYARD_HOME``."""

    def __init__(self, home: Path | None = None, image_dir: Path | None = None) -> None:
        self.home = (home or self.default_home()).absolute()
        self.image_dir = image_dir or default_image_dir()

    @staticmethod
    def default_home() -> Path:
        env = os.environ.get("DOCKYARD_HOME")
        if env:
            return Path(env)
        return Path(platformdirs.user_data_dir("dockyard", appauthor=False))

    def _names(self) -> list[str]:
        machines = self.home / "machines"
        if not machines.is_dir():
            return []
        return sorted(
            p.name for p in machines.iterdir() if (p / "machine.json").exists()
        )

    def list(self) -> list[MachineStatus]:
        return [self.get(name).status() for name in self._names()]

    def get(self, name: str) -> Machine:
        """The machine called ``name``; raises ``MachineNotFound``."""
        dirs = MachineDir(self.home, name)
        if not dirs.record.exists():
            raise MachineNotFound(
                f"no machine named {name!r}: create it with `dockyard machine create {name}`"
            )
        return Machine(self, dirs)

    def create(self, spec: MachineSpec) -> Machine:
        """Make the machine's folder, keys and data disk; raises ``MachineExists``."""
        spec.validate()
        dirs = MachineDir(self.home, spec.name)
        if dirs.record.exists():
            raise MachineExists(f"machine {spec.name!r} already exists")
        get_backend(spec.backend)
        dirs.root.mkdir(parents=True, exist_ok=True)
        try:
            ssh.generate_keypair(dirs.key, f"dockyard-host@{spec.name}")
            with tempfile.TemporaryDirectory(prefix="dyseed-") as tmp:
                seed = Path(tmp)
                machine = seed / "machine"
                machine.mkdir(mode=0o700)
                host_line = ssh.generate_keypair(
                    machine / "ssh_host_ed25519_key", f"dockyard-guest@{spec.name}"
                )
                kind, blob = host_line.split()[:2]
                dirs.known_hosts.write_text(f"{dirs.host_alias} {kind} {blob}\n")
                authorized = machine / "authorized_keys"
                shutil.copyfile(f"{dirs.key}.pub", authorized)
                authorized.chmod(0o600)
                (seed / "docker").mkdir()
                make_data_disk(dirs.data_disk, spec.disk_gib, seed)
            record = MachineRecord(
                spec=spec, created_at=time.time(), image_dir=str(self.image_dir)
            )
            record.save(dirs.record)
        except BaseException:
            shutil.rmtree(dirs.root, ignore_errors=True)
            raise
        log.info("created machine %s (%s)", spec.name, spec.backend)
        return Machine(self, dirs)

    def remove(self, name: str, force: bool = False) -> None:
        """Delete the machine and everything it made; raises ``MachineError``."""
        machine = self.get(name)
        state = machine.status().state
        if state in (MachineState.RUNNING, MachineState.STARTING) and not force:
            raise MachineError(
                f"machine {name!r} is running: stop it first or use `rm -f`"
            )
        machine._teardown()
        with contextlib.suppress(MachineError):
            machine.backend.remove(machine.dirs)
        contexts.remove_context(machine.context_name)
        machine.dirs.socket.unlink(missing_ok=True)
        shutil.rmtree(machine.dirs.root, ignore_errors=True)
        log.info("removed machine %s", name)

    def accelerator(self, backend: Backend, config: VMConfig) -> str:
        """The best accelerator that really boots a kernel here, cached per host."""
        # Kept beside the image cache when possible: every DOCKYARD_HOME on
        # this host shares the answer (the probe costs ~6 s where it fails).
        shared = config.kernel.parent.parent
        cache = (
            shared / "accelerator.json"
            if os.access(shared, os.W_OK)
            else self.home / "accelerator.json"
        )
        return accel.choose(
            backend.accelerators,
            lambda name: backend.probe(name, config, timeout=accel.PROBE_TIMEOUT),
            cache,
            config.kernel,
            backend.name,
            # VirtualBox and Hyper-V pick their own; QEMU without one: TCG.
            fallback="tcg" if backend.name == "qemu" else "native",
        )


class Machine:
    """One machine; cheap to construct, every call reads its files afresh."""

    def __init__(self, manager: MachineManager, dirs: MachineDir) -> None:
        self.manager = manager
        self.dirs = dirs

    @property
    def name(self) -> str:
        return self.dirs.name

    @property
    def record(self) -> MachineRecord:
        return MachineRecord.load(self.dirs.record)

    @property
    def spec(self) -> MachineSpec:
        return self.record.spec

    @property
    def backend(self) -> Backend:
        return get_backend(self.spec.backend)

    @property
    def log_path(self) -> Path:
        return self.dirs.log

    @property
    def endpoint(self) -> api_listener.Endpoint:
        """How clients reach the engine: ``api.json`` as the forwarder wrote it.

        The unix socket until a forwarder has written one (Linux and macOS
        always serve that; Windows serves a named pipe or TLS).
        """
        return api_listener.Endpoint.load(
            self.dirs.root / "api.json"
        ) or api_listener.Endpoint("unix", f"unix://{self.dirs.socket}")

    @property
    def docker_host(self) -> str:
        return self.endpoint.host

    def docker_env(self) -> dict[str, str]:
        """``DOCKER_HOST`` and, for a TLS endpoint, its certificate variables."""
        return self.endpoint.env()

    @property
    def context_name(self) -> str:
        return "dockyard" if self.name == "default" else f"dockyard-{self.name}"

    def _log(self, message: str) -> None:
        log.info("%s: %s", self.name, message)
        with contextlib.suppress(OSError), self.dirs.log.open("a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n")

    # -- status -----------------------------------------------------------

    def status(self) -> MachineStatus:
        spec = self.spec
        run = RunRecord.load(self.dirs.run)
        state = MachineState.STOPPED
        error = None
        uptime = None
        if run is not None:
            error = run.error
            if run.state == "error":
                state = MachineState.ERROR
            elif run.state == "crashed":
                state = MachineState.CRASHED
            else:
                try:
                    vm = self.backend.state(self.dirs)
                except MachineError as err:
                    vm, error = "unknown", str(err)
                if run.state == "running" and vm == "stopped":
                    state = MachineState.CRASHED
                    error = "the VM stopped without being asked to"
                elif run.state == "starting":
                    state = (
                        MachineState.STARTING
                        if _pid_alive(run.starter_pid)
                        else MachineState.ERROR
                    )
                    if state is MachineState.ERROR:
                        error = "an earlier start was interrupted"
                elif run.state == "stopping":
                    state = MachineState.STOPPING
                elif vm == "running":
                    state = MachineState.RUNNING
                    uptime = time.time() - run.started_at
                    if _forwarder_pid(self.dirs) is None:
                        error = "the forwarder is not running: run `dockyard machine restart`"
        return MachineStatus(
            name=self.name,
            state=state,
            backend=spec.backend,
            cpus=spec.cpus,
            memory_mib=spec.memory_mib,
            disk_gib=spec.disk_gib,
            disk_used_bytes=disk_used_bytes(self.dirs.data_disk),
            uptime_seconds=uptime,
            docker_host=self.docker_host if state is MachineState.RUNNING else None,
            error=error,
            log_path=self.dirs.log,
        )

    # -- start ------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.dirs.root / ".lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as err:
                raise MachineError(
                    f"machine {self.name!r} is busy (another start or stop is running)"
                ) from err
            yield

    def start(self, progress: Progress | None = None) -> None:
        """Boot the machine and block until the engine answers on the host.

        Raises a ``StageError`` subclass (``.stage``, ``.log_path``).
        """
        status = self.status()
        if status.state is MachineState.RUNNING:
            if _forwarder_pid(self.dirs) is None:
                # The VM runs but the forwarder died (killed, host logout).
                with self._locked():
                    self._log("restarting the forwarder")
                    self._start_forwarder()
            return
        with self._locked():
            self._start(progress or (lambda _ev: None))

    def _start(self, progress: Progress) -> None:
        began = time.monotonic()
        stage_began = began
        current = "image"
        timings: dict[str, float] = {}

        def stage(name: str, message: str) -> None:
            nonlocal current, stage_began
            current = name
            stage_began = time.monotonic()
            self._log(f"[{name}] {message}")
            progress(StageEvent(name, message, elapsed=stage_began - began))

        def done(message: str) -> None:
            now = time.monotonic()
            timings[current] = round(now - stage_began, 3)
            self._log(f"[{current}] {message} ({now - stage_began:.1f} s)")
            progress(StageEvent(current, message, done=True, elapsed=now - began))

        self._teardown()
        self.dirs.console.write_text("")
        run = RunRecord(
            state="starting",
            ssh_port=0,
            started_at=time.time(),
            starter_pid=os.getpid(),
        )
        run.save(self.dirs.run)
        record = self.record
        spec = record.spec
        backend = self.backend
        client = None
        try:
            stage("image", "checking the guest image")
            image = self._image(Path(record.image_dir), progress, began)
            done(f"guest image {image.version} (kernel {image.kernel_version})")

            port = _free_port()
            image_dir = Path(record.image_dir)
            config = VMConfig(
                dirs=self.dirs,
                cpus=spec.cpus,
                memory_mib=spec.memory_mib,
                kernel=image_dir / "vmlinux",
                initrd=image_dir / "initramfs.img",
                rootfs=image_dir / "rootfs.img",
                cmdline=image.cmdline,
                ssh_port=port,
                shares=list(spec.shares),
            )
            stage("accelerator", "choosing the accelerator")
            try:
                config.accelerator = self.manager.accelerator(backend, config)
            except (MachineError, OSError) as err:
                raise AcceleratorError(f"accelerator probe failed: {err}") from err
            done(f"using {config.accelerator}")

            stage("boot", f"booting the VM ({spec.cpus} CPUs, {spec.memory_mib} MiB)")
            run.ssh_port = port
            run.accelerator = config.accelerator
            run.save(self.dirs.run)
            try:
                backend.start(config)
            except MachineError as err:
                raise BootError(str(err)) from err
            done("VM running")

            stage("ssh", f"waiting for the guest's SSH on 127.0.0.1:{port}")

            def alive() -> bool:
                return backend.state(self.dirs) == "running"

            try:
                client = ssh.wait_for_ssh(
                    self.dirs.key,
                    self.dirs.known_hosts,
                    port,
                    deadline=time.monotonic() + SSH_TIMEOUT,
                    alive=alive,
                )
            except ConnectionError as err:
                raise BootError(
                    f"the VM stopped during boot: {self._console_tail()}"
                ) from err
            except Exception as err:
                raise SSHError(f"no SSH from the guest: {err}") from err
            done("SSH handshake with the pinned host key")

            stage("engine", "setting the clock, mounting shares, checking the engine")
            # The forwarder's Python start and its own SSH handshake overlap
            # this stage; the forward stage still ends only when /_ping
            # answers through the host socket.
            self._spawn_forwarder()
            version = self._provision(client, spec)
            done(f"engine {version} answers")

            stage("forward", f"forwarding the API socket to {self.dirs.socket}")
            self._wait_forwarder()
            done("docker.sock forwarded")

            run.state = "running"
            run.stages = timings
            run.started_at = time.time()
            run.save(self.dirs.run)
            with contextlib.suppress(OSError):
                contexts_tls.write_machine_context(
                    self.context_name,
                    self.dirs.root,
                    f"unix://{self.dirs.socket}",
                    self.name,
                )
            total = time.monotonic() - began
            self._log(f"[ready] machine {self.name} is running ({total:.1f} s)")
            progress(
                StageEvent(
                    "ready", f"machine {self.name} is running", True, False, total
                )
            )
        except BaseException as err:
            if isinstance(err, StageError):
                failure: StageError = err
            elif isinstance(err, MachineError):
                failure = StageError(str(err), stage=current)
            else:
                failure = StageError(f"{type(err).__name__}: {err}", stage=current)
            failure.log_path = self.dirs.log
            self._log(f"[{current}] FAILED: {failure.args[0]}")
            progress(
                StageEvent(
                    current, str(failure.args[0]), False, True, time.monotonic() - began
                )
            )
            self._teardown()
            RunRecord(
                state="error",
                ssh_port=0,
                started_at=time.time(),
                error=f"{current} stage failed: {failure.args[0]}",
            ).save(self.dirs.run)
            if isinstance(err, KeyboardInterrupt):
                raise
            if failure is err:
                raise
            raise failure from err
        finally:
            if client is not None:
                client.close()

    def _image(self, image_dir: Path, progress: Progress, began: float) -> Manifest:
        import vmimage

        manifest = vmimage.cached(image_dir)
        if manifest is not None:
            return manifest
        if not (image_dir / "manifest.json").exists() and os.geteuid() == 0:
            # First start on this computer: build it (about a minute).
            progress(
                StageEvent(
                    "image",
                    f"building the guest image in {image_dir}",
                    False,
                    False,
                    time.monotonic() - began,
                )
            )
            try:
                return vmimage.build(image_dir, progress=self._log)
            except vmimage.BuildError as err:
                raise ImageError(f"cannot build the guest image: {err}") from err
        try:
            return vmimage.Manifest.load(image_dir / "manifest.json")
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise ImageError(
                f"no guest image in {image_dir}: run `python -m vmimage build --output {image_dir}`"
            ) from err

    def _console_tail(self, lines: int = 5) -> str:
        try:
            text = self.dirs.console.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no console output"
        return " | ".join(text[-lines:]) or "no console output"

    def _provision(self, client: object, spec: MachineSpec) -> str:
        from desktop.machine import bundle

        assert hasattr(client, "exec_command")
        script = [f"date -u -s @{time.time():.3f} >/dev/null"]
        for index, share in enumerate(spec.shares):
            path = shlex.quote(share)
            script.append(
                f"mkdir -p {path} && (mountpoint -q {path} || "
                f"mount -t 9p -o {NINEP_OPTIONS} dyshare{index} {path})"
            )
        # Later, not while the engine imports (the disk also discards online).
        script.append("((sleep 60; fstrim /mnt/data) </dev/null >/dev/null 2>&1 &)")
        script.append(f"cat {GUEST_ENGINE_DIR}/current/VERSION 2>/dev/null || true")
        try:
            installed = ssh.run(
                client, " && ".join(script[:-2]) + "; " + "; ".join(script[-2:])
            ).strip()  # type: ignore[arg-type]
        except (RuntimeError, OSError) as err:
            raise EngineError(f"preparing the guest failed: {err}") from err

        version = bundle.engine_version()
        if installed != version:
            self._log(
                f"[engine] installing engine {version} (guest has {installed or 'none'})"
            )
            wheel = bundle.build_wheel(self.manager.home / "cache")
            try:
                sftp = client.open_sftp()  # type: ignore[attr-defined]
                ssh.run(client, f"mkdir -p {GUEST_ENGINE_DIR}")  # type: ignore[arg-type]
                sftp.put(str(wheel), f"{GUEST_ENGINE_DIR}/incoming.whl")
                sftp.close()
                ssh.run(
                    client,  # type: ignore[arg-type]
                    f"set -e; cd {GUEST_ENGINE_DIR}; rm -rf new old; "
                    "/usr/bin/python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "
                    f"incoming.whl new; echo {shlex.quote(version)} > new/VERSION; "
                    # The engine running now, if any: read before the move,
                    # after which the init may start the new one by itself.
                    "old=$(cat /run/dockyard/engine.pid 2>/dev/null || true); "
                    "if [ -d current ]; then mv current old; fi; mv new current; rm -rf old incoming.whl; "
                    # dockyard-init stops an older engine and runs the new
                    # one at once; the wait keeps the pings below from
                    # reaching the old one while it shuts down.
                    "kill -HUP 1; "
                    'n=0; while [ -n "$old" ] && kill -0 $old 2>/dev/null && [ $n -lt 300 ]; '
                    "do sleep 0.1; n=$((n+1)); done",
                )
            except (RuntimeError, OSError) as err:
                raise EngineError(f"installing the engine failed: {err}") from err

        deadline = time.monotonic() + ENGINE_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            try:
                if _ping_over_ssh(client):
                    return version
            except Exception as err:
                last = str(err)
            time.sleep(0.15)
        tail = ssh.run(client, "tail -n 15 /run/dockyard/engine.log", check=False)  # type: ignore[arg-type]
        raise EngineError(
            f"the engine did not answer /_ping ({last}); its log ends: {tail.strip()}"
        )

    def _start_forwarder(self) -> None:
        self._spawn_forwarder()
        self._wait_forwarder()

    def _spawn_forwarder(self) -> None:
        """Start the forwarder daemon detached; ``_wait_forwarder`` checks it."""
        self.dirs.socket.unlink(missing_ok=True)
        log_file = self.dirs.forwarder_log.open("a")
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.Popen(
            [sys.executable, "-m", "desktop.machine.forwarder", str(self.dirs.root)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
        log_file.close()
        # Written here as well as by the forwarder: a start that fails before
        # the forwarder got that far must still find it to stop it.
        self.dirs.forwarder_pid.write_text(f"{proc.pid}\n")

    def _wait_forwarder(self) -> None:
        """Block until ``/_ping`` answers through the forwarder's endpoint.

        The endpoint is read from ``api.json`` on each try: the forwarder
        rewrites it once it listens. Raises ``ForwardError``.
        """
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if api_listener.ping(self.endpoint, timeout=2.0):
                return
            time.sleep(0.1)
        raise ForwardError(
            f"the forwarder did not serve {self.docker_host}; see {self.dirs.forwarder_log}"
        )

    # -- stop -------------------------------------------------------------

    def stop(self) -> None:
        """Power the VM off (cleanly if it answers) and stop the forwarder."""
        with self._locked():
            run = RunRecord.load(self.dirs.run)
            backend = self.backend
            if run is not None and run.state == "running":
                run.state = "stopping"
                run.save(self.dirs.run)
                self._log("stopping")
                asked = False
                if run.ssh_port:
                    try:
                        client = ssh.connect(
                            self.dirs.key, self.dirs.known_hosts, run.ssh_port, 5
                        )
                        ssh.run(client, "/sbin/dockyard-init shutdown", timeout=10)
                        client.close()
                        asked = True
                    except Exception as err:
                        self._log(f"clean shutdown over SSH failed: {err}")
                if not asked:
                    with contextlib.suppress(MachineError):
                        backend.shutdown(self.dirs)
                deadline = time.monotonic() + STOP_TIMEOUT
                while time.monotonic() < deadline:
                    if backend.state(self.dirs) == "stopped":
                        break
                    time.sleep(0.2)
                else:
                    self._log("the guest did not power off: forcing it")
            self._teardown()
            self._log("stopped")

    def _teardown(self) -> None:
        """Kill the VM and the forwarder; remove sockets and run files."""
        _stop_forwarder(self.dirs)
        with contextlib.suppress(MachineError):
            self.backend.kill(self.dirs)
        self.dirs.socket.unlink(missing_ok=True)
        self.dirs.run.unlink(missing_ok=True)
        self.dirs.ports.unlink(missing_ok=True)

    def restart(self, progress: Progress | None = None) -> None:
        self.stop()
        self.start(progress)

    def update(self, spec: MachineSpec) -> None:
        """Change cpus, memory, shares or grow the disk (next start); raises ``MachineError``."""
        spec.validate()
        record = self.record
        old = record.spec
        if spec.name != old.name:
            raise MachineError("a machine cannot be renamed")
        if spec.backend != old.backend:
            raise MachineError("a machine cannot change its backend")
        if spec.disk_gib < old.disk_gib:
            raise MachineError(
                f"the data disk can only grow ({old.disk_gib} GiB now, {spec.disk_gib} asked)"
            )
        if spec.disk_gib > old.disk_gib:
            if self.status().state is not MachineState.STOPPED:
                raise MachineError("stop the machine before growing its disk")
            grow_data_disk(self.dirs.data_disk, spec.disk_gib)
        record.spec = spec
        record.save(self.dirs.record)
        self._log(
            f"updated: {spec.cpus} CPUs, {spec.memory_mib} MiB, {spec.disk_gib} GiB"
        )

    def ssh_command(self) -> list[str]:
        """An ``ssh`` argv into the running guest; raises ``MachineError``."""
        run = RunRecord.load(self.dirs.run)
        if run is None or run.state != "running" or not run.ssh_port:
            raise MachineError(f"machine {self.name!r} is not running")
        return ssh.ssh_argv(
            self.dirs.key, self.dirs.known_hosts, self.dirs.host_alias, run.ssh_port
        )

    def inspect(self) -> dict[str, object]:
        record = self.record
        run = RunRecord.load(self.dirs.run)
        data: dict[str, object] = {
            "Name": self.name,
            "Spec": record.spec.to_dict(),
            "Status": self.status().to_dict(),
            "Image": {"Dir": record.image_dir},
            "Paths": {
                "Home": str(self.dirs.root),
                "Socket": str(self.dirs.socket),
                "DataDisk": str(self.dirs.data_disk),
                "Log": str(self.dirs.log),
                "Console": str(self.dirs.console),
            },
            "Context": self.context_name,
        }
        if run is not None:
            data["Run"] = run.__dict__
        with contextlib.suppress(OSError, ValueError):
            data["Ports"] = json.loads(self.dirs.ports.read_text())
        return data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _forwarder_pid(dirs: MachineDir) -> int | None:
    """The live forwarder's pid (checked against its command line), or None."""
    try:
        pid = int(dirs.forwarder_pid.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if b"desktop.machine.forwarder" in cmdline and str(dirs.root).encode() in cmdline:
        return pid
    return None


def _stop_forwarder(dirs: MachineDir) -> None:
    pid = _forwarder_pid(dirs)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _pid_alive(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    dirs.forwarder_pid.unlink(missing_ok=True)


def _http_ping(sock: object) -> bool:
    sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")  # type: ignore[attr-defined]
    data = b""
    while len(data) < 12:
        chunk = sock.recv(256)  # type: ignore[attr-defined]
        if not chunk:
            break
        data += chunk
    return data.startswith(b"HTTP/1.") and data[9:12] == b"200"


def _ping_over_ssh(client: object) -> bool:
    transport = client.get_transport()  # type: ignore[attr-defined]
    channel = transport.open_channel(
        "direct-tcpip", ("127.0.0.1", ENGINE_PORT), ("127.0.0.1", 0), timeout=5
    )
    channel.settimeout(5)
    try:
        return _http_ping(channel)
    finally:
        channel.close()
