"""The build context: the files a Dockerfile's COPY and ADD may read.

Clients send the context as a tar in the request body, plain or compressed
(gzip, bzip2, xz), or name a ``remote`` URL to fetch it from. The builder
unpacks it into a private directory, reads the Dockerfile out of it and then
drops what ``.dockerignore`` excludes::

    ctx = await BuildContext.receive(req_stream, workdir)
    text = ctx.dockerfile("Dockerfile")
    ctx.resolve("src/app.py")            # -> Path inside ctx.root

A body that is not an archive is taken as the Dockerfile itself (``remote``
pointing at a Dockerfile, or a client that sends one bare).
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from engine.build.dockerignore import IgnoreMatcher, clean
from engine.build.sources import link_source, unpack_target
from engine.errors import InvalidParameter, Unsupported

log = logging.getLogger(__name__)

DEFAULT_DOCKERFILE = "Dockerfile"
IGNORE_FILE = ".dockerignore"


class ContextError(InvalidParameter):
    """The context or the Dockerfile in it cannot be used."""


class BuildContext:
    """An unpacked build context under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ignore = IgnoreMatcher([])
        self._dockerfile_bytes: bytes | None = None

    # -- receiving ---------------------------------------------------------

    @classmethod
    async def receive(cls, body: AsyncIterator[bytes], workdir: Path) -> BuildContext:
        """Store the request body in ``workdir`` and unpack it.

        Raises ContextError when the body is neither an archive nor text.
        """
        import asyncio

        workdir.mkdir(parents=True, exist_ok=True)
        raw = workdir / "context.tar"
        with open(raw, "wb") as f:
            async for chunk in body:
                await asyncio.to_thread(f.write, chunk)
        ctx = cls(workdir / "root")
        await asyncio.to_thread(ctx._unpack, raw)
        raw.unlink(missing_ok=True)
        return ctx

    @classmethod
    async def fetch(cls, url: str, workdir: Path) -> BuildContext:
        """Download a ``remote`` context: a tar (maybe compressed) or a Dockerfile.

        Raises Unsupported for git repositories, ContextError when the
        download fails.
        """
        import asyncio

        if _is_git(url):
            raise Unsupported(
                f"git build contexts are not supported: {url}; clone the repository "
                "and build from the local directory"
            )
        if not url.startswith(("http://", "https://")):
            raise ContextError(f"unable to prepare context: unsupported remote {url!r}")
        workdir.mkdir(parents=True, exist_ok=True)
        raw = workdir / "context.tar"
        try:
            await asyncio.to_thread(_download, url, raw)
        except (OSError, urllib.error.URLError) as err:
            raise ContextError(
                f"unable to prepare context: unable to download remote context {url}: {err}"
            ) from err
        ctx = cls(workdir / "root")
        await asyncio.to_thread(ctx._unpack, raw)
        raw.unlink(missing_ok=True)
        return ctx

    def _unpack(self, raw: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        size = _decompress_and_pad(raw)
        try:
            archive = tarfile.open(raw, "r:*")  # noqa: SIM115 - closed below
        except tarfile.TarError:
            archive = None
        if archive is None:
            # Not an archive: the body is the Dockerfile itself.
            data = raw.read_bytes()[:size]
            if b"\0" in data[:8192]:
                raise ContextError(
                    "unable to prepare context: the request body is neither a tar "
                    "archive nor a Dockerfile"
                )
            self._dockerfile_bytes = data
            return
        try:
            with archive:
                for member in archive:
                    self._extract(archive, member)
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as err:
            raise ContextError(
                f"unable to prepare context: the build context is not a valid tar: {err}"
            ) from err

    def _extract(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        target = unpack_target(self.root, member.name)
        if target is None:
            log.debug("skipping context entry %s: outside the context", member.name)
            return
        if member.isdir():
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                target.unlink()
            target.mkdir(exist_ok=True)
            os.chmod(target, member.mode & 0o7777)
            return
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif os.path.lexists(target):
            target.unlink()
        if member.issym():
            os.symlink(member.linkname, target)
        elif member.islnk():
            source = link_source(self.root, member.linkname)
            if source is None:
                return
            os.link(source, target, follow_symlinks=False)
        elif member.isreg():
            src = archive.extractfile(member)
            assert src is not None
            with open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
            os.chmod(target, member.mode & 0o7777)
        else:
            # Devices and fifos have no place in an image built from a context.
            return
        os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)

    # -- the Dockerfile and .dockerignore ----------------------------------

    def dockerfile(self, name: str | None) -> bytes:
        """The Dockerfile's bytes, then apply ``.dockerignore`` to the context.

        Raises ContextError when the Dockerfile is missing, with docker's
        wording.
        """
        if self._dockerfile_bytes is not None:
            return self._dockerfile_bytes
        wanted = name or DEFAULT_DOCKERFILE
        path = self._inside(wanted)
        if (path is None or not path.is_file()) and not name:
            path = self._inside("dockerfile")
        if path is None or not path.is_file():
            raise ContextError(f"Cannot locate specified Dockerfile: {wanted}")
        data = path.read_bytes()
        self._apply_ignore()
        return data

    def _inside(self, name: str) -> Path | None:
        relative = clean(name)
        if relative.startswith(".."):
            return None
        return self.root / relative

    def _apply_ignore(self) -> None:
        ignore_file = self.root / IGNORE_FILE
        if not ignore_file.is_file():
            return
        self.ignore = IgnoreMatcher.from_text(ignore_file.read_bytes())
        if not self.ignore.patterns:
            return
        for dirpath, dirnames, filenames in os.walk(self.root, topdown=True):
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in list(dirnames):
                rel = clean(f"{rel_dir}/{name}")
                if self.ignore.excluded(rel) and not self.ignore.may_include_below(rel):
                    shutil.rmtree(Path(dirpath) / name)
                    dirnames.remove(name)
            for name in filenames:
                rel = clean(f"{rel_dir}/{name}")
                if self.ignore.excluded(rel):
                    (Path(dirpath) / name).unlink()

    # -- sources for COPY and ADD ------------------------------------------

    def resolve(self, source: str) -> Path:
        """The path of a COPY source inside the context, not following links out.

        Raises ContextError for a path that leaves the context.
        """
        raw = source.replace("\\", "/")
        normal = os.path.normpath("/" + raw)
        if os.path.normpath(raw).startswith("../") or os.path.normpath(raw) == "..":
            raise ContextError(f"forbidden path outside the build context: {source} ()")
        return self.root / normal.lstrip("/")

    def cleanup(self) -> None:
        shutil.rmtree(self.root.parent, ignore_errors=True)


COMPRESSIONS: dict[bytes, Callable[..., Any]] = {
    b"\x1f\x8b": gzip.open,
    b"BZh": bz2.open,
    b"\xfd7zXZ\x00": lzma.open,
}


def _decompress_and_pad(raw: Path) -> int:
    """Make ``raw`` a plain tar that Python's reader accepts to its end.

    The docker CLI rewrites the context tar when the Dockerfile comes from
    outside it (``-f ../Dockerfile``) and sends it without the padding of
    the last entry nor the end-of-archive blocks; Go's reader tolerates
    that, Python's does not, so the zeros are added here.
    """
    with open(raw, "rb") as f:
        head = f.read(6)
    for magic, opener in COMPRESSIONS.items():
        if head.startswith(magic):
            plain = raw.with_suffix(".plain")
            with opener(raw, "rb") as src, open(plain, "wb") as out:
                try:
                    shutil.copyfileobj(src, out, 1024 * 1024)
                except EOFError:
                    pass  # a truncated stream: keep what was there
                except (OSError, zlib.error, lzma.LZMAError) as err:
                    raise ContextError(
                        f"unable to prepare context: cannot decompress the build context: {err}"
                    ) from err
            os.replace(plain, raw)
            break
    size = raw.stat().st_size
    if size % 512 and not _entries_complete(raw, size):
        raise ContextError(
            "unable to prepare context: the build context is not a valid tar: "
            "it ends inside an entry"
        )
    with open(raw, "ab") as f:
        f.write(b"\0" * ((-size) % 512 + 1024))
    return size


def _entries_complete(raw: Path, size: int) -> bool:
    """Whether every entry's data is all there (only the padding missing)."""
    offset = 0
    with open(raw, "rb") as f:
        while offset + 512 <= size:
            f.seek(offset)
            header = f.read(512)
            if header == b"\0" * 512:
                return True
            if header[257:262] != b"ustar":
                return True  # not a tar we can check: the caller decides
            field = header[124:136]
            try:
                if field[0] & 0x80:
                    length = int.from_bytes(field[1:], "big")
                else:
                    length = int(field.split(b"\0")[0].strip() or b"0", 8)
            except ValueError:
                return True  # not a tar at all: the caller decides
            if offset + 512 + length > size:
                return False
            offset += 512 + length + (-length) % 512
    return True


def _is_git(url: str) -> bool:
    return url.startswith(("git://", "git@", "github.com/")) or url.split("#", 1)[
        0
    ].endswith(".git")


def _download(url: str, target: Path) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "dockyard-builder"})
    with (
        urllib.request.urlopen(request, timeout=60) as response,
        open(target, "wb") as out,
    ):
        shutil.copyfileobj(response, out, 1024 * 1024)


def is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False
