"""The Packer template's structure (Packer itself is not installable here).

Packer is not packaged for Debian 12 and cannot be fetched on this machine,
so these tests check what Packer would read: valid HCL-in-JSON, every
variable used is declared, the build names a declared source, and the boot
disks it makes are the files the VirtualBox and Hyper-V backends attach.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from desktop.machine import backend_hyperv, backend_virtualbox

PACKER = Path(__file__).parents[2] / "packer"
GUEST = Path(__file__).parents[2] / "vmimage" / "guest"


def template() -> dict:  # type: ignore[type-arg]
    data: dict = json.loads((PACKER / "dockyard.pkr.json").read_text())  # type: ignore[type-arg]
    return data


def test_every_variable_used_is_declared() -> None:
    data = template()
    text = (PACKER / "dockyard.pkr.json").read_text()
    used = set(re.findall(r"\$\{var\.([a-z_]+)\}", text))
    assert used <= set(data["variable"]), used - set(data["variable"])
    for spec in data["variable"].values():
        assert spec["type"] in ("string", "number", "bool")
        assert "default" in spec


def test_build_uses_declared_sources_and_boots_the_built_kernel() -> None:
    data = template()
    declared = {
        f"source.{kind}.{name}"
        for kind, named in data["source"].items()
        for name in named
    }
    for build in data["build"]:
        assert set(build["sources"]) <= declared
    qemu = data["source"]["qemu"]["dockyard"]
    args = {a[0]: a[1] for a in qemu["qemuargs"] if len(a) == 2}
    assert args["-kernel"] == "${var.image_dir}/vmlinux"
    assert args["-initrd"] == "${var.image_dir}/initramfs.img"
    assert "dockyard.selftest" in args["-append"]
    assert qemu["communicator"] == "none"
    assert "dockyard.selftest" in (GUEST / "dockyard-init").read_text()


def test_outputs_are_the_disks_the_backends_attach() -> None:
    steps = " ".join(template()["build"][0]["post-processors"][0][0]["inline"])
    assert "dockyard-boot.vdi" in steps and "dockyard-boot.vhdx" in steps
    assert '"dockyard-boot.vdi"' in Path(backend_virtualbox.__file__).read_text()
    assert '"dockyard-boot.vhdx"' in Path(backend_hyperv.__file__).read_text()


def test_boot_disk_script_is_valid_bash_and_matches_the_initramfs() -> None:
    script = PACKER / "make-boot-disk.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "dockyard.root=/dev/sda2" in script.read_text()
    assert "dockyard.root=*" in (GUEST / "initramfs-init").read_text()
