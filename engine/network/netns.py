"""Network namespaces that outlive the engine, pinned by a bind mount.

A container's network namespace is made before the runtime runs: a worker
thread unshares a fresh namespace, bind-mounts its ``/proc/thread-self/ns/net``
onto a file under ``exec_root/netns/`` (as ``ip netns add`` does) and goes
back to the host's namespace. The file keeps the namespace alive while no
process is in it, and the runtime joins it by path::

    path = create(exec_root / "netns" / container_id)
    with inside(path):          # this thread only
        socket.socket(...)      # a socket of the container's namespace
    remove(path)

Only the calling thread ever changes namespace, so the event loop's own
sockets stay on the host.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _check(result: int, what: str, path: str | Path) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what} failed: {os.strerror(code)}", str(path))


def setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns", f"fd {fd}")


def bind_mount(source: str | Path, target: str | Path) -> None:
    result = _libc.mount(
        str(source).encode(), str(target).encode(), None, MS_BIND, None
    )
    _check(result, "bind mount", target)


def unmount(target: str | Path) -> None:
    """Lazily unmount ``target``; a target that is not mounted is fine."""
    if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):
            raise OSError(code, f"umount failed: {os.strerror(code)}", str(target))


@contextlib.contextmanager
def host_fd() -> Iterator[int]:
    fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def create(path: Path) -> None:
    """Make a new network namespace pinned at ``path``, from a worker thread.

    The calling thread ends in the *new* namespace: use ``created()`` to get
    back, or call this inside ``inside()``-style code that restores it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(exist_ok=True)
    _check(_libc.unshare(CLONE_NEWNET), "unshare", path)
    bind_mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", path)


@contextlib.contextmanager
def created(path: Path) -> Iterator[None]:
    """Create the namespace at ``path`` and run the block inside it."""
    with host_fd() as home:
        try:
            create(path)
        except OSError:
            setns(home)
            remove(path)
            raise
        try:
            yield
        finally:
            setns(home)


@contextlib.contextmanager
def inside(path: Path) -> Iterator[None]:
    """Run the block with this thread in the namespace pinned at ``path``."""
    with host_fd() as home:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            setns(home)


def remove(path: Path) -> None:
    """Unpin and delete the namespace file; missing is fine."""
    unmount(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def is_pinned(path: Path) -> bool:
    """Whether ``path`` is a live namespace mount (not a stale plain file)."""
    try:
        with open("/proc/self/mountinfo") as f:
            target = str(path)
            return any(line.split()[4] == target for line in f)
    except OSError:
        return False
