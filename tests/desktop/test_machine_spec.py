"""Machine specs, records and the pure parts of the qemu backend (no VM)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from desktop.machine import MachineError, MachineSpec, MachineState, MachineStatus
from desktop.machine.backend import VMConfig
from desktop.machine.backend_qemu import domain_xml
from desktop.machine.files import MachineDir


def test_defaults_share_the_home_folder() -> None:
    spec = MachineSpec()
    assert (spec.name, spec.cpus, spec.memory_mib, spec.disk_gib, spec.backend) == (
        "default",
        2,
        2048,
        20,
        "qemu",
    )
    assert spec.shares == [str(Path.home())]
    spec.validate()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Bad Name"}, "invalid machine name"),
        ({"cpus": 0}, "--cpus must be between"),
        ({"memory_mib": 12}, "--memory must be between"),
        ({"disk_gib": 0}, "--disk must be between"),
        ({"backend": "xen"}, "unknown backend"),
        ({"shares": ["relative/path"]}, "not an absolute path"),
        ({"shares": ["/does/not/exist"]}, "not an existing folder"),
        ({"shares": ["/"]}, "would hide a system folder"),
        ({"shares": ["/proc"]}, "would hide a system folder"),
    ],
)
def test_bad_specs_say_what_is_wrong(change: dict[str, object], message: str) -> None:
    spec = MachineSpec(**change)  # type: ignore[arg-type]
    with pytest.raises(MachineError, match=message):
        spec.validate()


def test_spec_round_trips_through_a_dict() -> None:
    spec = MachineSpec(name="dev", cpus=4, shares=["/tmp"])
    assert MachineSpec.from_dict(spec.to_dict()) == spec


def test_status_serialises_for_inspect(tmp_path: Path) -> None:
    status = MachineStatus(
        name="default",
        state=MachineState.CRASHED,
        backend="qemu",
        cpus=2,
        memory_mib=2048,
        disk_gib=20,
        disk_used_bytes=0,
        uptime_seconds=None,
        docker_host=None,
        error="x",
        log_path=tmp_path / "machine.log",
    )
    data = status.to_dict()
    assert data["state"] == "crashed" and data["log_path"] == str(
        tmp_path / "machine.log"
    )
    assert str(MachineState.RUNNING) == "running"


def test_long_homes_get_a_short_socket_path() -> None:
    dirs = MachineDir(Path("/" + "x" * 120), "default")
    assert len(str(dirs.socket)) < 100
    assert dirs.socket.name.startswith("dockyard-")


def test_domain_xml_boots_the_kernel_with_disks_shares_and_ssh(tmp_path: Path) -> None:
    dirs = MachineDir(tmp_path, "default")
    config = VMConfig(
        dirs=dirs,
        cpus=2,
        memory_mib=1024,
        kernel=Path("/img/vmlinux"),
        initrd=Path("/img/initramfs.img"),
        rootfs=Path("/img/rootfs.img"),
        cmdline="console=ttyS0 quiet",
        ssh_port=40022,
        shares=["/home/alice", "/srv/o'neil & co"],
    )
    root = ET.fromstring(domain_xml(config))
    assert root.get("type") == "qemu"
    assert root.findtext("name") == dirs.domain_name
    assert root.findtext("os/kernel") == "/img/vmlinux"
    assert root.findtext("os/initrd") == "/img/initramfs.img"
    assert root.findtext("os/cmdline") == "console=ttyS0 quiet"
    assert root.find("features/acpi") is not None
    disks = root.findall("devices/disk")
    assert [d.findall("source")[0].get("file") for d in disks] == [
        "/img/rootfs.img",
        str(dirs.data_disk),
    ]
    assert disks[0].find("readonly") is not None
    assert disks[1].find("driver").get("discard") == "unmap"  # type: ignore[union-attr]
    shares = root.findall("devices/filesystem")
    assert [
        (f.findall("source")[0].get("dir"), f.findall("target")[0].get("dir"))
        for f in shares
    ] == [
        ("/home/alice", "dyshare0"),
        ("/srv/o'neil & co", "dyshare1"),
    ]
    args = [
        a.get("value")
        for a in root.iter("{http://libvirt.org/schemas/domain/qemu/1.0}arg")
    ]
    assert "user,id=dynet,hostfwd=tcp:127.0.0.1:40022-:22" in args
    config.accelerator = "kvm"
    assert ET.fromstring(domain_xml(config)).get("type") == "kvm"
