"""HVF on macOS: offered by the kernel, then proved by a boot.

    sysctl -n kern.hv_support          -> 1 where Hypervisor.framework works
    qemu-system-x86_64 -accel hvf ...  -> the kernel must panic within the timeout

``kern.hv_support`` is 1 on Apple silicon too, where HVF runs only arm64
guests: the x86_64 boot probe fails there and the machine uses TCG, which
is why the sysctl alone decides nothing. This module cannot run here
(Linux); its tests check the commands it runs with a recording runner.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from desktop.machine.accel import Run, run_command

log = logging.getLogger(__name__)

SYSCTL = ["sysctl", "-n", "kern.hv_support"]
# Homebrew's QEMU, on Apple silicon and on Intel Macs.
QEMU_DIRS = ("/opt/homebrew/bin", "/usr/local/bin")


def qemu_binary() -> str:
    for folder in QEMU_DIRS:
        path = Path(folder) / "qemu-system-x86_64"
        if path.exists():
            return str(path)
    return shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"


def candidates(run: Run = run_command) -> list[str]:
    code, output = run(SYSCTL, 5.0)
    if code == 0 and output.strip() == "1":
        return ["hvf"]
    log.info("HVF is not available (kern.hv_support: %s)", output.strip() or code)
    return []


def qemu_accel(accelerator: str) -> str:
    return accelerator
