"""VirtualBox through ``VBoxManage``: the same guest on macOS and Windows hosts.

VirtualBox cannot boot a kernel directly, so it boots ``dockyard-boot.vdi``,
the disk image the Packer template ``packer/dockyard.pkr.hcl`` makes from the
same kernel, initramfs and root (extlinux in front). The commands are built
by pure functions, so tests check them exactly without VirtualBox::

    createvm_commands("dockyard-default", base, cpus=2, memory_mib=2048, ...)
    -> [["VBoxManage", "createvm", "--name", "dockyard-default", ...], ...]

Shares are VirtualBox shared folders that the guest mounts with the kernel's
own ``vboxsf`` at the same path; published UDP ports are NAT rules
(``controlvm natpf1``) added while the VM runs.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from desktop.machine.backend import VMConfig
from desktop.machine.errors import BackendError
from desktop.machine.files import MachineDir

log = logging.getLogger(__name__)

Runner = Callable[[list[str]], str]
VBOX = "VBoxManage"
CONTROLLER = "SATA"


def run_vboxmanage(argv: list[str]) -> str:
    """Run one VBoxManage command; raises ``BackendError`` with its message."""
    if shutil.which(argv[0]) is None:
        raise BackendError("VBoxManage was not found: install VirtualBox 7")
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BackendError(f"{' '.join(argv[:3])}: {proc.stderr.strip()}")
    return proc.stdout


def boot_disk(config: VMConfig) -> Path:
    return config.rootfs.with_name("dockyard-boot.vdi")


def data_disk_vdi(dirs: MachineDir) -> Path:
    return dirs.data_disk.with_suffix(".vdi")


def createvm_commands(name: str, config: VMConfig) -> list[list[str]]:
    """Register the VM and attach its disks (run once, at first start)."""
    dirs = config.dirs
    return [
        [
            VBOX,
            "createvm",
            "--name",
            name,
            "--ostype",
            "Debian_64",
            "--basefolder",
            str(dirs.root),
            "--register",
        ],
        [
            VBOX,
            "storagectl",
            name,
            "--name",
            CONTROLLER,
            "--add",
            "sata",
            "--controller",
            "IntelAhci",
            "--portcount",
            "2",
            "--hostiocache",
            "on",
        ],
        [
            VBOX,
            "storageattach",
            name,
            "--storagectl",
            CONTROLLER,
            "--port",
            "0",
            "--device",
            "0",
            "--type",
            "hdd",
            "--medium",
            str(boot_disk(config)),
            "--mtype",
            "immutable",
        ],
        [
            VBOX,
            "storageattach",
            name,
            "--storagectl",
            CONTROLLER,
            "--port",
            "1",
            "--device",
            "0",
            "--type",
            "hdd",
            "--medium",
            str(data_disk_vdi(dirs)),
            "--nonrotational",
            "on",
            "--discard",
            "on",
        ],
    ]


def modifyvm_commands(name: str, config: VMConfig) -> list[list[str]]:
    """Apply the spec and this run's SSH port (the VM must be off)."""
    commands = [
        [
            VBOX,
            "modifyvm",
            name,
            "--cpus",
            str(config.cpus),
            "--memory",
            str(config.memory_mib),
            "--firmware",
            "efi",
            "--acpi",
            "on",
            "--ioapic",
            "on",
            "--rtcuseutc",
            "on",
            "--paravirtprovider",
            "kvm",
            "--audio-enabled",
            "off",
            "--usb",
            "off",
            "--boot1",
            "disk",
            "--boot2",
            "none",
            "--boot3",
            "none",
            "--boot4",
            "none",
            "--nic1",
            "nat",
            "--nictype1",
            "virtio",
            "--uart1",
            "0x3F8",
            "4",
            "--uart-mode1",
            "file",
            str(config.dirs.console),
        ],
        [VBOX, "modifyvm", name, "--natpf1", "delete", "ssh"],
        [
            VBOX,
            "modifyvm",
            name,
            "--natpf1",
            f"ssh,tcp,127.0.0.1,{config.ssh_port},,22",
        ],
    ]
    for index, share in enumerate(config.shares):
        tag = config.share_tag(index)
        commands.append([VBOX, "sharedfolder", "remove", name, "--name", tag])
        commands.append(
            [VBOX, "sharedfolder", "add", name, "--name", tag, "--hostpath", share]
        )
    return commands


def convert_data_disk_command(dirs: MachineDir) -> list[str]:
    return [
        VBOX,
        "convertfromraw",
        str(dirs.data_disk),
        str(data_disk_vdi(dirs)),
        "--format",
        "VDI",
    ]


def start_command(name: str) -> list[str]:
    return [VBOX, "startvm", name, "--type", "headless"]


def acpi_command(name: str) -> list[str]:
    return [VBOX, "controlvm", name, "acpipowerbutton"]


def poweroff_command(name: str) -> list[str]:
    return [VBOX, "controlvm", name, "poweroff"]


def unregister_command(name: str) -> list[str]:
    return [VBOX, "unregistervm", name, "--delete"]


def natpf_add_command(name: str, proto: str, host_ip: str, port: int) -> list[str]:
    return [
        VBOX,
        "controlvm",
        name,
        "natpf1",
        f"{proto}-{port},{proto},{host_ip},{port},,{port}",
    ]


def natpf_delete_command(name: str, proto: str, port: int) -> list[str]:
    return [VBOX, "controlvm", name, "natpf1", "delete", f"{proto}-{port}"]


def parse_vm_state(machinereadable: str) -> str:
    """``running`` or ``stopped`` from ``showvminfo --machinereadable``."""
    for line in machinereadable.splitlines():
        if line.startswith("VMState="):
            value = line.split("=", 1)[1].strip().strip('"')
            return (
                "running"
                if value in ("running", "starting", "paused", "stopping")
                else "stopped"
            )
    return "stopped"


class VirtualBoxBackend:
    name = "virtualbox"

    def __init__(self, runner: Runner = run_vboxmanage) -> None:
        self.runner = runner

    def accelerators(self) -> list[str]:
        # VirtualBox picks VT-x/AMD-V (or Hyper-V's NEM) itself.
        return []

    def probe(self, accelerator: str, config: VMConfig, timeout: float) -> bool:
        return False

    def _registered(self, name: str) -> bool:
        try:
            self.runner([VBOX, "showvminfo", name, "--machinereadable"])
        except BackendError:
            return False
        return True

    def start(self, config: VMConfig) -> None:
        name = config.dirs.domain_name
        if not self._registered(name):
            if not data_disk_vdi(config.dirs).exists():
                self.runner(convert_data_disk_command(config.dirs))
            for argv in createvm_commands(name, config):
                self.runner(argv)
        for argv in modifyvm_commands(name, config):
            try:
                self.runner(argv)
            except BackendError as err:
                # Deleting a rule or folder that is not there is fine.
                if "delete" not in argv and "remove" not in argv:
                    raise
                log.debug("%s", err)
        self.runner(start_command(name))

    def state(self, dirs: MachineDir) -> str:
        try:
            out = self.runner(
                [VBOX, "showvminfo", dirs.domain_name, "--machinereadable"]
            )
        except BackendError:
            return "stopped"
        return parse_vm_state(out)

    def shutdown(self, dirs: MachineDir) -> None:
        self.runner(acpi_command(dirs.domain_name))

    def kill(self, dirs: MachineDir) -> None:
        if self.state(dirs) == "running":
            self.runner(poweroff_command(dirs.domain_name))

    def remove(self, dirs: MachineDir) -> None:
        if self._registered(dirs.domain_name):
            self.kill(dirs)
            self.runner(unregister_command(dirs.domain_name))

    def add_port(self, dirs: MachineDir, proto: str, host_ip: str, port: int) -> None:
        self.runner(natpf_add_command(dirs.domain_name, proto, host_ip, port))

    def remove_port(
        self, dirs: MachineDir, proto: str, host_ip: str, port: int
    ) -> None:
        self.runner(natpf_delete_command(dirs.domain_name, proto, port))


def create_backend() -> VirtualBoxBackend:
    return VirtualBoxBackend()


def guest_share_mount(tag: str, path: str) -> str:
    """The guest command that mounts a VirtualBox shared folder at ``path``."""
    return f"mkdir -p {path} && mount -t vboxsf -o uid=0,gid=0 {tag} {path}"
