"""Files in and out of containers: ``docker cp``, export and diff.

Every path a client names is looked up *inside* the container's root:
``openat2(2)`` with ``RESOLVE_IN_ROOT`` makes the kernel resolve ``..`` and
symlinks (absolute ones included) as if the root were ``/``, so neither a
hostile path nor a symlink planted by the container reaches the host::

    docker cp web:/etc/passwd .          # GET  /containers/web/archive?path=/etc/passwd
    docker cp ./site web:/srv            # PUT  /containers/web/archive?path=/srv

The root is ``/proc/<pid>/root`` while the container runs, which is its own
view with volumes and bind mounts in place; a stopped container's overlay
is mounted for the time of the request, and a path inside one of its
volumes or bind mounts is redirected to that mount's source on the host.
Files are then created relative to directory descriptors with
``O_NOFOLLOW``, never through a path the container could swap.

A tar entry that climbs out of the target directory (``../x``) is refused,
as dockerd refuses it; the entries are resolved with the target directory
as their root, so a symlink met while unpacking cannot lead elsewhere
(dockerd resolves them from the container's root instead). Extracted files belong to root (0:0) unless
``copyUIDGID`` asks for the container's ``User``, as in dockerd.

``GET /containers/{id}/changes`` compares the overlay's upper directory with
the image layers: overlay marks a deleted file with a 0/0 character device
and a replaced directory with the ``trusted.overlay.opaque`` attribute.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import posixpath
import queue
import shutil
import stat
import tarfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from engine.containers.attach import config_of, is_running, pid_of
from engine.errors import EngineError, Forbidden, InvalidParameter, NotFound

if TYPE_CHECKING:
    from engine.daemon import Daemon

log = logging.getLogger(__name__)

SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
CHUNK = 256 * 1024

# Go's os.FileMode bits, which the stat header carries.
GO_DIR = 1 << 31
GO_SYMLINK = 1 << 27
GO_DEVICE = 1 << 26
GO_PIPE = 1 << 25
GO_SOCKET = 1 << 24
GO_SETUID = 1 << 23
GO_SETGID = 1 << 22
GO_CHARDEV = 1 << 21
GO_STICKY = 1 << 20

_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


def open_in_root(root_fd: int, path: str, flags: int, mode: int = 0) -> int:
    """Open ``path`` as if ``root_fd`` were ``/``; raises OSError like open()."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(
        SYS_OPENAT2,
        ctypes.c_int(root_fd),
        ctypes.c_char_p(os.fsencode(path or ".")),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            raise EngineError("docker cp needs Linux 5.6 or newer (openat2)")
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def go_file_mode(st_mode: int) -> int:
    mode = st_mode & 0o777
    kind = stat.S_IFMT(st_mode)
    if kind == stat.S_IFDIR:
        mode |= GO_DIR
    elif kind == stat.S_IFLNK:
        mode |= GO_SYMLINK
    elif kind == stat.S_IFIFO:
        mode |= GO_PIPE
    elif kind == stat.S_IFSOCK:
        mode |= GO_SOCKET
    elif kind == stat.S_IFBLK:
        mode |= GO_DEVICE
    elif kind == stat.S_IFCHR:
        mode |= GO_DEVICE | GO_CHARDEV
    if st_mode & stat.S_ISUID:
        mode |= GO_SETUID
    if st_mode & stat.S_ISGID:
        mode |= GO_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= GO_STICKY
    return mode


def _go_time(seconds: float, nanos: int) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(seconds)))
    fraction = f"{nanos:09d}".rstrip("0")
    return stamp + (f".{fraction}" if fraction else "") + "Z"


def base_name(path: str) -> str:
    """The name the stat header and tar use, as Go's filepath.Base of the path.

    ``/etc/`` gives ``etc``, ``/etc/.`` gives ``.`` (copy the contents), ``/``
    gives ``/``.
    """
    if path.endswith("/.") or path == ".":
        return "."
    stripped = path.rstrip("/")
    if not stripped:
        return "/"
    return posixpath.basename(stripped)


# -- the container's filesystem, as a root directory fd --


def _mount_points(c: Any) -> list[tuple[str, str]]:
    """(destination, host source) of the container's volumes and binds."""
    out = []
    for m in getattr(c, "mounts", None) or []:
        if isinstance(m, dict):
            dest, source = m.get("Destination"), m.get("Source")
        else:
            dest, source = getattr(m, "destination", None), getattr(m, "source", None)
        if dest and source:
            out.append((posixpath.normpath(dest), str(source)))
    return sorted(out, key=lambda item: len(item[0]), reverse=True)


def _redirect(c: Any, rootfs: Path, path: str) -> tuple[Path, str]:
    """For a stopped container: a path inside a mount goes to the mount's source."""
    clean = posixpath.normpath("/" + path.lstrip("/"))
    for dest, source in _mount_points(c):
        if clean == dest or clean.startswith(dest.rstrip("/") + "/"):
            rest = clean[len(dest) :].lstrip("/")
            # Keep a trailing "/." or "/": it changes what the client copies.
            suffix = "/." if path.endswith("/.") else ""
            return Path(source), (rest or ".") + suffix
    return rootfs, path


@contextlib.asynccontextmanager
async def container_root(
    daemon: Daemon, c: Any, path: str = "/", own_view: bool = True
) -> AsyncIterator[tuple[Path, str]]:
    """Yield ``(root directory, path relative to it)`` for a container path.

    ``own_view``: a running container is seen through ``/proc/<pid>/root``
    (volumes included); otherwise the overlay alone. A stopped container's
    overlay is mounted meanwhile, under the container's lock so that a
    concurrent start waits.
    """
    if is_running(c) and pid_of(c) > 0 and own_view:
        yield Path(f"/proc/{pid_of(c)}/root"), path
        return
    rootfs = Path(getattr(c, "rootfs", "") or "")
    from engine.containers.overlay import is_mounted, mount_rootfs, umount_rootfs

    if is_running(c) and is_mounted(rootfs):
        yield rootfs, path
        return
    manager = daemon.containers
    acquire = getattr(manager, "mount_rootfs", None)
    release = getattr(manager, "release_rootfs", None)
    if acquire is not None and release is not None:
        # The lifecycle owner counts users, so a start meanwhile keeps it.
        rootfs = Path(await acquire(c))
        try:
            yield _redirect(c, rootfs, path) if own_view else (rootfs, path)
        finally:
            await release(c)
        return
    lock_of = getattr(manager, "_lock", None)
    lock = lock_of(c) if lock_of is not None else asyncio.Lock()
    async with lock:
        mounted_here = False
        if not is_mounted(rootfs):
            image = daemon.images.get(c.image_id)
            lower = list(daemon.images.layer_dirs(image))
            await asyncio.to_thread(mount_rootfs, rootfs, lower, c.upper, c.work)
            mounted_here = True
        try:
            yield _redirect(c, rootfs, path) if own_view else (rootfs, path)
        finally:
            if mounted_here:
                await asyncio.to_thread(umount_rootfs, rootfs)


def _open_root(root: Path) -> int:
    return os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def _not_found(path: str, c: Any) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {c.name}")


# -- stat (HEAD) --


def _stat_blocking(root: Path, path: str, shown: str, c: Any) -> dict[str, Any]:
    root_fd = _open_root(root)
    try:
        parent, name = posixpath.split(path.rstrip("/") or "/")
        if path.endswith("/.") or name in ("", "."):
            parent, name = path, "."
        try:
            parent_fd = open_in_root(root_fd, parent, os.O_PATH | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            raise _not_found(shown, c) from None
        try:
            try:
                st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            except FileNotFoundError:
                raise _not_found(shown, c) from None
            link = ""
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(name, dir_fd=parent_fd)
                base_dir = posixpath.dirname(
                    posixpath.normpath("/" + shown.lstrip("/"))
                )
                link = posixpath.normpath(posixpath.join(base_dir, target))
        finally:
            os.close(parent_fd)
    finally:
        os.close(root_fd)
    return {
        "name": base_name(shown),
        "size": st.st_size,
        "mode": go_file_mode(st.st_mode),
        "mtime": _go_time(st.st_mtime, st.st_mtime_ns % 1_000_000_000),
        "linkTarget": link,
    }


async def stat_path(daemon: Daemon, c: Any, path: str) -> dict[str, Any]:
    """The stat header for ``path``; NotFound if it does not exist."""
    async with container_root(daemon, c, path) as (root, inner):
        return await asyncio.to_thread(_stat_blocking, root, inner, path, c)


# -- tar out (GET archive, export) --


class _QueueWriter:
    """A file object whose writes become chunks of an async stream."""

    def __init__(self, chunks: queue.Queue[bytes | BaseException | None]) -> None:
        self.chunks = chunks
        self.buffer = bytearray()
        self.cancelled = threading.Event()

    def write(self, data: bytes) -> int:
        if self.cancelled.is_set():
            raise BrokenPipeError("client went away")
        self.buffer += data
        if len(self.buffer) >= CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buffer:
            self.chunks.put(bytes(self.buffer))
            self.buffer.clear()


def _tar_info(name: str, st: os.stat_result, arcname: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.mtime = int(st.st_mtime)
    info.size = 0
    kind = stat.S_IFMT(st.st_mode)
    if kind == stat.S_IFREG:
        info.type = tarfile.REGTYPE
        info.size = st.st_size
    elif kind == stat.S_IFDIR:
        info.type = tarfile.DIRTYPE
    elif kind == stat.S_IFLNK:
        info.type = tarfile.SYMTYPE
    elif kind == stat.S_IFCHR:
        info.type = tarfile.CHRTYPE
    elif kind == stat.S_IFBLK:
        info.type = tarfile.BLKTYPE
    elif kind == stat.S_IFIFO:
        info.type = tarfile.FIFOTYPE
    else:
        raise ValueError(f"cannot archive {name}: a socket")
    if kind in (stat.S_IFCHR, stat.S_IFBLK):
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return info


def _add_tree(
    tar: tarfile.TarFile,
    parent_fd: int,
    name: str,
    arcname: str,
    links: dict[tuple[int, int], str],
    skip_dev: int | None = None,
) -> None:
    """Archive ``name`` (relative to ``parent_fd``) and what is below it."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(st.st_mode):
        return
    info = _tar_info(name, st, arcname)
    if info.type == tarfile.SYMTYPE:
        info.linkname = os.readlink(name, dir_fd=parent_fd)
        tar.addfile(info)
        return
    if info.type == tarfile.REGTYPE:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            info.type, info.size, info.linkname = tarfile.LNKTYPE, 0, links[key]
            tar.addfile(info)
            return
        links[key] = arcname
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        with os.fdopen(fd, "rb") as f:
            tar.addfile(info, f)
        return
    if info.type != tarfile.DIRTYPE:
        tar.addfile(info)
        return
    if arcname:
        # "/etc/." archives as "./", "./group"...: dockerd's names.
        info.name = "./" if arcname == "." else arcname.rstrip("/") + "/"
        tar.addfile(info)
    fd = os.open(
        name,
        os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
        dir_fd=parent_fd,
    )
    try:
        if skip_dev is not None and os.fstat(fd).st_dev != skip_dev:
            return
        for entry in sorted(os.listdir(fd)):
            child = entry if arcname in ("", ".") else f"{arcname.rstrip('/')}/{entry}"
            if arcname == ".":
                child = f"./{entry}"
            _add_tree(tar, fd, entry, child, links, skip_dev)
    finally:
        os.close(fd)


def _stream_tar(produce: Any, cleanup: Any = None) -> AsyncIterator[bytes]:
    """Run ``produce(fileobj)`` in a thread, streaming what it writes."""
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=16)
    writer = _QueueWriter(chunks)

    def run() -> None:
        try:
            produce(writer)
            writer.flush()
            chunks.put(None)
        except BaseException as err:
            if not writer.cancelled.is_set():
                chunks.put(err)

    async def body() -> AsyncIterator[bytes]:
        thread = threading.Thread(target=run, name="tar-out", daemon=True)
        thread.start()
        try:
            while True:
                item = await asyncio.to_thread(chunks.get)
                if item is None:
                    return
                if isinstance(item, BaseException):
                    log.warning("archive failed: %s", item)
                    raise EngineError(f"archive failed: {item}")
                yield item
        finally:
            writer.cancelled.set()
            # Unblock a producer stuck on a full queue.
            with contextlib.suppress(queue.Empty):
                while True:
                    chunks.get_nowait()
            await asyncio.to_thread(thread.join, 30)

    return body()


async def read_archive(
    daemon: Daemon, c: Any, path: str
) -> tuple[dict[str, Any], AsyncIterator[bytes]]:
    """The stat header and a tar stream of ``path``; NotFound if missing.

    The stream sets up its own view of the container when it is read, so
    that nothing stays mounted if the client never reads it.
    """
    header = await stat_path(daemon, c, path)
    arcname = header["name"]

    async def body() -> AsyncIterator[bytes]:
        async with container_root(daemon, c, path) as (root, inner):

            def produce(fileobj: IO[bytes]) -> None:
                _tar_path(root, inner, arcname, fileobj)

            async for chunk in _stream_tar(produce):
                yield chunk

    return header, body()


def _tar_path(root: Path, inner: str, arcname: str, fileobj: IO[bytes]) -> None:
    root_fd = _open_root(root)
    try:
        parent, name = posixpath.split(inner.rstrip("/") or "/")
        if inner.endswith("/.") or name in ("", "."):
            parent, name = inner, "."
        parent_fd = open_in_root(root_fd, parent, os.O_PATH | os.O_DIRECTORY)
        try:
            with tarfile.open(
                fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT
            ) as tar:
                _add_tree(tar, parent_fd, name, arcname, {})
        finally:
            os.close(parent_fd)
    finally:
        os.close(root_fd)


async def export_rootfs(daemon: Daemon, c: Any) -> AsyncIterator[bytes]:
    """A tar of the container's whole filesystem, without its volumes."""
    async with container_root(daemon, c, "/", own_view=False) as (root, _):

        def produce(fileobj: IO[bytes]) -> None:
            root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                device = os.fstat(root_fd).st_dev
                with tarfile.open(
                    fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT
                ) as tar:
                    links: dict[tuple[int, int], str] = {}
                    for entry in sorted(os.listdir(root_fd)):
                        _add_tree(tar, root_fd, entry, entry, links, skip_dev=device)
            finally:
                os.close(root_fd)

        async for chunk in _stream_tar(produce):
            yield chunk


# -- tar in (PUT archive) --


class _QueueReader:
    """A file object reading chunks an async producer puts in a queue."""

    def __init__(self, chunks: queue.Queue[bytes | None]) -> None:
        self.chunks = chunks
        self.buffer = b""
        self.eof = False

    def read(self, size: int = -1) -> bytes:
        while not self.eof and (size < 0 or len(self.buffer) < size):
            chunk = self.chunks.get()
            if chunk is None:
                self.eof = True
                break
            self.buffer += chunk
        if size < 0:
            data, self.buffer = self.buffer, b""
        else:
            data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def read_table(root: Path, name: str) -> list[list[str]]:
    """The colon-separated rows of ``name`` (``/etc/passwd``, ``/etc/group``)
    inside the container's ``root``, resolved without leaving it; [] if absent.
    """
    try:
        root_fd = _open_root(root)
    except OSError:
        return []
    try:
        fd = open_in_root(root_fd, name, os.O_RDONLY)
    except OSError:
        return []
    finally:
        os.close(root_fd)
    with os.fdopen(fd, "r", errors="replace") as f:
        return [line.rstrip("\n").split(":") for line in f if ":" in line]


def _lookup_ids(root: Path, user: str) -> tuple[int, int]:
    """uid and gid of a ``User`` value, from the container's passwd and group."""
    name, _, group = user.partition(":")
    uid = gid = 0
    if name.isdigit():
        uid = int(name)
        gid = uid
        for entry in read_table(root, "/etc/passwd"):
            if len(entry) > 3 and entry[2] == name and entry[3].isdigit():
                gid = int(entry[3])
    else:
        for entry in read_table(root, "/etc/passwd"):
            if entry[0] == name and len(entry) > 3:
                uid, gid = int(entry[2]), int(entry[3])
                break
        else:
            raise InvalidParameter(
                f"unable to find user {name}: no matching entries in passwd file"
            )
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            for entry in read_table(root, "/etc/group"):
                if entry[0] == group and len(entry) > 2:
                    gid = int(entry[2])
                    break
            else:
                raise InvalidParameter(
                    f"unable to find group {group}: no matching entries in group file"
                )
    return uid, gid


def _member_path(name: str) -> str:
    """The entry's path below the target directory; InvalidParameter if outside."""
    clean = posixpath.normpath("/" + name.lstrip("/")).lstrip("/")
    stripped = name.lstrip("/")
    while stripped.startswith("./"):
        stripped = stripped[2:]
    # normpath of "/../x" is "/x": compare with a relative normalisation.
    relative = posixpath.normpath(stripped) if stripped else "."
    if relative == ".." or relative.startswith("../"):
        raise InvalidParameter(f"{name!r} is outside of the target directory")
    return clean or "."


def _ensure_dir(dest_fd: int, path: str) -> int:
    """An O_PATH fd of directory ``path`` below ``dest_fd``, made if missing."""
    try:
        return open_in_root(dest_fd, path, os.O_PATH | os.O_DIRECTORY)
    except FileNotFoundError:
        pass
    fd = os.dup(dest_fd)
    try:
        for part in path.split("/"):
            if part in ("", "."):
                continue
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            # RESOLVE_IN_ROOT from here: a symlink cannot lead outside.
            next_fd = open_in_root(fd, part, os.O_PATH | os.O_DIRECTORY)
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _extract_blocking(
    root: Path,
    path: str,
    shown: str,
    c: Any,
    reader: _QueueReader,
    no_overwrite_dir_non_dir: bool,
    owner: tuple[int, int],
) -> None:
    root_fd = _open_root(root)
    try:
        try:
            dest_fd = open_in_root(root_fd, path, os.O_PATH | os.O_DIRECTORY)
        except FileNotFoundError:
            raise _not_found(shown, c) from None
        except NotADirectoryError:
            raise InvalidParameter("extraction point is not a directory") from None
    finally:
        os.close(root_fd)
    directories: list[tuple[str, tarfile.TarInfo]] = []
    try:
        with tarfile.open(fileobj=reader, mode="r|*") as tar:  # type: ignore[call-overload]
            for member in tar:
                name = _member_path(member.name)
                if name == ".":
                    continue
                _extract_member(
                    tar, member, dest_fd, name, no_overwrite_dir_non_dir, owner, shown
                )
                if member.isdir():
                    directories.append((name, member))
        # Directory times last: creating their entries changed them.
        for name, member in reversed(directories):
            with contextlib.suppress(OSError):
                fd = open_in_root(dest_fd, name, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.utime(fd, (member.mtime, member.mtime))
                finally:
                    os.close(fd)
    except tarfile.TarError as err:
        raise InvalidParameter(f"invalid tar archive: {err}") from err
    finally:
        os.close(dest_fd)
        # Let the producer finish whatever the client still sends.
        while not reader.eof:
            reader.read(CHUNK)


def _extract_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    dest_fd: int,
    name: str,
    no_overwrite: bool,
    owner: tuple[int, int],
    shown: str,
) -> None:
    parent, base = posixpath.split(name)
    parent_fd = _ensure_dir(dest_fd, parent or ".")
    try:
        try:
            existing: os.stat_result | None = os.stat(
                base, dir_fd=parent_fd, follow_symlinks=False
            )
        except FileNotFoundError:
            existing = None
        target = posixpath.join(shown, name)
        if existing is not None:
            was_dir = stat.S_ISDIR(existing.st_mode)
            if was_dir and not member.isdir():
                if no_overwrite:
                    raise InvalidParameter(
                        f'cannot overwrite directory "{target}" with non-directory "{member.name}"'
                    )
                shutil.rmtree(base, dir_fd=parent_fd)
            elif not was_dir and member.isdir():
                if no_overwrite:
                    raise InvalidParameter(
                        f'cannot overwrite non-directory "{target}" with directory "{member.name}"'
                    )
                os.unlink(base, dir_fd=parent_fd)
            elif not was_dir:
                os.unlink(base, dir_fd=parent_fd)
        uid, gid = owner
        mode = member.mode & 0o7777
        if member.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                os.mkdir(base, 0o700, dir_fd=parent_fd)
            fd = os.open(
                base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd
            )
            try:
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            return
        if member.isreg():
            fd = os.open(
                base,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=parent_fd,
            )
            with os.fdopen(fd, "wb") as out:
                source = tar.extractfile(member)
                if source is not None:
                    shutil.copyfileobj(source, out, CHUNK)
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
                os.utime(fd, (member.mtime, member.mtime))
            return
        if member.issym():
            os.symlink(member.linkname, base, dir_fd=parent_fd)
        elif member.islnk():
            link = _member_path(member.linkname)
            link_parent, link_base = posixpath.split(link)
            source_fd = open_in_root(
                dest_fd, link_parent or ".", os.O_PATH | os.O_DIRECTORY
            )
            try:
                os.link(
                    link_base,
                    base,
                    src_dir_fd=source_fd,
                    dst_dir_fd=parent_fd,
                    follow_symlinks=False,
                )
            finally:
                os.close(source_fd)
            return
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            if member.isfifo():
                kind = stat.S_IFIFO
            device = os.makedev(member.devmajor, member.devminor)
            os.mknod(base, mode | kind, device, dir_fd=parent_fd)
        else:
            log.debug("skipping tar entry %s of type %r", member.name, member.type)
            return
        os.chown(base, uid, gid, dir_fd=parent_fd, follow_symlinks=False)
        if not member.issym():
            os.chmod(base, mode, dir_fd=parent_fd)
        os.utime(
            base, (member.mtime, member.mtime), dir_fd=parent_fd, follow_symlinks=False
        )
    finally:
        os.close(parent_fd)


async def extract_archive(
    daemon: Daemon,
    c: Any,
    path: str,
    body: AsyncIterator[bytes],
    *,
    no_overwrite_dir_non_dir: bool,
    copy_uid_gid: bool,
) -> None:
    """Unpack the tar ``body`` into directory ``path`` of the container.

    Raises NotFound when ``path`` is missing, InvalidParameter when it is
    not a directory or an entry is refused, Forbidden for a read-only rootfs.
    """
    host_config = getattr(c, "host_config", None) or {}
    async with container_root(daemon, c, path) as (root, inner):
        if host_config.get("ReadonlyRootfs") and not _in_mount(c, path):
            raise Forbidden("container rootfs is marked read-only")
        owner = (0, 0)
        user = str(config_of(c).get("User") or "")
        if copy_uid_gid and user:
            owner = await asyncio.to_thread(_lookup_ids, root, user)
        chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        reader = _QueueReader(chunks)
        # A thread of its own: it lives as long as the client uploads.
        loop = asyncio.get_running_loop()
        work: asyncio.Future[None] = loop.create_future()

        def settle(error: BaseException | None) -> None:
            if work.done():
                return
            if error is None:
                work.set_result(None)
            else:
                work.set_exception(error)

        def extract() -> None:
            error: BaseException | None = None
            try:
                _extract_blocking(
                    root, inner, path, c, reader, no_overwrite_dir_non_dir, owner
                )
            except BaseException as err:
                error = err
            loop.call_soon_threadsafe(settle, error)

        threading.Thread(target=extract, name="tar-in", daemon=True).start()
        try:
            async for chunk in body:
                if work.done():
                    break
                await asyncio.to_thread(chunks.put, chunk)
        finally:
            await asyncio.to_thread(chunks.put, None)
        await work


def _in_mount(c: Any, path: str) -> bool:
    clean = posixpath.normpath("/" + path.lstrip("/"))
    return any(
        clean == dest or clean.startswith(dest.rstrip("/") + "/")
        for dest, _ in _mount_points(c)
    )


# -- changes (docker diff) --

CHANGE_MODIFY, CHANGE_ADD, CHANGE_DELETE = 0, 1, 2


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: Path) -> bool:
    try:
        return (
            os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
        )
    except OSError:
        return False


def _walk_changes(
    upper: Path, lower: list[Path], mount_points: set[str]
) -> list[dict[str, Any]]:
    changes: dict[str, int] = {}

    def in_lower(rel: str) -> os.stat_result | None:
        for layer in lower:
            with contextlib.suppress(OSError):
                return os.lstat(layer / rel)
        return None

    def record_parent(rel: str) -> None:
        parent = posixpath.dirname("/" + rel)
        if parent != "/" and parent not in changes:
            changes[parent] = CHANGE_MODIFY

    def stub(shown: str, st: os.stat_result) -> bool:
        # Empty files and directories made as mount points (/etc/hosts...)
        # are the engine's, not the container's: dockerd keeps them in an
        # init layer that diff does not show.
        if shown not in mount_points:
            return False
        if stat.S_ISREG(st.st_mode):
            return st.st_size == 0
        return stat.S_ISDIR(st.st_mode) and not os.listdir(upper / shown.lstrip("/"))

    stack = [""]
    while stack:
        rel_dir = stack.pop()
        for entry in sorted(os.listdir(upper / rel_dir)):
            rel = f"{rel_dir}/{entry}" if rel_dir else entry
            st = os.lstat(upper / rel)
            shown = "/" + rel
            if _is_whiteout(st):
                changes[shown] = CHANGE_DELETE
                record_parent(rel)
                continue
            below = in_lower(rel)
            if below is None and stub(shown, st):
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(rel)
                if _is_opaque(upper / rel) and below is not None:
                    # Replaced wholesale: whatever the image had below is gone.
                    changes[shown] = CHANGE_MODIFY
                    upper_names = set(os.listdir(upper / rel))
                    for layer in lower:
                        with contextlib.suppress(OSError):
                            for old in os.listdir(layer / rel):
                                if old not in upper_names:
                                    changes[f"{shown}/{old}"] = CHANGE_DELETE
                    continue
                if below is not None and stat.S_ISDIR(below.st_mode):
                    # A directory copied up only because of what is inside
                    # is recorded through its children.
                    same = (below.st_mode, below.st_uid, below.st_gid) == (
                        st.st_mode,
                        st.st_uid,
                        st.st_gid,
                    )
                    if same:
                        continue
            kind = CHANGE_ADD if below is None else CHANGE_MODIFY
            changes[shown] = kind
            if kind == CHANGE_ADD:
                record_parent(rel)
    return [{"Path": path, "Kind": kind} for path, kind in sorted(changes.items())]


def _mount_destinations(c: Any) -> set[str]:
    points = {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/.dockerenv"}
    points.update(dest for dest, _ in _mount_points(c))
    for m in getattr(c, "oci_mounts", None) or []:
        if isinstance(m, dict) and m.get("destination"):
            points.add(posixpath.normpath(m["destination"]))
    return points


async def changes(daemon: Daemon, c: Any) -> list[dict[str, Any]]:
    """``docker diff``: the container's changes to its image's files."""
    upper = Path(getattr(c, "upper", "") or Path(c.dir) / "upper")
    if not upper.is_dir():
        return []
    image = daemon.images.get(c.image_id)
    lower = [Path(p) for p in daemon.images.layer_dirs(image)]
    return await asyncio.to_thread(_walk_changes, upper, lower, _mount_destinations(c))
