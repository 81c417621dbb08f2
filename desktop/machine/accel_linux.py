"""KVM on Linux: a candidate when /dev/kvm exists, chosen when a kernel boots.

    accel_linux.candidates()   # ["kvm"] or []
    accel_linux.qemu_binary()  # what accel.probe boots the kernel with

Where /dev/kvm opens but cannot run a guest (nested setups, this one among
them) QEMU stops in the firmware; the probe's timeout catches that, and
QEMU runs directly because libvirt's createXML would hang for a minute.
"""

from __future__ import annotations

import os

from desktop.machine.accel import Run, run_command

QEMU = "qemu-system-x86_64"
KVM_DEVICE = "/dev/kvm"


def candidates(run: Run = run_command) -> list[str]:
    return ["kvm"] if os.path.exists(KVM_DEVICE) else []


def qemu_binary() -> str:
    return QEMU


def qemu_accel(accelerator: str) -> str:
    return accelerator
