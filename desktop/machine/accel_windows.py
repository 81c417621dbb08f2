"""WHPX on Windows: the Windows Hypervisor Platform, proved by a boot.

    powershell (Get-WindowsOptionalFeature -Online -FeatureName HypervisorPlatform).State
        Enabled | Disabled | (an error: the cmdlet needs an elevated shell)
    qemu-system-x86_64.exe -accel whpx,kernel-irqchip=off ...

The feature check only rules WHPX out when Windows says the feature is off
(with a hint to turn it on); when the check cannot run, as it cannot in a
user's unelevated session, the boot probe decides alone. QEMU's in-kernel
irqchip under WHPX loses interrupts on many Windows builds ("whpx:
injection failed, MSI ... lost"), so QEMU gets ``kernel-irqchip=off``, in
the probe and in the real boot alike.

This module cannot run here (Linux); its tests check the commands it runs
with a recording runner.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from desktop.machine.accel import Run, run_command

log = logging.getLogger(__name__)

FEATURE_CHECK = [
    "powershell.exe",
    "-NoProfile",
    "-NonInteractive",
    "-Command",
    "(Get-WindowsOptionalFeature -Online -FeatureName HypervisorPlatform).State",
]
WHPX_ACCEL = "whpx,kernel-irqchip=off"


def qemu_binary() -> str:
    found = shutil.which("qemu-system-x86_64")
    if found:
        return found
    base = os.environ.get("PROGRAMFILES", r"C:\Program Files")
    return str(Path(base) / "qemu" / "qemu-system-x86_64.exe")


def candidates(run: Run = run_command) -> list[str]:
    code, output = run(FEATURE_CHECK, 30.0)
    state = output.strip()
    if code == 0 and state in ("Disabled", "DisablePending"):
        log.info(
            "the Windows Hypervisor Platform is off: turn it on in 'Turn Windows "
            "features on or off' for a faster machine; using TCG"
        )
        return []
    if code != 0 or state != "Enabled":
        log.debug("HypervisorPlatform check inconclusive (%s): probing WHPX", state)
    return ["whpx"]


def qemu_accel(accelerator: str) -> str:
    return WHPX_ACCEL if accelerator == "whpx" else accelerator
