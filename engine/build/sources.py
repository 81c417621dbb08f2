"""COPY and ADD: from source paths to the entries of a new layer.

The builder never starts a container for COPY or ADD. It works out, from the
sources and the destination, the list of files the new layer holds (with the
owners and modes docker gives them), digests that list for the build cache,
then writes it as a tar for the image store::

    plan = CopyPlan(dest="/app/", workdir="/", owner=(0, 0))
    plan.add_source(ctx_root / "src", "src")
    key_part = plan.digest()            # changes when any file changes
    plan.write_tar(path)                # -> layer tar, parents included

Docker's rules, kept here: a directory source copies its *contents*; a file
lands at ``dest`` unless ``dest`` ends in ``/`` or is a directory already,
then at ``dest/<name>``; several sources need a ``dest/`` directory; missing
parents are created (root-owned, 0755); a relative ``dest`` starts at the
WORKDIR.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import stat
import tarfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path

from engine.build.dockerignore import clean, compile_pattern
from engine.errors import InvalidParameter

GLOB_CHARS = re.compile(r"[*?\[]")


class CopyError(InvalidParameter):
    """A COPY or ADD that cannot be done: missing source, bad destination."""


@dataclass
class Entry:
    """One tar entry of the new layer; ``name`` has no leading slash."""

    name: str
    kind: str  # "dir", "file", "symlink", "hardlink"
    mode: int
    uid: int
    gid: int
    mtime: float
    size: int = 0
    source: Path | None = None
    linkname: str = ""
    digest: str = ""


def unpack_target(root: Path, name: str) -> Path | None:
    """Where an archive entry may be written under ``root``, or None.

    None when a directory on the way is a symlink: writing through it could
    reach any file of the host (a context tar or an ADD archive is the
    client's to choose). Missing directories are created.
    """
    parts = [p for p in clean(name).split("/") if p and p != "."]
    if not parts:
        return None
    current = root
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink():
            return None
        if not current.exists():
            current.mkdir()
        elif not current.is_dir():
            return None
    return current / parts[-1]


def link_source(root: Path, name: str) -> Path | None:
    """The regular file a hard link entry points at, if it is safely inside ``root``."""
    source = unpack_target(root, name)
    if source is None:
        return None
    try:
        st = source.lstat()
    except OSError:
        return None
    return source if stat.S_ISREG(st.st_mode) else None


def scoped_path(root: Path, rel: str) -> Path:
    """``root/rel`` with every symlink on the way resolved inside ``root``.

    An absolute link target or one with ``..`` counts from ``root``, never
    from the host's own ``/``, as docker resolves paths in a context or an
    image. Gives up (returning the unresolved path) after 255 links.
    """
    parts = [p for p in rel.split("/") if p and p != "."]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError:
            resolved.append(part)
            continue
        hops += 1
        if hops > 255:
            return root.joinpath(*resolved, part, *parts)
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p and p != "."] + parts
    return root.joinpath(*resolved)


def match_sources(root: Path, pattern: str) -> list[tuple[Path, str]]:
    """Sources in ``root`` named by ``pattern`` (a path or a filepath.Match glob).

    Returns (path, relative name) pairs, sorted; empty when nothing matches.
    Symlinks on the way are followed inside ``root`` only.
    """
    rel = clean(pattern)
    if not GLOB_CHARS.search(rel):
        path = scoped_path(root, rel)
        return [(path, rel)] if os.path.lexists(path) else []
    regex = compile_pattern(rel)
    depth = rel.count("/") + 1
    found: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        level = 0 if rel_dir == "." else rel_dir.count("/") + 1
        for name in sorted(dirnames + filenames):
            candidate = name if rel_dir == "." else f"{rel_dir}/{name}"
            if regex.match(candidate):
                found.append((scoped_path(root, candidate), candidate))
        if level + 1 >= depth:
            dirnames.clear()
    return sorted(found, key=lambda item: item[1])


@dataclass
class CopyPlan:
    """The entries a COPY or ADD adds, built up source by source."""

    dest: str
    workdir: str
    owner: tuple[int, int] | None  # --chown, or None: keep (from) / root (context)
    chmod: int | None = None
    # Looks a path up in the image being built: its lstat, or None.
    lookup: Callable[[str], os.stat_result | None] = lambda _path: None
    entries: dict[str, Entry] = field(default_factory=dict)
    sources: int = 0
    kinds: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        dest = self.dest
        if not dest.startswith("/"):
            dest = posixpath.join(self.workdir or "/", dest)
        self.dest_is_dir = (
            dest.endswith("/") or dest.endswith("/.") or dest in ("/", ".")
        )
        self.target = posixpath.normpath(dest).lstrip("/")
        if self.target == ".":
            self.target = ""
        existing = self.lookup(self.target) if self.target else None
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            self.dest_is_dir = True
        if not self.target:
            self.dest_is_dir = True

    def check_many(self, count: int, keyword: str) -> None:
        if count > 1 and not self.dest_is_dir:
            raise CopyError(
                f"When using {keyword} with more than one source file, the destination must be a directory and end with a /"
            )

    # -- adding sources --

    def add_source(self, path: Path, keep_owner: bool = False, name: str = "") -> None:
        """Add one source: a directory's contents, or a file, or a symlink.

        ``name`` is the file's name as the Dockerfile gave it, which a
        resolved symlink's target may not share.
        """
        st = path.lstat()
        self.sources += 1
        if stat.S_ISDIR(st.st_mode):
            self.kinds.add("dir")
            self.add_directories(self.target)
            if self.target:
                self._add(self.target, path, st, keep_owner)
            self._add_tree(path, self.target, keep_owner)
            return
        self.kinds.add("file")
        name = name or path.name
        target = posixpath.join(self.target, name) if self.dest_is_dir else self.target
        self.add_directories(posixpath.dirname(target))
        self._add(target, path, st, keep_owner)

    def add_tree_into_dest(self, root: Path, keep_owner: bool) -> None:
        """An unpacked archive (ADD): its contents go below ``dest``."""
        self.sources += 1
        self.kinds.add("file")
        self.add_directories(self.target)
        self._add_tree(root, self.target, keep_owner)

    def add_file_as(
        self, path: Path, name: str, mode: int, mtime: float | None = None
    ) -> None:
        """A downloaded file (ADD <url>): ``name`` when dest is a directory."""
        self.sources += 1
        self.kinds.add("file")
        target = posixpath.join(self.target, name) if self.dest_is_dir else self.target
        self.add_directories(posixpath.dirname(target))
        st = path.stat()
        uid, gid = self.owner or (0, 0)
        self.entries[target] = Entry(
            name=target,
            kind="file",
            mode=self.chmod if self.chmod is not None else mode,
            uid=uid,
            gid=gid,
            mtime=mtime if mtime is not None else st.st_mtime,
            size=st.st_size,
            source=path,
            digest=_file_digest(path),
        )

    def _add_tree(self, root: Path, prefix: str, keep_owner: bool) -> None:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            base = prefix if rel_dir == "." else posixpath.join(prefix, rel_dir)
            for name in sorted(dirnames + filenames):
                full = Path(dirpath) / name
                self._add(
                    posixpath.join(base, name).lstrip("/"),
                    full,
                    full.lstat(),
                    keep_owner,
                )

    def _add(self, name: str, path: Path, st: os.stat_result, keep_owner: bool) -> None:
        if keep_owner and self.owner is None:
            uid, gid = st.st_uid, st.st_gid
        else:
            uid, gid = self.owner or (0, 0)
        mode = stat.S_IMODE(st.st_mode)
        if self.chmod is not None:
            mode = self.chmod
        entry = Entry(
            name=name, kind="file", mode=mode, uid=uid, gid=gid, mtime=st.st_mtime
        )
        if stat.S_ISDIR(st.st_mode):
            entry.kind = "dir"
        elif stat.S_ISLNK(st.st_mode):
            entry.kind = "symlink"
            entry.linkname = os.readlink(path)
            entry.mode = 0o777
        elif stat.S_ISREG(st.st_mode):
            entry.size = st.st_size
            entry.source = path
            entry.digest = _file_digest(path)
        else:
            # Devices, sockets and fifos are not copied, as with docker's tar.
            return
        self.entries[name] = entry

    def add_directories(self, directory: str) -> None:
        """Entries for ``directory`` and its parents, as they are in the image.

        Missing ones are created 0755, owned as the copied files are (docker
        chowns the directories it creates to ``--chown``'s user).
        """
        parts = [p for p in directory.split("/") if p]
        uid, gid = self.owner or (0, 0)
        for depth in range(1, len(parts) + 1):
            name = "/".join(parts[:depth])
            if name in self.entries:
                continue
            existing = self.lookup(name)
            if existing is not None and stat.S_ISDIR(existing.st_mode):
                self.entries[name] = _existing_dir(name, existing)
            else:
                self.entries[name] = Entry(name, "dir", 0o755, uid, gid, time.time())

    # -- results --

    def digest(self) -> str:
        """A digest of what this step writes: names, modes, owners, contents."""
        h = hashlib.sha256()
        for name in sorted(self.entries):
            e = self.entries[name]
            if e.kind == "dir" and e.source is None and e.name != self.target:
                # Synthesised parents carry the time of the build: leave it out.
                h.update(f"{name}\0dir\0{e.mode:o}\0{e.uid}:{e.gid}\n".encode())
                continue
            h.update(
                f"{name}\0{e.kind}\0{e.mode:o}\0{e.uid}:{e.gid}\0{e.size}\0"
                f"{e.linkname}\0{e.digest}\n".encode()
            )
        return h.hexdigest()

    def describe(self) -> str:
        """The ``file:<hash>``/``dir:<hash>`` docker shows in the history."""
        kind = (
            "multi" if self.sources > 1 else ("dir" if "dir" in self.kinds else "file")
        )
        return f"{kind}:{self.digest()}"

    def write_tar(self, path: Path) -> None:
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(self.entries):
                e = self.entries[name]
                info = tarfile.TarInfo(name)
                info.mode = e.mode
                info.uid, info.gid = e.uid, e.gid
                info.mtime = int(e.mtime)
                if e.kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif e.kind == "symlink":
                    info.type = tarfile.SYMTYPE
                    info.linkname = e.linkname
                    tar.addfile(info)
                else:
                    assert e.source is not None
                    info.size = e.size
                    with open(e.source, "rb") as src:
                        tar.addfile(info, src)


def _existing_dir(name: str, st: os.stat_result) -> Entry:
    return Entry(
        name, "dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime
    )


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def is_archive(path: Path) -> bool:
    """Whether ADD should unpack ``path``: a tar, maybe gzip, bzip2 or xz."""
    try:
        with tarfile.open(path, "r:*") as tar:
            return tar.next() is not None
    except (tarfile.TarError, OSError, EOFError):
        return False


def unpack_archive(path: Path, target: Path) -> None:
    """Unpack a local archive for ADD, keeping owners, modes and times.

    Entries that would leave ``target`` or pass through a symlink the
    archive planted are skipped, as are devices and fifos.
    """
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            if member.isdev() or member.isfifo():
                continue
            dest = unpack_target(target, member.name)
            if dest is None:
                continue
            if member.isdir():
                if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
                    dest.unlink()
                dest.mkdir(exist_ok=True)
            else:
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
                elif os.path.lexists(dest):
                    dest.unlink()
                if member.issym():
                    os.symlink(member.linkname, dest)
                elif member.islnk():
                    source = link_source(target, member.linkname)
                    if source is not None:
                        os.link(source, dest, follow_symlinks=False)
                    continue
                else:
                    src = tar.extractfile(member)
                    if src is None:
                        continue
                    with open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, 1024 * 1024)
            if not member.issym():
                os.chmod(dest, member.mode & 0o7777)
            os.lchown(dest, member.uid, member.gid)
            os.utime(dest, (member.mtime, member.mtime), follow_symlinks=False)


def fetch_url(url: str, target: Path) -> float | None:
    """Download ``url`` for ADD; returns its Last-Modified time, also set as mtime."""
    request = urllib.request.Request(url, headers={"User-Agent": "dockyard-builder"})
    with (
        urllib.request.urlopen(request, timeout=60) as response,
        open(target, "wb") as out,
    ):
        shutil.copyfileobj(response, out, 1024 * 1024)
        modified = response.headers.get("Last-Modified")
    if modified:
        with suppress(TypeError, ValueError):
            stamp = parsedate_to_datetime(modified).timestamp()
            os.utime(target, (stamp, stamp))
            return stamp
    return None
