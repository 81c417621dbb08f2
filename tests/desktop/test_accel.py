"""Accelerator probes: the QEMU boot probe for real, other platforms at their boundary.

The shared boot probe and the Linux (KVM) probe run real QEMU on the
machine's kernel. macOS (HVF) and Windows (WHPX) cannot run here: their
tests give the probes a recording runner and check the exact commands and
how each answer is read.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from desktop.machine import accel, accel_linux, accel_macos, accel_windows

KERNEL = Path("/var/cache/dockyard/vmimage/vmlinux")


def need_qemu_and_kernel() -> None:
    if shutil.which("qemu-system-x86_64") is None or not KERNEL.exists():
        pytest.skip("needs QEMU and the built guest kernel (python -m vmimage build)")


class Recorder:
    """A ``run``/``boot`` stand-in that records argv and answers as told."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.calls: list[tuple[list[str], float]] = []

    def run(self, argv: list[str], timeout: float) -> tuple[int, str]:
        self.calls.append((argv, timeout))
        assert isinstance(self.answer, tuple)
        return self.answer

    def boot(self, argv: list[str], timeout: float) -> bool:
        self.calls.append((argv, timeout))
        return bool(self.answer)


# -- the real boot probe -------------------------------------------------------


def test_tcg_boots_the_kernel_to_its_panic() -> None:
    need_qemu_and_kernel()
    argv = accel.probe_argv("qemu-system-x86_64", "tcg", KERNEL)
    # A bound, not a measurement: TCG reaches the panic in a few seconds.
    assert accel.boot_probe(argv, timeout=120)


def test_a_qemu_that_exits_or_is_missing_is_no_accelerator(tmp_path: Path) -> None:
    need_qemu_and_kernel()
    # No such accelerator: QEMU exits at once, and the probe with it.
    argv = accel.probe_argv("qemu-system-x86_64", "nonesuch", KERNEL)
    assert not accel.boot_probe(argv, timeout=120)
    assert not accel.boot_probe([str(tmp_path / "no-qemu"), "-accel", "x"], 5)


def test_kvm_probe_agrees_with_the_qemu_backend() -> None:
    """The Linux module gives the answer backend_qemu's own probe gives."""
    need_qemu_and_kernel()
    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm")
    from desktop.machine.backend import VMConfig
    from desktop.machine.backend_qemu import QemuBackend
    from desktop.machine.files import MachineDir

    assert accel_linux.candidates() == ["kvm"]
    config = VMConfig(
        dirs=MachineDir(Path("/nonexistent"), "probe"),
        cpus=1,
        memory_mib=256,
        kernel=KERNEL,
        initrd=KERNEL,
        rootfs=KERNEL,
        cmdline="",
        ssh_port=0,
    )
    theirs = QemuBackend(uri="qemu:///none").probe("kvm", config, timeout=6.0)
    assert accel.probe("kvm", KERNEL, 6.0, platform="linux") == theirs


def test_linux_probe_runs_the_same_command_as_the_backend() -> None:
    boot = Recorder(True)
    assert accel.probe("kvm", Path("/k/vmlinux"), 6.0, platform="linux", boot=boot.boot)
    argv, timeout = boot.calls[0]
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "kvm"]
    assert argv[-4:] == [
        "-kernel",
        "/k/vmlinux",
        "-append",
        "console=ttyS0 panic=-1 loglevel=4",
    ]
    assert timeout == 6.0


# -- macOS (boundary) ----------------------------------------------------------


def test_macos_hvf_needs_hv_support_then_a_boot() -> None:
    yes = Recorder((0, "1\n"))
    assert accel_macos.candidates(yes.run) == ["hvf"]
    assert yes.calls[0][0] == ["sysctl", "-n", "kern.hv_support"]
    assert accel_macos.candidates(Recorder((0, "0\n")).run) == []
    assert accel_macos.candidates(Recorder((1, "unknown oid")).run) == []

    boot = Recorder(False)
    assert not accel.probe(
        "hvf",
        Path("/k/vmlinux"),
        6.0,
        platform="darwin",
        boot=boot.boot,
        qemu="/opt/homebrew/bin/q",
    )
    assert boot.calls[0][0][:3] == ["/opt/homebrew/bin/q", "-accel", "hvf"]
    assert accel.qemu_accel("hvf", platform="darwin") == "hvf"


# -- Windows (boundary) --------------------------------------------------------


def test_windows_whpx_feature_check_and_boot() -> None:
    enabled = Recorder((0, "Enabled\r\n"))
    assert accel_windows.candidates(enabled.run) == ["whpx"]
    argv = enabled.calls[0][0]
    assert argv[0] == "powershell.exe"
    assert argv[-1] == (
        "(Get-WindowsOptionalFeature -Online -FeatureName HypervisorPlatform).State"
    )
    assert accel_windows.candidates(Recorder((0, "Disabled\r\n")).run) == []
    # Unelevated, the cmdlet fails: the boot probe has to decide.
    denied = Recorder((1, "The requested operation requires elevation."))
    assert accel_windows.candidates(denied.run) == ["whpx"]

    boot = Recorder(True)
    qemu = r"C:\Program Files\qemu\qemu-system-x86_64.exe"
    assert accel.probe(
        "whpx", Path("vmlinux"), 6.0, platform="win32", boot=boot.boot, qemu=qemu
    )
    assert boot.calls[0][0][:3] == [qemu, "-accel", "whpx,kernel-irqchip=off"]
    assert accel.qemu_accel("whpx", platform="win32") == "whpx,kernel-irqchip=off"
    assert accel.qemu_accel("tcg", platform="win32") == "tcg"


# -- choosing and caching --------------------------------------------------------


def choose_on(platform: str, kernel: Path, cache: Path, boot: accel.Boot) -> str:
    """``accel.choose`` as the QEMU backend calls it, for another platform."""
    return accel.choose(
        lambda: accel.candidates(platform),
        lambda name: accel.probe(name, kernel, 6.0, platform, boot),
        cache,
        kernel,
    )


def test_choose_probes_once_and_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs the chooser over the macOS module with its boot recorded."""
    monkeypatch.delenv("DOCKYARD_ACCEL", raising=False)
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"k" * 100)
    cache = tmp_path / "accelerator.json"
    probes: list[str] = []

    def boot(argv: list[str], timeout: float) -> bool:
        probes.append(argv[argv.index("-accel") + 1])
        return True

    monkeypatch.setattr(accel_macos, "candidates", lambda: ["hvf"])

    assert choose_on("darwin", kernel, cache, boot) == "hvf"
    assert choose_on("darwin", kernel, cache, boot) == "hvf"
    assert probes == ["hvf"]
    saved = json.loads(cache.read_text())
    # The key the machine manager has always written: old caches stay valid.
    assert saved == {"key": f"qemu {os.uname().release} 100", "accelerator": "hvf"}

    kernel.write_bytes(b"k" * 101)  # a new guest kernel: probe again
    assert choose_on("darwin", kernel, cache, boot) == "hvf"
    assert probes == ["hvf", "hvf"]

    monkeypatch.setenv("DOCKYARD_ACCEL", "tcg")
    assert choose_on("darwin", kernel, cache, boot) == "tcg"
    monkeypatch.delenv("DOCKYARD_ACCEL")
    monkeypatch.setattr(accel_macos, "candidates", lambda: [])
    assert choose_on("darwin", kernel, cache, boot) == "tcg"


def test_a_failed_probe_means_tcg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the Windows module, whose probe cannot run here."""
    monkeypatch.delenv("DOCKYARD_ACCEL", raising=False)
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"k")
    monkeypatch.setattr(accel_windows, "candidates", lambda: ["whpx"])
    refused = Recorder(False)
    chosen = choose_on("win32", kernel, tmp_path / "a.json", refused.boot)
    assert chosen == "tcg"
    assert refused.calls[0][0][1:3] == ["-accel", "whpx,kernel-irqchip=off"]
    assert accel.platform_module("linux") is accel_linux
