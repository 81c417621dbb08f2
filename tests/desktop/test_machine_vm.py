"""A real machine under QEMU (TCG) through libvirt, driven with the host's docker CLI.

One image build (cached in /var/cache/dockyard/vmimage) and one machine for
the whole module: every boot costs ~10 s of emulation here. The tests run in
file order: what each leaves (a loaded image, a stopped container) is what
the next one checks survives a restart.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

import vmimage
from desktop import cli
from desktop.machine import MachineManager, MachineSpec, MachineState, StageEvent, ssh
from desktop.machine.backend_qemu import QemuBackend, ensure_libvirtd
from desktop.machine.files import RunRecord
from tests.support.images import BUSYBOX_REF, busybox_archive

pytestmark = pytest.mark.vm

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"


class VM:
    def __init__(self, home: Path, share: Path, docker_config: Path) -> None:
        self.home = home
        self.share = share
        self.docker_config = docker_config
        self.manager = MachineManager(home)
        self.events: list[StageEvent] = []

    @property
    def machine(self):  # type: ignore[no-untyped-def]
        return self.manager.get("default")

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = dict(
            os.environ,
            DOCKER_HOST=self.machine.docker_host,
            DOCKER_CONFIG=str(self.docker_config),
        )
        proc = subprocess.run(
            [DOCKER, *args], capture_output=True, text=True, env=env, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VM]:
    if os.geteuid() != 0:
        pytest.skip(
            "needs root: builds the guest image with mmdebstrap and runs libvirtd"
        )
    if shutil.which("libvirtd") is None or shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs QEMU and libvirt (scripts/install.sh)")
    ensure_libvirtd()
    vmimage.build(vmimage.DEFAULT_CACHE)
    # Short paths: the forwarded socket must fit in sun_path.
    home = Path(tempfile.mkdtemp(prefix="dyvm-", dir="/var/tmp"))
    share = Path(tempfile.mkdtemp(prefix="dyshare-", dir="/var/tmp"))
    docker_config = home / "docker-config"
    old_config = os.environ.get("DOCKER_CONFIG")
    os.environ["DOCKER_CONFIG"] = str(docker_config)
    env = VM(home, share, docker_config)
    try:
        env.manager.create(
            MachineSpec(
                name="default", cpus=2, memory_mib=1024, disk_gib=8, shares=[str(share)]
            )
        )
        env.machine.start(progress=env.events.append)
        yield env
    finally:
        with_machines = (home / "machines").is_dir()
        if with_machines:
            for status in env.manager.list():
                env.manager.remove(status.name, force=True)
        if old_config is None:
            os.environ.pop("DOCKER_CONFIG", None)
        else:
            os.environ["DOCKER_CONFIG"] = old_config
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(share, ignore_errors=True)


def _engine_runs_containers(vm: VM) -> bool:
    proc = vm.docker("run", "--rm", BUSYBOX_REF, "true", check=False)
    if proc.returncode != 0:
        print(f"the engine cannot run containers yet: {proc.stderr.strip()}")
    return proc.returncode == 0


def test_start_reports_every_stage(vm: VM) -> None:
    done = [e.stage for e in vm.events if e.done]
    assert done == ["image", "accelerator", "boot", "ssh", "engine", "forward", "ready"]
    assert not any(e.failed for e in vm.events)
    status = vm.machine.status()
    assert status.state is MachineState.RUNNING
    assert status.docker_host == vm.machine.docker_host
    meta = vm.docker_config / "contexts" / "meta"
    contexts = [json.loads(p.read_text()) for p in meta.glob("*/meta.json")]
    assert contexts == [
        {
            "Name": "dockyard",
            "Metadata": {"Description": "Dockyard machine default"},
            "Endpoints": {
                "docker": {"Host": vm.machine.docker_host, "SkipTLSVerify": False}
            },
        }
    ]


def test_docker_version_through_the_forwarded_socket(
    vm: VM, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--home", str(vm.home), "machine", "env"]) == 0
    out = capsys.readouterr().out
    assert f"export DOCKER_HOST={vm.machine.docker_host}" in out
    version = json.loads(vm.docker("version", "--format", "{{json .}}").stdout)
    assert version["Server"]["ApiVersion"] == "1.47"
    assert version["Server"]["Os"] == "linux"


def _guest(vm: VM, command: str) -> str:
    out = subprocess.run(
        [*vm.machine.ssh_command(), command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_ssh_runs_in_the_guest_with_the_pinned_key(vm: VM) -> None:
    assert "StrictHostKeyChecking=yes" in vm.machine.ssh_command()
    out = _guest(vm, "cat /proc/1/cmdline; echo; echo $HOME; command -v python3")
    init, home, python = out.splitlines()
    assert "dockyard-init" in init
    # Not /root: a host user who is root shares /root at its own path, and
    # its dot files would then set up every SSH command's shell.
    assert home == vmimage.GUEST_ROOT_HOME
    assert python == "/usr/bin/python3"


def test_ssh_refuses_a_guest_with_another_host_key(vm: VM, tmp_path: Path) -> None:
    machine = vm.machine
    run = RunRecord.load(machine.dirs.run)
    assert run is not None
    other = ssh.generate_keypair(tmp_path / "other_key", "impostor").split()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{machine.dirs.host_alias} {other[0]} {other[1]}\n")
    with pytest.raises(paramiko.SSHException):
        ssh.connect(machine.dirs.key, wrong, run.ssh_port, timeout=20)
    ssh.connect(machine.dirs.key, machine.dirs.known_hosts, run.ssh_port, 20).close()


def test_run_a_container(vm: VM, tmp_path: Path) -> None:
    tar = busybox_archive(tmp_path / "busybox.tar")
    vm.docker("load", "-i", str(tar))
    if not _engine_runs_containers(vm):
        pytest.skip("the engine cannot run containers yet")
    out = vm.docker(
        "run", "--rm", BUSYBOX_REF, "sh", "-c", "echo hello from $(uname -n)"
    )
    assert out.stdout.startswith("hello from ")


def test_published_port_on_host_loopback(vm: VM) -> None:
    if not _engine_runs_containers(vm):
        pytest.skip("the engine cannot run containers yet")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    vm.docker(
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        f"127.0.0.1:{port}:80",
        BUSYBOX_REF,
        "sh",
        "-c",
        "mkdir -p /www && echo served-by-dockyard > /www/index.html && httpd -f -p 80 -h /www",
    )
    body = ""
    for _ in range(60):
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/index.html", timeout=5
            ) as r:
                body = r.read().decode()
                break
        except OSError:
            time.sleep(0.5)
    assert body == "served-by-dockyard\n"
    ports = json.loads(vm.machine.dirs.ports.read_text())
    assert {"Proto": "tcp", "HostIp": "127.0.0.1", "HostPort": port} == {
        k: ports[0][k] for k in ("Proto", "HostIp", "HostPort")
    }

    vm.docker("stop", "-t", "1", "web")
    closed = False
    for _ in range(50):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                closed = True
                break
        time.sleep(0.2)
    assert closed, "the host listener stayed open after the container stopped"


def test_published_port_on_all_addresses_goes_through_nat(vm: VM) -> None:
    """``-p PORT:80`` binds 0.0.0.0 like Docker; tested over loopback only."""
    if not _engine_runs_containers(vm):
        pytest.skip("the engine cannot run containers yet")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    vm.docker(
        "run", "-d", "--name", "web-all", "-p", f"{port}:80", BUSYBOX_REF,
        "sh", "-c", "mkdir -p /www && echo via-nat > /www/index.html && httpd -f -p 80 -h /www",
    )  # fmt: skip
    try:
        body = ""
        for _ in range(60):
            try:
                url = f"http://127.0.0.1:{port}/index.html"
                with urllib.request.urlopen(url, timeout=5) as r:
                    body = r.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert body == "via-nat\n"
        ports = json.loads(vm.machine.dirs.ports.read_text())
        assert any(p["HostIp"] == "0.0.0.0" and p["HostPort"] == port for p in ports)
    finally:
        vm.docker("rm", "-f", "web-all", check=False)
    for _ in range(50):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                break
        time.sleep(0.2)
    else:
        raise AssertionError("the NAT forward stayed open after the container went")


def test_taken_host_port_is_reported(vm: VM) -> None:
    if not _engine_runs_containers(vm):
        pytest.skip("the engine cannot run containers yet")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        vm.docker(
            "run",
            "-d",
            "--name",
            "clash",
            "-p",
            f"127.0.0.1:{port}:80",
            BUSYBOX_REF,
            "sleep",
            "60",
        )
        try:
            error = None
            for _ in range(50):
                try:
                    entries = json.loads(vm.machine.dirs.ports.read_text())
                except (OSError, ValueError):
                    entries = []
                error = next(
                    (
                        e["Error"]
                        for e in entries
                        if e["HostPort"] == port and e["Error"]
                    ),
                    None,
                )
                if error:
                    break
                time.sleep(0.2)
            assert error is not None and "already taken" in error
        finally:
            vm.docker("rm", "-f", "clash", check=False)


def test_shared_folder_same_path_both_ways(vm: VM) -> None:
    if not _engine_runs_containers(vm):
        pytest.skip("the engine cannot run containers yet")
    (vm.share / "from-host.txt").write_text("written on the host\n")
    out = vm.docker(
        "run",
        "--rm",
        "-v",
        f"{vm.share}:{vm.share}",
        BUSYBOX_REF,
        "sh",
        "-c",
        f"cat {vm.share}/from-host.txt && echo written in the container > {vm.share}/from-container.txt",
    )
    assert out.stdout == "written on the host\n"
    assert (vm.share / "from-container.txt").read_text() == "written in the container\n"
    # A change made on the host afterwards is seen inside at once (no cache).
    (vm.share / "from-host.txt").write_text("changed on the host\n")
    out = vm.docker(
        "run",
        "--rm",
        "-v",
        f"{vm.share}:/src",
        BUSYBOX_REF,
        "cat",
        "/src/from-host.txt",
    )
    assert out.stdout == "changed on the host\n"


def test_start_revives_a_dead_forwarder(vm: VM) -> None:
    machine = vm.machine
    pid = int(machine.dirs.forwarder_pid.read_text())
    os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not Path(f"/proc/{pid}").exists() or "zombie" in _proc_state(pid):
            break
        time.sleep(0.1)
    status = machine.status()
    assert status.state is MachineState.RUNNING
    assert status.error is not None and "forwarder is not running" in status.error
    machine.start()
    assert machine.status().error is None
    assert vm.docker("version", "--format", "{{.Server.Os}}").stdout.strip() == "linux"


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def test_stop_and_start_keep_images(vm: VM) -> None:
    machine = vm.machine
    machine.stop()
    assert machine.status().state is MachineState.STOPPED
    assert not machine.dirs.socket.exists()
    assert QemuBackend().state(machine.dirs) == "stopped"
    machine.start()
    images = vm.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert BUSYBOX_REF in images


def test_engine_upgrade_replaces_the_engine_started_at_boot(vm: VM) -> None:
    """As after a Dockyard upgrade: the guest boots its older engine first."""
    from desktop.machine import bundle

    machine = vm.machine
    _guest(vm, "echo 0.0.1+older > /mnt/data/engine/current/VERSION")
    installs = machine.log_path.read_text().count("[engine] installing engine")
    machine.restart()
    assert machine.log_path.read_text().count("[engine] installing engine") == (
        installs + 1
    )
    version = bundle.engine_version()
    init_log = _guest(vm, "cat /run/dockyard-init.log")
    assert f"engine {version} installed" in init_log
    # The boot's engine was stopped and the new one started once, at once.
    assert init_log.count("started engine") == 2
    pid = _guest(vm, "cat /run/dockyard/engine.pid").strip()
    assert "engine.main" in _guest(vm, f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    assert _guest(vm, "cat /mnt/data/engine/current/VERSION").strip() == version
    assert vm.docker("version", "--format", "{{.Server.Os}}").stdout.strip() == "linux"


def test_crashed_vm_is_reported_and_starts_again(vm: VM) -> None:
    machine = vm.machine
    QemuBackend().kill(machine.dirs)  # the VM dies behind the machine's back
    assert machine.status().state is MachineState.CRASHED
    machine.start()
    assert machine.status().state is MachineState.RUNNING
    assert vm.docker("version", "--format", "{{.Server.Os}}").stdout.strip() == "linux"


def test_rm_leaves_nothing_behind(vm: VM) -> None:
    machine = vm.machine
    dirs = machine.dirs
    domain = dirs.domain_name
    assert cli.main(["--home", str(vm.home), "machine", "rm", "-f"]) == 0
    assert not dirs.root.exists()
    assert not dirs.socket.exists()
    assert QemuBackend().state(dirs) == "stopped"
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(dirs.root) not in procs
    assert domain not in procs
    assert not list((vm.docker_config / "contexts" / "meta").glob("*/meta.json"))
