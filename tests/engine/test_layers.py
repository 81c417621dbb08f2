"""Layer tars in and out of overlayfs directories (engine/images/layers.py).

These run against the real kernel: whiteouts are character devices, opaque
directories carry a trusted.* xattr and the proof is a real overlay mount,
so they need root.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from engine.errors import InvalidParameter
from engine.images import layers
from engine.images.blobs import BlobStore
from engine.images.reference import parse

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip(
            "needs root: whiteouts are device nodes, opaque dirs trusted xattrs"
        )


def make_tar(*entries: tuple[str, str, object], **extra: object) -> bytes:
    """A tar from (name, kind, payload): kind is file, dir, sym, link, chr, fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            info.mode = 0o644
            data = None
            if kind == "file":
                data = (
                    payload
                    if isinstance(payload, bytes)
                    else str(payload or "").encode()
                )
                info.size = len(data)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            elif kind == "sym":
                info.type = tarfile.SYMTYPE
                info.linkname = str(payload)
            elif kind == "link":
                info.type = tarfile.LNKTYPE
                info.linkname = str(payload)
            elif kind == "chr":
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = payload  # type: ignore[misc]
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def unpack(data: bytes, root: Path) -> layers.UnpackStats:
    root.mkdir(parents=True, exist_ok=True)
    return layers.unpack(io.BytesIO(data), root)


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[list[Path]]:
    """Mount points to clean up, whatever the test did."""
    points: list[Path] = []
    yield points
    for point in points:
        subprocess.run(["umount", str(point)], check=False, capture_output=True)


def test_unpack_keeps_owner_mode_mtime_hardlinks_devices_xattrs(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo("srv")
        d.type, d.mode, d.mtime, d.uid, d.gid = (
            tarfile.DIRTYPE,
            0o750,
            1600000000,
            33,
            34,
        )
        tar.addfile(d)
        f = tarfile.TarInfo("srv/tool")
        f.size, f.mode, f.mtime, f.uid, f.gid = 3, 0o4755, 1600000001, 1000, 1001
        f.pax_headers = {"SCHILY.xattr.user.note": "hello"}
        tar.addfile(f, io.BytesIO(b"abc"))
        h = tarfile.TarInfo("srv/tool2")
        h.type, h.linkname = tarfile.LNKTYPE, "srv/tool"
        tar.addfile(h)
        n = tarfile.TarInfo("dev/null")
        n.type, n.devmajor, n.devminor, n.mode = tarfile.CHRTYPE, 1, 3, 0o666
        tar.addfile(n)
    root = tmp_path / "diff"
    stats = unpack(buf.getvalue(), root)

    tool = root / "srv/tool"
    st = tool.lstat()
    assert (st.st_uid, st.st_gid) == (1000, 1001)
    assert stat.S_IMODE(st.st_mode) == 0o4755  # setuid survives the chown
    assert int(st.st_mtime) == 1600000001
    assert st.st_nlink == 2 and (root / "srv/tool2").stat().st_ino == st.st_ino
    assert os.getxattr(tool, "user.note") == b"hello"
    srv = (root / "srv").lstat()
    assert stat.S_IMODE(srv.st_mode) == 0o750 and int(srv.st_mtime) == 1600000000
    null = (root / "dev/null").lstat()
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1
    assert stats.size == 3
    assert (
        stats.diff_id
        == "sha256:" + __import__("hashlib").sha256(buf.getvalue()).hexdigest()
    )


@pytest.mark.parametrize("compress", ["gzip", "zstd", ""])
def test_compressed_layers_hash_to_the_plain_tar(tmp_path: Path, compress: str) -> None:
    plain = make_tar(("a.txt", "file", "x" * 1000))
    data = {
        "gzip": lambda b: gzip.compress(b),
        "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
        "": lambda b: b,
    }[compress](plain)
    stats = unpack(data, tmp_path / "d")
    assert stats.compression == compress
    assert stats.diff_id == "sha256:" + __import__("hashlib").sha256(plain).hexdigest()
    assert stats.tar_size == len(plain)
    assert (tmp_path / "d/a.txt").read_text() == "x" * 1000


@pytest.mark.parametrize(
    ("entries", "needle"),
    [
        ([("../evil", "file", "x")], "'../evil'"),
        ([("a/../../evil", "file", "x")], "'a/../../evil'"),
        ([("/etc/evil", "file", "x")], "'/etc/evil'"),
        ([("escape", "sym", "/tmp"), ("escape/evil", "file", "x")], "'escape/evil'"),
        ([("up", "sym", ".."), ("up/evil", "file", "x")], "'up/evil'"),
        ([("hl", "link", "../../etc/passwd")], "'hl'"),
        ([("hl", "link", "/etc/passwd")], "'hl'"),
        ([("escape", "sym", "/etc"), ("hl", "link", "escape/passwd")], "'hl'"),
        ([("dir", "dir", None), ("dir", "link", "dir")], "'dir'"),
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "absolute",
        "symlink-abs-parent",
        "symlink-rel-parent",
        "hardlink-dotdot",
        "hardlink-absolute",
        "hardlink-through-symlink",
        "hardlink-to-dir",
    ],
)
def test_hostile_entries_are_refused(
    tmp_path: Path, entries: list[tuple[str, str, object]], needle: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(InvalidParameter) as caught:
        unpack(make_tar(*entries), tmp_path / "root")
    assert needle in caught.value.message
    assert "refusing layer entry" in caught.value.message
    assert not (tmp_path / "evil").exists()
    assert list(outside.iterdir()) == []


def test_whiteouts_become_overlay_form_and_hide_lower_files(
    tmp_path: Path, mounted: list[Path]
) -> None:
    lower = tmp_path / "l1"
    upper = tmp_path / "l2"
    unpack(
        make_tar(
            ("etc", "dir", None),
            ("etc/motd", "file", "hi"),
            ("etc/keep", "file", "k"),
            ("var/cache/old", "file", "o"),
            ("var/cache/older", "file", "o"),
        ),
        lower,
    )
    unpack(
        make_tar(
            ("etc/.wh.motd", "file", ""),
            ("var/cache", "dir", None),
            ("var/cache/.wh..wh..opq", "file", ""),
            ("var/cache/new", "file", "n"),
        ),
        upper,
    )
    whiteout = (upper / "etc/motd").lstat()
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert os.getxattr(upper / "var/cache", "trusted.overlay.opaque") == b"y"
    assert not (upper / "etc/.wh.motd").exists()

    merged = tmp_path / "merged"
    merged.mkdir()
    subprocess.run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={upper}:{lower}",
            str(merged),
        ],
        check=True,
    )
    mounted.append(merged)
    assert not (merged / "etc/motd").exists()
    assert (merged / "etc/keep").read_text() == "k"
    assert sorted(os.listdir(merged / "var/cache")) == ["new"]


def test_write_diff_round_trips_whiteouts(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/new").write_text("n")
    os.link(upper / "etc/new", upper / "etc/new-link")
    os.mknod(upper / "etc/gone", stat.S_IFCHR, os.makedev(0, 0))
    (upper / "opq").mkdir()
    os.setxattr(upper / "opq", "trusted.overlay.opaque", b"y")
    os.symlink("/bin/sh", upper / "sh")
    os.setxattr(upper / "etc/new", "trusted.overlay.origin", b"x")

    blobs = BlobStore(tmp_path / "store")
    writer = blobs.ingest(None)
    count = layers.write_diff(upper, writer)  # type: ignore[arg-type]
    digest = writer.commit()
    assert count == 7

    with tarfile.open(blobs.path(digest)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert "etc/.wh.gone" in members
    assert "opq/.wh..wh..opq" in members
    assert members["etc/new-link"].islnk()
    assert members["sh"].issym()
    assert not any(
        "trusted.overlay" in k for m in members.values() for k in m.pax_headers
    )

    again = tmp_path / "again"
    again.mkdir()
    with open(blobs.path(digest), "rb") as f:
        stats = layers.unpack(f, again)
    assert stats.diff_id == digest
    assert stat.S_ISCHR((again / "etc/gone").lstat().st_mode)
    assert os.getxattr(again / "opq", "trusted.overlay.opaque") == b"y"


def test_write_diff_of_empty_upper_is_empty(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    assert layers.write_diff(upper, io.BytesIO()) == 0  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected", "familiar"),
    [
        ("nginx", "docker.io/library/nginx:latest", "nginx:latest"),
        (
            "localhost:5000/my-image",
            "localhost:5000/my-image:latest",
            "localhost:5000/my-image:latest",
        ),
        ("host.io/a/b:tag", "host.io/a/b:tag", "host.io/a/b:tag"),
        ("user/app:1.0", "docker.io/user/app:1.0", "user/app:1.0"),
        (
            "index.docker.io/library/busybox",
            "docker.io/library/busybox:latest",
            "busybox:latest",
        ),
        (
            "busybox@sha256:" + "a" * 64,
            "docker.io/library/busybox@sha256:" + "a" * 64,
            "busybox@sha256:" + "a" * 64,
        ),
    ],
)
def test_reference_normalisation(text: str, expected: str, familiar: str) -> None:
    ref = parse(text)
    assert str(ref) == expected
    assert ref.familiar == familiar


@pytest.mark.parametrize(
    "text", ["UPPER", "a:b:c", "x@sha256:12", "-lead", "a" * 64, ""]
)
def test_reference_errors(text: str) -> None:
    with pytest.raises(InvalidParameter, match="invalid"):
        parse(text)
