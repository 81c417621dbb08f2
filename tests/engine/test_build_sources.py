"""COPY/ADD planning and the build context, on plain directories."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.build.context import BuildContext, ContextError
from engine.build.sources import (
    CopyError,
    CopyPlan,
    match_sources,
    scoped_path,
    unpack_archive,
)


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def names(plan: CopyPlan) -> list[str]:
    return sorted(plan.entries)


def test_file_into_directory_and_renamed(tmp_path: Path) -> None:
    ctx = tree(tmp_path, {"a.txt": "a"})
    into = CopyPlan(dest="/app/", workdir="/", owner=None)
    into.add_source(ctx / "a.txt")
    assert names(into) == ["app", "app/a.txt"]
    renamed = CopyPlan(dest="/app/b.txt", workdir="/", owner=None)
    renamed.add_source(ctx / "a.txt")
    assert names(renamed) == ["app", "app/b.txt"]


def test_relative_destination_starts_at_workdir(tmp_path: Path) -> None:
    ctx = tree(tmp_path, {"a.txt": "a"})
    plan = CopyPlan(dest="sub/", workdir="/srv", owner=None)
    plan.add_source(ctx / "a.txt")
    assert "srv/sub/a.txt" in plan.entries


def test_directory_copies_its_contents(tmp_path: Path) -> None:
    ctx = tree(tmp_path, {"src/x/y.txt": "y", "src/z.txt": "z"})
    plan = CopyPlan(dest="/dst", workdir="/", owner=(1000, 1000))
    plan.add_source(ctx / "src")
    assert names(plan) == ["dst", "dst/x", "dst/x/y.txt", "dst/z.txt"]
    assert {(e.uid, e.gid) for e in plan.entries.values()} == {(1000, 1000)}


def test_existing_directory_in_image_takes_the_file(tmp_path: Path) -> None:
    ctx = tree(tmp_path, {"a.txt": "a"})
    image_dir = os.lstat(tmp_path)

    def lookup(path: str) -> os.stat_result | None:
        return image_dir if path == "etc" else None

    plan = CopyPlan(dest="/etc", workdir="/", owner=None, lookup=lookup)
    plan.add_source(ctx / "a.txt")
    assert "etc/a.txt" in plan.entries


def test_several_sources_need_a_directory(tmp_path: Path) -> None:
    plan = CopyPlan(dest="/file", workdir="/", owner=None)
    with pytest.raises(CopyError, match="must be a directory and end with a /"):
        plan.check_many(2, "COPY")


def test_digest_follows_content_and_mode(tmp_path: Path) -> None:
    ctx = tree(tmp_path, {"a.txt": "a"})

    def digest() -> str:
        plan = CopyPlan(dest="/app/", workdir="/", owner=None)
        plan.add_source(ctx / "a.txt")
        return plan.digest()

    first = digest()
    assert digest() == first
    (ctx / "a.txt").write_text("b")
    second = digest()
    assert second != first
    (ctx / "a.txt").chmod(0o600)
    assert digest() != second


def test_chmod_and_tar(tmp_path: Path) -> None:
    ctx = tree(tmp_path / "ctx", {"run.sh": "echo"})
    plan = CopyPlan(dest="/bin/", workdir="/", owner=(0, 0), chmod=0o755)
    plan.add_source(ctx / "run.sh")
    out = tmp_path / "layer.tar"
    plan.write_tar(out)
    with tarfile.open(out) as tar:
        member = tar.getmember("bin/run.sh")
        assert stat.S_IMODE(member.mode) == 0o755
        assert tar.extractfile(member).read() == b"echo"  # type: ignore[union-attr]


def test_globs_match_one_level_and_hidden_files(tmp_path: Path) -> None:
    ctx = tree(tmp_path, {"a.txt": "", ".hidden.txt": "", "sub/b.txt": "", "c.md": ""})
    assert [rel for _p, rel in match_sources(ctx, "*.txt")] == [".hidden.txt", "a.txt"]
    assert [rel for _p, rel in match_sources(ctx, "sub/*.txt")] == ["sub/b.txt"]
    assert match_sources(ctx, "nothing*") == []


def test_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    root = tree(tmp_path / "root", {"etc/passwd": "inside\n", "real/f": "f"})
    os.symlink("/etc", root / "abs")
    os.symlink("../../real", root / "etc" / "rel")
    assert scoped_path(root, "abs/passwd") == root / "etc" / "passwd"
    assert scoped_path(root, "etc/rel/f") == root / "real" / "f"
    ((path, _rel),) = match_sources(root, "abs/passwd")
    assert path.read_text() == "inside\n"


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _tar(files: dict[str, bytes], pad: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    if not pad:
        # What the docker CLI sends with -f from outside the context: the
        # last entry unpadded and no end-of-archive blocks.
        last = max(raw.rfind(data) + len(data) for data in files.values())
        raw = raw[:last]
    return raw


def receive(data: bytes, workdir: Path) -> BuildContext:
    return asyncio.run(BuildContext.receive(_body(data), workdir))


def test_context_reads_dockerfile_and_applies_ignore(tmp_path: Path) -> None:
    data = _tar(
        {
            "Dockerfile": b"FROM x\n",
            ".dockerignore": b"*.log\nDockerfile\n",
            "keep.txt": b"k",
            "drop.log": b"d",
        },
        pad=False,
    )
    ctx = receive(data, tmp_path / "work")
    assert ctx.dockerfile(None) == b"FROM x\n"
    assert (ctx.root / "keep.txt").exists()
    assert not (ctx.root / "drop.log").exists()
    with pytest.raises(ContextError, match="forbidden path outside the build context"):
        ctx.resolve("../x")


def test_bare_dockerfile_body_and_missing_dockerfile(tmp_path: Path) -> None:
    ctx = receive(b"FROM x\nRUN true\n", tmp_path / "a")
    assert ctx.dockerfile(None) == b"FROM x\nRUN true\n"
    empty = receive(_tar({"a": b"a"}), tmp_path / "b")
    with pytest.raises(
        ContextError, match="Cannot locate specified Dockerfile: Dockerfile"
    ):
        empty.dockerfile(None)


def test_corrupt_context_is_a_client_error(tmp_path: Path) -> None:
    broken = b"\x1f\x8b" + b"\x00" * 40
    with pytest.raises(ContextError, match="unable to prepare context"):
        receive(broken, tmp_path / "gz")
    good = _tar({"Dockerfile": b"FROM x\n" * 200})
    with pytest.raises(ContextError, match="not a valid tar"):
        receive(good[:700], tmp_path / "cut")


def _planting_tar(outside: Path) -> bytes:
    """A tar that plants a symlink to ``outside`` and then writes through it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("escape")
        link.type = tarfile.SYMTYPE
        link.linkname = str(outside)
        tar.addfile(link)
        for name in ("escape/pwned", "Dockerfile"):
            data = b"FROM x\n"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        hard = tarfile.TarInfo("stolen")
        hard.type = tarfile.LNKTYPE
        hard.linkname = "escape/secret"
        tar.addfile(hard)
    return buf.getvalue()


def test_context_never_writes_through_planted_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret\n")
    ctx = receive(_planting_tar(outside), tmp_path / "work")
    assert not (outside / "pwned").exists()
    assert not (ctx.root / "stolen").exists()
    assert ctx.dockerfile(None) == b"FROM x\n"


def test_add_archive_never_writes_through_planted_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret\n")
    archive = tmp_path / "evil.tar"
    archive.write_bytes(_planting_tar(outside))
    unpack_archive(archive, tmp_path / "unpacked")
    assert not (outside / "pwned").exists()
    assert (tmp_path / "unpacked" / "Dockerfile").read_bytes() == b"FROM x\n"
    assert not (tmp_path / "unpacked" / "stolen").exists()
