"""Layer tars in and out of overlayfs directories.

An image layer travels as a tar (plain, gzip or zstd) in which deletions
are OCI whiteouts: ``etc/.wh.motd`` deletes ``etc/motd`` from the layers
below, and ``var/cache/.wh..wh..opq`` hides everything below in
``var/cache``. Each layer is unpacked once into its own directory, which
containers then stack as overlayfs lower directories, so the whiteouts are
turned into overlayfs' own form as they are unpacked::

    etc/.wh.motd              ->  etc/motd: character device 0/0
    var/cache/.wh..wh..opq    ->  var/cache with trusted.overlay.opaque=y

:func:`write_diff` goes the other way, from a container's overlay upper
directory to an OCI layer tar.

A layer comes from outside, so every entry is checked before it touches
the disk: no absolute names, no ``..``, nothing written through a symlink
the same tar planted, no hardlink to a file the layer does not hold. The
first bad entry fails the whole layer with an InvalidParameter naming it.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import logging
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

import zstandard

from engine.errors import EngineError, InvalidParameter

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
CHUNK = 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
UNREPRESENTABLE_XATTRS = ("trusted.overlay.redirect", "trusted.overlay.metacopy")
# Overlayfs keeps its own bookkeeping in these; they never belong in a layer.
PRIVATE_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.", "security.selinux")


@dataclass
class UnpackStats:
    """What unpacking learnt about a layer."""

    diff_id: str  # sha256 of the uncompressed tar
    tar_size: int  # length of the uncompressed tar
    size: int  # bytes of file content, what ``docker images`` counts
    compression: str = ""  # "", "gzip" or "zstd": how the tar arrived


class LayerError(InvalidParameter):
    """A layer tar that cannot be unpacked safely or at all."""


def _refuse(name: str, why: str) -> LayerError:
    return LayerError(f"refusing layer entry {name!r}: {why}")


# -- reading streams ------------------------------------------------------


class _Prefixed(io.RawIOBase):
    """A stream with a few already-read bytes put back in front."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            data, self._head = self._head + self._rest.read(), b""
            return data
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._rest.read(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class HashingReader(io.RawIOBase):
    """Counts and hashes every byte read through it."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source
        self.hash = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._source.read(-1 if size is None else size)
        self.hash.update(data)
        self.count += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        return f"sha256:{self.hash.hexdigest()}"


def compression_of(head: bytes) -> str:
    """``gzip``, ``zstd`` or ``""`` (plain tar) from a stream's first bytes."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return ""


def decompressed(source: IO[bytes]) -> IO[bytes]:
    """``source`` as an uncompressed stream, whatever it was compressed with."""
    return open_decompressed(source)[0]


def open_decompressed(source: IO[bytes]) -> tuple[IO[bytes], str]:
    """``source`` uncompressed, and the compression it had (see compression_of)."""
    head = b""
    while len(head) < 4:
        more = source.read(4 - len(head))
        if not more:
            break
        head += more
    stream: IO[bytes] = _Prefixed(head, source)  # type: ignore[assignment]
    kind = compression_of(head)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=stream, mode="rb"), kind  # type: ignore[return-value]
    if kind == "zstd":
        decompressor = zstandard.ZstdDecompressor()
        reader = decompressor.stream_reader(stream, read_across_frames=True)
        return reader, kind  # type: ignore[return-value]
    return stream, kind


# -- unpacking ------------------------------------------------------------


def _clean_name(name: str) -> str:
    """A tar member name as a relative path; "" is the layer's root."""
    if name.startswith("/"):
        raise _refuse(name, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(name, "path leaves the layer root")
    return "/".join(parts)


class _Unpacker:
    """State of one layer being unpacked into an empty directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.symlinks: set[str] = set()
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []
        self.size = 0
        self.is_root = os.geteuid() == 0

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else str(self.root)

    def check_parents(self, name: str, rel: str) -> None:
        """Refuse a path whose parent is a symlink this layer planted."""
        parts = rel.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in self.symlinks:
                raise _refuse(name, "a parent directory is a symlink")

    def ensure_parent(self, name: str, rel: str) -> None:
        parent = os.path.dirname(rel)
        if not parent:
            return
        try:
            os.makedirs(self.path(parent), mode=0o755, exist_ok=True)
        except (NotADirectoryError, FileExistsError):
            raise _refuse(name, "a parent path is not a directory") from None

    def clear(self, rel: str, keep_dir: bool) -> bool:
        """Make room for a new entry; True when a directory was kept."""
        target = self.path(rel)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            shutil.rmtree(target)
            prefix = rel + "/"
            self.symlinks = {s for s in self.symlinks if not s.startswith(prefix)}
        else:
            os.unlink(target)
            self.symlinks.discard(rel)
        return False

    def whiteout(self, name: str, rel: str, member: tarfile.TarInfo) -> None:
        base = os.path.basename(rel)
        parent = os.path.dirname(rel)
        if base == OPAQUE_MARKER:
            self.ensure_parent(name, rel)
            directory = self.path(parent)
            if not parent:
                # An opaque root hides nothing useful and overlay ignores it.
                return
            os.setxattr(directory, OPAQUE_XATTR, b"y", follow_symlinks=False)
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk and friends)
        hidden = os.path.join(parent, base[len(WHITEOUT_PREFIX) :])
        if (
            not hidden
            or hidden.endswith("/")
            or os.path.basename(hidden) in ("", "..", ".")
        ):
            raise _refuse(name, "malformed whiteout")
        self.check_parents(name, hidden)
        self.ensure_parent(name, hidden)
        target = self.path(hidden)
        if os.path.lexists(target):
            # A file this same layer holds stays: whiteouts hide lower layers only.
            return
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        self.own(target, member, is_link=False)

    def own(self, target: str, member: tarfile.TarInfo, is_link: bool) -> None:
        if not self.is_root:
            return
        try:
            os.lchown(target, member.uid, member.gid)
        except OSError as err:
            log.debug("chown %s: %s", target, err)

    def xattrs(self, target: str, member: tarfile.TarInfo) -> None:
        for key, value in member.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            attr = key[len("SCHILY.xattr.") :]
            if attr.startswith(PRIVATE_XATTR_PREFIXES):
                continue
            raw = value.encode("utf-8", "surrogateescape")
            try:
                os.setxattr(target, attr, raw, follow_symlinks=False)
            except OSError as err:
                if err.errno not in (errno.ENOTSUP, errno.EPERM, errno.EOPNOTSUPP):
                    raise
                log.debug("xattr %s on %s not kept: %s", attr, target, err)

    def entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        rel = _clean_name(name)
        if not rel:
            # "./": the mode and owner of the container's "/".
            if member.isdir():
                self.own(str(self.root), member, is_link=False)
                os.chmod(self.root, member.mode & 0o7777)
                self.dirs.append(("", member))
            return
        self.check_parents(name, rel)
        if os.path.basename(rel).startswith(WHITEOUT_PREFIX):
            self.whiteout(name, rel, member)
            return
        self.ensure_parent(name, rel)
        target = self.path(rel)

        if member.isdir():
            if not self.clear(rel, keep_dir=True):
                os.mkdir(target, 0o700)
            self.own(target, member, is_link=False)
            os.chmod(target, member.mode & 0o7777)
            self.xattrs(target, member)
            self.dirs.append((rel, member))
            return

        if member.islnk():
            try:
                link_rel = _clean_name(member.linkname)
            except LayerError:
                raise _refuse(
                    name, f"hardlink target {member.linkname!r} is outside the layer"
                ) from None
            if not link_rel:
                raise _refuse(name, "hardlink to the layer root")
            self.check_parents(name, link_rel)
            source = self.path(link_rel)
            try:
                st = os.lstat(source)
            except FileNotFoundError:
                raise _refuse(
                    name, f"hardlink target {member.linkname!r} is not in this layer"
                ) from None
            if stat.S_ISDIR(st.st_mode):
                raise _refuse(name, "hardlink to a directory")
            if link_rel == rel:
                return
            self.clear(rel, keep_dir=False)
            os.link(source, target, follow_symlinks=False)
            return

        self.clear(rel, keep_dir=False)
        if member.isreg():
            fd = os.open(
                target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
            )
            with os.fdopen(fd, "wb") as out:
                source_file = tar.extractfile(member)
                if source_file is not None:
                    shutil.copyfileobj(source_file, out, CHUNK)
            self.size += member.size
        elif member.issym():
            os.symlink(member.linkname, target)
            self.symlinks.add(rel)
            self.own(target, member, is_link=True)
            self.xattrs(target, member)
            os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
            return
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(target, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        elif member.isfifo():
            os.mkfifo(target, 0o600)
        else:
            raise _refuse(name, f"unsupported tar entry type {member.type!r}")

        # chown before chmod and xattrs: chown clears setuid bits and capabilities.
        self.own(target, member, is_link=False)
        os.chmod(target, member.mode & 0o7777)
        self.xattrs(target, member)
        os.utime(target, (member.mtime, member.mtime))

    def finish(self) -> None:
        # Directory times last, and deepest first: filling them changed them.
        for rel, member in reversed(self.dirs):
            os.utime(
                self.path(rel), (member.mtime, member.mtime), follow_symlinks=False
            )


def unpack(source: IO[bytes], root: Path) -> UnpackStats:
    """Unpack a (possibly compressed) layer tar into the empty directory ``root``.

    Whiteouts become overlayfs whiteouts. Raises InvalidParameter (a
    LayerError) naming the first entry that would land outside ``root`` or
    that the tar cannot describe; the caller discards ``root`` then.
    """
    plain, compression = open_decompressed(source)
    hashing = HashingReader(plain)
    unpacker = _Unpacker(root)
    try:
        with tarfile.open(fileobj=hashing, mode="r|", errorlevel=2) as tar:  # type: ignore[call-overload]
            for member in tar:
                unpacker.entry(tar, member)
        hashing.drain()
    except (tarfile.TarError, EOFError, zstandard.ZstdError, gzip.BadGzipFile) as err:
        raise LayerError(f"invalid layer tar: {err}") from err
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
            raise
        raise LayerError(f"invalid layer tar: {err}") from err
    unpacker.finish()
    return UnpackStats(hashing.digest, hashing.count, unpacker.size, compression)


# -- writing diffs --------------------------------------------------------


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    for attr in (OPAQUE_XATTR, "user.overlay.opaque"):
        try:
            if os.getxattr(path, attr, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def _pax_xattrs(path: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return headers
    for attr in names:
        if attr in UNREPRESENTABLE_XATTRS:
            # The file's data or the directory's content live in a lower
            # layer under another name: a tar of the upper dir would lose them.
            raise EngineError(
                f"cannot make a layer of {path}: it has {attr} (mount the overlay with redirect_dir=off,metacopy=off)"
            )
        if attr.startswith(PRIVATE_XATTR_PREFIXES):
            continue
        try:
            value = os.getxattr(path, attr, follow_symlinks=False)
        except OSError:
            continue
        headers[f"SCHILY.xattr.{attr}"] = value.decode("utf-8", "surrogateescape")
    return headers


def _walk(root: str, rel: str = "") -> Iterator[tuple[str, str, os.stat_result]]:
    directory = os.path.join(root, rel) if rel else root
    for name in sorted(os.listdir(directory)):
        child_rel = f"{rel}/{name}" if rel else name
        path = os.path.join(root, child_rel)
        st = os.lstat(path)
        yield child_rel, path, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, child_rel)


def write_diff(
    upper: Path, out: BinaryIO, skip_empty: frozenset[str] = frozenset()
) -> int:
    """Write the overlay upper directory ``upper`` to ``out`` as an OCI layer tar.

    Empty regular files named in ``skip_empty`` (relative paths) are left
    out: they are mount points the runtime made, not the container's work.
    Returns the number of entries written (0: nothing changed).
    """
    entries = 0
    hardlinks: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for rel, path, st in _walk(str(upper)):
            if rel in skip_empty and stat.S_ISREG(st.st_mode) and st.st_size == 0:
                continue
            parent, base = os.path.split(rel)
            if _is_whiteout(st):
                info = tarfile.TarInfo(os.path.join(parent, WHITEOUT_PREFIX + base))
                info.mtime = int(st.st_mtime)
                tar.addfile(info)
                entries += 1
                continue
            info = tarfile.TarInfo(rel)
            info.mode = stat.S_IMODE(st.st_mode)
            info.uid, info.gid = st.st_uid, st.st_gid
            info.uname = info.gname = ""
            info.mtime = int(st.st_mtime)
            info.pax_headers = _pax_xattrs(path)
            data: BinaryIO | None = None
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
            elif stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in hardlinks:
                    info.type = tarfile.LNKTYPE
                    info.linkname = hardlinks[key]
                else:
                    hardlinks[key] = rel
                    info.size = st.st_size
                    data = open(path, "rb")  # noqa: SIM115 - closed below
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                info.type = (
                    tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
                )
                info.devmajor, info.devminor = (
                    os.major(st.st_rdev),
                    os.minor(st.st_rdev),
                )
            elif stat.S_ISFIFO(st.st_mode):
                info.type = tarfile.FIFOTYPE
            else:
                log.debug("skipping socket %s in diff", rel)
                continue
            try:
                tar.addfile(info, data)
            finally:
                if data is not None:
                    data.close()
            entries += 1
            if stat.S_ISDIR(st.st_mode) and _is_opaque(path):
                marker = tarfile.TarInfo(f"{rel}/{OPAQUE_MARKER}")
                marker.mtime = info.mtime
                tar.addfile(marker)
                entries += 1
    return entries


def remove_tree(path: Path) -> None:
    """Remove an unpacked layer; read-only modes do not stop root."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
