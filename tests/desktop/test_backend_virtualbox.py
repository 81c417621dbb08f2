"""The VirtualBox backend's exact VBoxManage commands.

VirtualBox cannot run on this Linux test machine (no VirtualBox kernel
driver, and no nested virtualization), so these tests stop at the boundary:
a recording runner stands in for VBoxManage and the tests check each command
it would have run, in order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from desktop.machine.backend import VMConfig
from desktop.machine.backend_virtualbox import VirtualBoxBackend, parse_vm_state
from desktop.machine.errors import BackendError
from desktop.machine.files import MachineDir


class Recorder:
    def __init__(self, registered: bool = False, state: str = "poweroff") -> None:
        self.calls: list[list[str]] = []
        self.registered = registered
        self.state = state

    def __call__(self, argv: list[str]) -> str:
        self.calls.append(argv)
        if argv[1] == "showvminfo":
            if not self.registered:
                raise BackendError(
                    "VBoxManage showvminfo: Could not find a registered machine"
                )
            return f'name="x"\nVMState="{self.state}"\n'
        if argv[1] == "createvm":
            self.registered = True
        return ""


@pytest.fixture
def config(tmp_path: Path) -> VMConfig:
    dirs = MachineDir(tmp_path, "default")
    image = Path("/images")
    return VMConfig(
        dirs=dirs,
        cpus=2,
        memory_mib=2048,
        kernel=image / "vmlinux",
        initrd=image / "initramfs.img",
        rootfs=image / "rootfs.img",
        cmdline="console=ttyS0",
        ssh_port=40022,
        shares=["/home/alice"],
    )


def test_first_start_creates_configures_and_boots_headless(config: VMConfig) -> None:
    runner = Recorder()
    VirtualBoxBackend(runner).start(config)
    name = config.dirs.domain_name
    root = config.dirs.root
    calls = runner.calls
    assert calls[0] == ["VBoxManage", "showvminfo", name, "--machinereadable"]
    assert calls[1] == [
        "VBoxManage",
        "convertfromraw",
        str(root / "data.img"),
        str(root / "data.vdi"),
        "--format",
        "VDI",
    ]
    assert calls[2] == [
        "VBoxManage",
        "createvm",
        "--name",
        name,
        "--ostype",
        "Debian_64",
        "--basefolder",
        str(root),
        "--register",
    ]
    assert calls[3] == [
        "VBoxManage",
        "storagectl",
        name,
        "--name",
        "SATA",
        "--add",
        "sata",
        "--controller",
        "IntelAhci",
        "--portcount",
        "2",
        "--hostiocache",
        "on",
    ]
    assert calls[4] == [
        "VBoxManage",
        "storageattach",
        name,
        "--storagectl",
        "SATA",
        "--port",
        "0",
        "--device",
        "0",
        "--type",
        "hdd",
        "--medium",
        "/images/dockyard-boot.vdi",
        "--mtype",
        "immutable",
    ]
    assert calls[5] == [
        "VBoxManage",
        "storageattach",
        name,
        "--storagectl",
        "SATA",
        "--port",
        "1",
        "--device",
        "0",
        "--type",
        "hdd",
        "--medium",
        str(root / "data.vdi"),
        "--nonrotational",
        "on",
        "--discard",
        "on",
    ]
    modify = calls[6]
    assert modify[:3] == ["VBoxManage", "modifyvm", name]
    assert modify[modify.index("--cpus") + 1] == "2"
    assert modify[modify.index("--memory") + 1] == "2048"
    assert modify[modify.index("--acpi") + 1] == "on"
    assert modify[modify.index("--nic1") + 1] == "nat"
    assert modify[modify.index("--nictype1") + 1] == "virtio"
    assert calls[7] == ["VBoxManage", "modifyvm", name, "--natpf1", "delete", "ssh"]
    assert calls[8] == [
        "VBoxManage",
        "modifyvm",
        name,
        "--natpf1",
        "ssh,tcp,127.0.0.1,40022,,22",
    ]
    assert calls[9] == [
        "VBoxManage",
        "sharedfolder",
        "remove",
        name,
        "--name",
        "dyshare0",
    ]
    assert calls[10] == [
        "VBoxManage",
        "sharedfolder",
        "add",
        name,
        "--name",
        "dyshare0",
        "--hostpath",
        "/home/alice",
    ]
    assert calls[11] == ["VBoxManage", "startvm", name, "--type", "headless"]
    assert len(calls) == 12


def test_later_start_skips_creation(config: VMConfig) -> None:
    runner = Recorder(registered=True)
    VirtualBoxBackend(runner).start(config)
    verbs = [c[1] for c in runner.calls]
    assert "createvm" not in verbs and "convertfromraw" not in verbs
    assert verbs[-1] == "startvm"


def test_stop_kill_remove_and_udp_ports(config: VMConfig) -> None:
    runner = Recorder(registered=True, state="running")
    backend = VirtualBoxBackend(runner)
    dirs = config.dirs
    name = dirs.domain_name
    assert backend.state(dirs) == "running"
    backend.shutdown(dirs)
    backend.add_port(dirs, "udp", "127.0.0.1", 5353)
    backend.remove_port(dirs, "udp", "127.0.0.1", 5353)
    backend.kill(dirs)
    backend.remove(dirs)
    cmds = [c for c in runner.calls if c[1] != "showvminfo"]
    assert cmds == [
        ["VBoxManage", "controlvm", name, "acpipowerbutton"],
        [
            "VBoxManage",
            "controlvm",
            name,
            "natpf1",
            "udp-5353,udp,127.0.0.1,5353,,5353",
        ],
        ["VBoxManage", "controlvm", name, "natpf1", "delete", "udp-5353"],
        ["VBoxManage", "controlvm", name, "poweroff"],
        ["VBoxManage", "controlvm", name, "poweroff"],
        ["VBoxManage", "unregistervm", name, "--delete"],
    ]


def test_vm_states() -> None:
    assert parse_vm_state('VMState="running"\n') == "running"
    assert parse_vm_state('VMState="poweroff"\n') == "stopped"
    assert parse_vm_state('VMState="aborted"\n') == "stopped"
    assert parse_vm_state("") == "stopped"


def test_unregistered_vm_is_stopped(config: VMConfig) -> None:
    assert VirtualBoxBackend(Recorder()).state(config.dirs) == "stopped"
