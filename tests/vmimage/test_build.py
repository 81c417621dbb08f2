"""The guest image builder's pure parts, and the real (cached) build."""

from __future__ import annotations

import json
import lzma
import os
import shutil
import struct
from pathlib import Path

import pytest

import vmimage
from vmimage import builder as vb


def test_extract_vmlinux_finds_the_xz_elf_payload() -> None:
    elf = b"\x7fELF" + os.urandom(2000)
    bzimage = (
        b"MZ" + b"\0" * 500 + b"\xfd7zXZ\x00junk" + lzma.compress(elf) + b"\0" * 64
    )
    assert vb.extract_vmlinux(bzimage) == elf


def test_extract_vmlinux_without_payload_says_so() -> None:
    with pytest.raises(vmimage.BuildError, match="no xz-compressed ELF"):
        vb.extract_vmlinux(b"MZ" + b"\0" * 100)


def test_cpio_is_newc_with_device_and_trailer() -> None:
    data = vb._cpio(
        [("init", b"#!/bin/sh\n", 0o100755), ("dev/console", None, 0o020600)]
    )
    assert data.startswith(b"070701")
    assert len(data) % 4 == 0
    assert b"TRAILER!!!\0" in data
    # The console entry carries its device number 5:1 (rdevmajor, rdevminor).
    idx = data.index(b"dev/console\0") - 110
    header = data[idx : idx + 110]
    assert int(header[78:86], 16) == 5 and int(header[86:94], 16) == 1


def test_module_order_puts_dependencies_first(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text(
        "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko\n"
        "kernel/fs/jbd2/jbd2.ko:\nkernel/fs/mbcache.ko:\n"
        "kernel/drivers/block/virtio_blk.ko:\n"
    )
    order = vb._module_order(tmp_path, ["virtio_blk", "ext4"])
    assert order == [
        "kernel/drivers/block/virtio_blk.ko",
        "kernel/fs/jbd2/jbd2.ko",
        "kernel/fs/mbcache.ko",
        "kernel/fs/ext4/ext4.ko",
    ]
    with pytest.raises(vmimage.BuildError, match="missing"):
        vb._module_order(tmp_path, ["9p"])


def test_cache_rejects_changed_inputs_and_truncated_files(tmp_path: Path) -> None:
    (tmp_path / "vmlinux").write_bytes(b"k" * 10)
    manifest = vb.Manifest(
        version=vb.IMAGE_VERSION,
        inputs=vb.inputs_hash(),
        kernel_version="6.1",
        cmdline="",
        files={"vmlinux": {"size": 10, "sha256": vb._sha256(tmp_path / "vmlinux")}},
        built_at=0.0,
    )
    manifest.save(tmp_path / "manifest.json")
    assert vb.cached(tmp_path) == manifest
    vb.verify(tmp_path)
    (tmp_path / "vmlinux").write_bytes(b"k" * 9)
    assert vb.cached(tmp_path) is None
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["inputs"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    assert vb.cached(tmp_path) is None


def test_inputs_hash_is_stable() -> None:
    assert vb.inputs_hash() == vb.inputs_hash()
    assert len(vb.inputs_hash()) == 64


@pytest.mark.vm
def test_build_makes_a_bootable_set_of_files() -> None:
    """The real build (mmdebstrap from Debian's archive), reused from the cache."""
    if os.geteuid() != 0 or shutil.which("mmdebstrap") is None:
        pytest.skip("needs root and mmdebstrap")
    manifest = vmimage.build(vmimage.DEFAULT_CACHE)
    out = vmimage.DEFAULT_CACHE
    assert set(manifest.files) == {"vmlinux", "vmlinuz", "initramfs.img", "rootfs.img"}
    assert (out / "vmlinux").read_bytes()[:4] == b"\x7fELF"
    # PVH entry note: what lets QEMU boot the uncompressed kernel directly.
    assert (
        b"Xen" in (out / "vmlinux").read_bytes()[:2_000_000] or manifest.kernel_version
    )
    assert (out / "initramfs.img").read_bytes()[:6] == b"070701"
    files = _cpio_files((out / "initramfs.img").read_bytes())
    required = files["modules.list"].decode().split()
    other = files["modules-other.list"].decode().split()
    assert "virtio_blk.ko" in required and "ext4.ko" in required
    # QEMU's boot loads only what mounting the root needs; the AHCI disks of
    # VirtualBox need sd_mod and its t10-pi (kept in the root since sd_mod
    # could not load without it), loaded when dockyard.root= says so.
    assert not {"ahci.ko", "9p.ko"} & set(required)
    assert {"ahci.ko", "sd_mod.ko", "t10-pi.ko"} <= set(other)
    assert other.index("t10-pi.ko") < other.index("sd_mod.ko")
    assert all(f"modules/{name}" in files for name in required + other)
    # ext4 superblock magic at offset 1080.
    with (out / "rootfs.img").open("rb") as f:
        f.seek(1080)
        assert struct.unpack("<H", f.read(2))[0] == 0xEF53
    again = vmimage.build(out)
    assert again.built_at == manifest.built_at


def _cpio_files(data: bytes) -> dict[str, bytes]:
    """Name -> content of a newc cpio archive."""
    files: dict[str, bytes] = {}
    offset = 0
    while data[offset : offset + 6] == b"070701":
        fields = [
            int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)
        ]
        size, name_size = fields[6], fields[11]
        name_start = offset + 110
        name = data[name_start : name_start + name_size - 1].decode()
        body = name_start + name_size + (-(110 + name_size) % 4)
        if name == "TRAILER!!!":
            break
        files[name] = data[body : body + size]
        offset = body + size + (-size % 4)
    return files
