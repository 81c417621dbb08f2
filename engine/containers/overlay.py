"""A container's root filesystem: an overlay of its image's layers.

The image layers are read-only lower directories; the container writes
into its own ``upper`` (copy on write), so any number of containers share
one unpacked image::

    init = make_init_layer(container_dir / "init")
    mount_rootfs(target, lower=[init, top_layer, ..., base_layer], upper=u, work=w)
    umount_rootfs(target)

Between the image and the container sits a small per-container *init*
layer, as dockerd has: the files every container expects (``/.dockerenv``,
``/etc/mtab``) and the mount points the runtime binds over (``/etc/hosts``
and friends), so none of them lands in the container's own writable layer
and ``docker diff`` or ``commit`` never see them.

The kernel takes the mount options in one page (4096 bytes). Many layers
with long absolute paths overflow it, so the lower directories are given
relative to their common parent, with the mount made from a helper process
whose working directory is that parent (changing the engine's own working
directory would race its other threads).
"""

from __future__ import annotations

import ctypes
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

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class MountError(EngineError):
    """The overlay could not be mounted or unmounted."""


# (path, kind, mode): "f" an empty file, "d" a directory, "l" a link to mode.
INIT_ENTRIES: tuple[tuple[str, str, int | str], ...] = (
    (".dockerenv", "f", 0o755),
    ("dev", "d", 0o755),
    ("dev/pts", "d", 0o755),
    ("dev/shm", "d", 0o755),
    ("dev/console", "f", 0o755),
    ("etc", "d", 0o755),
    ("etc/hosts", "f", 0o755),
    ("etc/hostname", "f", 0o755),
    ("etc/resolv.conf", "f", 0o755),
    ("etc/mtab", "l", "/proc/mounts"),
    ("proc", "d", 0o755),
    ("sys", "d", 0o755),
)


def make_init_layer(path: Path) -> Path:
    """Create (once) the container's init layer at ``path``; returns it."""
    if path.is_dir():
        return path
    partial = path.with_name(path.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    for rel, kind, mode in INIT_ENTRIES:
        entry = partial / rel
        if kind == "d":
            entry.mkdir(exist_ok=True)
            os.chmod(entry, int(mode))
        elif kind == "f":
            entry.touch()
            os.chmod(entry, int(mode))
        elif not entry.is_symlink():
            entry.symlink_to(str(mode))
    os.rename(partial, path)
    return path


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
