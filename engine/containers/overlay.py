"""A container's root filesystem: an overlay of its image's layers.

The image layers are read-only lower directories; the container writes
into its own ``upper`` (copy on write), so any number of containers share
one unpacked image::

    mount_rootfs(target, lower=[top_layer, ..., base_layer], upper=u, work=w)
    umount_rootfs(target)

The kernel takes the mount options in one page (4096 bytes). Many layers
with long absolute paths overflow it, so the lower directories are given
relative to their common parent, with the mount made from a helper process
whose working directory is that parent (changing the engine's own working
directory would race its other threads).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import subprocess
from pathlib import Path

from engine.errors import EngineError

log = logging.getLogger(__name__)

MS_NODEV = 4
MNT_DETACH = 2
PAGE_LIMIT = 4000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class MountError(EngineError):
    """The overlay could not be mounted or unmounted."""


def _options(
    lower: list[Path], upper: Path, work: Path, relative_to: Path | None
) -> str:
    if relative_to is None:
        lowers = ":".join(str(p) for p in lower)
    else:
        lowers = ":".join(os.path.relpath(p, relative_to) for p in lower)
    # Explicitly off: commit and the builder read the upper dir as a plain
    # diff, which redirect and metacopy xattrs would make incomplete.
    return (
        f"lowerdir={lowers},upperdir={upper},workdir={work},"
        "redirect_dir=off,metacopy=off"
    )


def mount_rootfs(target: Path, lower: list[Path], upper: Path, work: Path) -> None:
    """Mount the overlay at ``target`` (created if needed).

    Raises MountError with the kernel's reason.
    """
    target.mkdir(parents=True, exist_ok=True)
    upper.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    if not lower:
        # A scratch image has no layer; overlay needs one lower directory.
        empty = upper.parent / "empty"
        empty.mkdir(exist_ok=True)
        lower = [empty]
    options = _options(lower, upper, work, None)
    if len(options) < PAGE_LIMIT:
        result = _libc.mount(b"overlay", str(target).encode(), b"overlay", MS_NODEV,
                             options.encode())  # fmt: skip
        if result != 0:
            err = ctypes.get_errno()
            raise MountError(
                f"mounting the container's rootfs failed: {os.strerror(err)}"
            )
        return
    parent = Path(os.path.commonpath([str(p) for p in lower]))
    options = _options(lower, upper, work, parent)
    if len(options) >= PAGE_LIMIT:
        raise MountError(f"too many image layers to mount ({len(lower)})")
    proc = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(target)],
        cwd=parent,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise MountError(
            f"mounting the container's rootfs failed: {proc.stderr.strip()}"
        )


def umount_rootfs(target: Path) -> None:
    """Unmount ``target`` if mounted (lazily when busy); never raises."""
    result = _libc.umount2(str(target).encode(), MNT_DETACH)
    if result != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            log.warning("unmounting %s failed: %s", target, os.strerror(err))


def is_mounted(target: Path) -> bool:
    wanted = str(target)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == wanted for line in f)
