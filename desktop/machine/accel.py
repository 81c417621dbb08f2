"""Which hardware accelerator QEMU gets on this host, proved by a boot.

A device that opens is not proof: nested setups expose /dev/kvm that stops
a guest in its firmware, macOS reports ``kern.hv_support`` on machines whose
CPU cannot run an x86 guest, and Windows can have the Hypervisor Platform
on while another hypervisor holds the CPU. So each candidate is tried by
booting the machine's kernel with no root file system, which panics within
about a second when the accelerator works::

    accel.candidates()                        # ["kvm"] on Linux with /dev/kvm
    accel.probe("kvm", kernel, timeout=6.0)   # True only if the kernel ran
    accel.choose(candidates, probe, cache, kernel)  # "kvm", "hvf", "whpx" or "tcg"

The platform's own checks live in sibling modules (``accel_linux``,
``accel_macos``, ``accel_windows``); this module runs the shared QEMU boot
probe and keeps the answer in a small JSON file, since a failing probe
costs its whole timeout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform as _platform
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

PANIC = b"Kernel panic"
PROBE_TIMEOUT = 6.0

# run(argv, timeout) -> (exit status, output): short platform checks.
Run = Callable[[list[str], float], tuple[int, str]]
# boot(argv, timeout) -> True if the kernel panicked (ran) in time.
Boot = Callable[[list[str], float], bool]


def probe_argv(qemu: str, accel: str, kernel: Path) -> list[str]:
    """QEMU booting ``kernel`` alone under ``accel`` (``-accel`` syntax)."""
    return [
        qemu,
        "-accel",
        accel,
        "-M",
        "q35",
        "-m",
        "256",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        str(kernel),
        "-append",
        "console=ttyS0 panic=-1 loglevel=4",
    ]


def run_command(argv: list[str], timeout: float) -> tuple[int, str]:
    """Run a short check; a missing program or a timeout is a failure, not an error."""
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        log.debug("%s: %s", argv[0], err)
        return -1, str(err)
    return proc.returncode, proc.stdout + proc.stderr


def boot_probe(argv: list[str], timeout: float) -> bool:
    """Run ``argv`` until the kernel panics (True), QEMU exits or ``timeout``.

    The output is read on a thread rather than with select(), which takes
    no pipes on Windows.
    """
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    except OSError as err:
        log.info("accelerator probe: cannot run %s: %s", argv[0], err)
        return False
    output = bytearray()
    finished = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while chunk := os.read(fd, 4096):
            output.extend(chunk)
            if PANIC in output:
                break
        finished.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        finished.wait(timeout)
    finally:
        proc.kill()
        proc.wait()
        reader.join()
    if PANIC in output:
        return True
    tail = bytes(output).decode(errors="replace").strip().splitlines()[-1:]
    log.info("accelerator probe %s does not boot a kernel here: %s", argv[2], tail)
    return False


def platform_module(platform: str | None = None) -> ModuleType:
    """``accel_linux``, ``accel_macos`` or ``accel_windows`` for ``platform``."""
    platform = platform or sys.platform
    if platform == "darwin":
        from desktop.machine import accel_macos

        return accel_macos
    if platform == "win32":
        from desktop.machine import accel_windows

        return accel_windows
    from desktop.machine import accel_linux

    return accel_linux


def candidates(platform: str | None = None) -> list[str]:
    """Accelerators worth a boot probe here, best first."""
    found: list[str] = platform_module(platform).candidates()
    return found


def probe(
    accelerator: str,
    kernel: Path,
    timeout: float,
    platform: str | None = None,
    boot: Boot | None = None,
    qemu: str | None = None,
) -> bool:
    """Boot ``kernel`` under ``accelerator``; True if it really ran.

    ``qemu`` overrides the platform's QEMU binary and ``boot`` the boot
    runner (``boot_probe``): the boundary tests of other platforms set both.
    """
    module = platform_module(platform)
    argv = probe_argv(
        qemu or module.qemu_binary(), qemu_accel(accelerator, platform), kernel
    )
    return (boot or boot_probe)(argv, timeout)


def qemu_accel(accelerator: str, platform: str | None = None) -> str:
    """The ``-accel`` value QEMU gets for ``accelerator`` (``tcg`` as is)."""
    if accelerator == "tcg":
        return "tcg"
    value: str = platform_module(platform).qemu_accel(accelerator)
    return value


def cache_key(backend: str, kernel: Path) -> str:
    """Changes when the host kernel or the guest kernel does (same as before)."""
    return f"{backend} {_platform.release()} {kernel.stat().st_size}"


def choose(
    candidates: Callable[[], list[str]],
    probe: Callable[[str], bool],
    cache: Path,
    kernel: Path,
    backend: str = "qemu",
    fallback: str = "tcg",
) -> str:
    """The first of ``candidates()`` that ``probe`` proves, else ``tcg``; cached.

    ``DOCKYARD_ACCEL`` wins, before the candidates are even listed; with
    none, ``fallback`` (a backend that picks its own says "native"). The
    answer is kept in ``cache`` under ``cache_key(backend, kernel)``: a
    failing probe costs its whole timeout.
    """
    forced = os.environ.get("DOCKYARD_ACCEL")
    if forced:
        return forced
    found = candidates()
    if not found:
        return fallback
    key = cache_key(backend, kernel)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return str(cached["accelerator"])
    chosen = next((name for name in found if probe(name)), "tcg")
    log.info("accelerator: %s (probed %s)", chosen, ", ".join(found))
    tmp = cache.with_name(cache.name + ".tmp")
    tmp.write_text(json.dumps({"key": key, "accelerator": chosen}) + "\n")
    os.replace(tmp, cache)
    return chosen
