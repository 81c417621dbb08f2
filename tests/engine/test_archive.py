"""docker cp, export and diff against the real engine and kernel."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.containers.archive import base_name, go_file_mode, open_in_root
from tests.support.engine import EngineProcess, UnixHTTPConnection


def test_go_file_mode_bits() -> None:
    assert go_file_mode(stat.S_IFDIR | 0o755) == (1 << 31) | 0o755
    assert go_file_mode(stat.S_IFLNK | 0o777) == (1 << 27) | 0o777
    assert go_file_mode(stat.S_IFREG | 0o4755) == (1 << 23) | 0o755


def test_base_name_follows_go() -> None:
    assert base_name("/etc/passwd") == "passwd"
    assert base_name("/etc/") == "etc"
    assert base_name("/etc/.") == "."
    assert base_name("/") == "/"


def test_open_in_root_keeps_symlinks_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("inside\n")
    (tmp_path / "hostname").write_text("outside\n")
    (root / "up").symlink_to("../../../../etc")
    (root / "abs").symlink_to("/etc")
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for path in (
            "../etc/hostname",
            "up/hostname",
            "abs/hostname",
            "/../etc/hostname",
        ):
            fd = open_in_root(root_fd, path, os.O_RDONLY)
            with os.fdopen(fd) as f:
                assert f.read() == "inside\n", path
        with pytest.raises(FileNotFoundError):
            open_in_root(root_fd, "../hostname", os.O_RDONLY)
    finally:
        os.close(root_fd)


@pytest.fixture
def box(engine: EngineProcess, busybox: str) -> Iterator[str]:
    name = "cp-box"
    engine.docker("run", "-d", "--name", name, busybox, "sleep", "300", check=True)
    yield name
    engine.docker("rm", "-f", name)


@pytest.mark.root
def test_cp_file_both_ways(engine: EngineProcess, box: str, tmp_path: Path) -> None:
    source = tmp_path / "file.txt"
    source.write_text("hello\n")
    engine.docker("cp", str(source), f"{box}:/tmp/file.txt", check=True)
    assert engine.docker("exec", box, "cat", "/tmp/file.txt").stdout == "hello\n"
    owner = engine.docker("exec", box, "stat", "-c", "%u:%g", "/tmp/file.txt")
    assert owner.stdout == "0:0\n"
    back = tmp_path / "back.txt"
    engine.docker("cp", f"{box}:/tmp/file.txt", str(back), check=True)
    assert back.read_text() == "hello\n"


@pytest.mark.root
def test_cp_directory_both_ways(
    engine: EngineProcess, box: str, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a").write_text("a\n")
    (tree / "sub" / "b").write_text("b\n")
    (tree / "link").symlink_to("sub/b")
    # /tmp exists: the tree goes inside it; /srv does not: the tree becomes it.
    engine.docker("cp", str(tree), f"{box}:/tmp", check=True)
    engine.docker("cp", str(tree), f"{box}:/srv", check=True)
    listing = engine.docker("exec", box, "find", "/tmp/tree", "/srv").stdout.split()
    assert sorted(listing) == [
        "/srv", "/srv/a", "/srv/link", "/srv/sub", "/srv/sub/b",
        "/tmp/tree", "/tmp/tree/a", "/tmp/tree/link", "/tmp/tree/sub", "/tmp/tree/sub/b",
    ]  # fmt: skip
    assert engine.docker("exec", box, "cat", "/tmp/tree/link").stdout == "b\n"
    out = tmp_path / "out"
    engine.docker("cp", f"{box}:/tmp/tree", str(out), check=True)
    assert (out / "sub" / "b").read_text() == "b\n"
    assert os.readlink(out / "link") == "sub/b"


@pytest.mark.root
def test_cp_into_a_stopped_container_and_its_volume(
    engine: EngineProcess, busybox: str, tmp_path: Path
) -> None:
    name = "cp-stopped"
    engine.docker("create", "--name", name, "-v", "cpvol:/data", busybox,
                  "cat", "/tmp/in.txt", "/data/in.txt", check=True)  # fmt: skip
    try:
        source = tmp_path / "in.txt"
        source.write_text("copied\n")
        engine.docker("cp", str(source), f"{name}:/tmp/in.txt", check=True)
        engine.docker("cp", str(source), f"{name}:/data/in.txt", check=True)
        result = engine.docker("start", "-a", name)
        assert result.stdout == "copied\ncopied\n", result.stderr
        out = tmp_path / "out.txt"
        engine.docker("cp", f"{name}:/tmp/in.txt", str(out), check=True)
        assert out.read_text() == "copied\n"
    finally:
        engine.docker("rm", "-f", "-v", name)
        engine.docker("volume", "rm", "cpvol")


@pytest.mark.root
def test_cp_cannot_escape_the_rootfs(
    engine: EngineProcess, box: str, tmp_path: Path
) -> None:
    engine.docker(
        "exec", box, "sh", "-c",
        "echo container > /etc/marker; ln -s /../../../../../etc /tmp/escape",
        check=True,
    )  # fmt: skip
    for source in ("/tmp/escape/marker", "/../../../etc/marker"):
        out = tmp_path / "marker"
        engine.docker("cp", f"{box}:{source}", str(out), check=True)
        assert out.read_text() == "container\n"
        out.unlink()
    # Through the same link, a copy in lands in the container, not the host.
    planted = tmp_path / "planted"
    planted.write_text("x\n")
    engine.docker("cp", str(planted), f"{box}:/tmp/escape/", check=True)
    assert not Path("/etc/planted").exists()
    assert engine.docker("exec", box, "cat", "/etc/planted").stdout == "x\n"


def _put_archive(
    engine: EngineProcess, name: str, path: str, data: bytes
) -> tuple[int, bytes]:
    return engine.request(
        "PUT",
        f"/containers/{name}/archive?path={path}",
        data,
        {"Content-Type": "application/x-tar"},
    )


@pytest.mark.root
def test_hostile_tar_entries_are_refused(engine: EngineProcess, box: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../../escaped")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
    status, body = _put_archive(engine, box, "/tmp", buf.getvalue())
    assert status == 400
    assert b"outside" in body
    assert engine.docker("exec", box, "ls", "/escaped").returncode != 0


@pytest.mark.root
def test_archive_stat_header_and_errors(engine: EngineProcess, box: str) -> None:
    conn = UnixHTTPConnection(str(engine.socket))
    conn.request("HEAD", f"/containers/{box}/archive?path=/etc/passwd")
    response = conn.getresponse()
    response.read()
    assert response.status == 200
    header = json.loads(
        base64.b64decode(response.getheader("X-Docker-Container-Path-Stat") or "")
    )
    assert header["name"] == "passwd"
    assert header["mode"] == 0o644
    status, _ = engine.request("HEAD", f"/containers/{box}/archive?path=/nope")
    assert status == 404
    status, body = _put_archive(engine, box, "/etc/passwd", b"")
    assert status == 400
    assert b"not a directory" in body
    status, _ = engine.request("GET", "/containers/no-such-box/archive?path=/")
    assert status == 404


@pytest.mark.root
def test_docker_diff_and_export(
    engine: EngineProcess, box: str, tmp_path: Path
) -> None:
    engine.docker(
        "exec", box, "sh", "-c", "echo new > /tmp/new; rm /etc/group; echo x >> /etc/passwd",
        check=True,
    )  # fmt: skip
    diff = engine.docker("diff", box).stdout.splitlines()
    assert "A /tmp/new" in diff
    assert "D /etc/group" in diff
    assert "C /etc/passwd" in diff
    assert "A /etc/hosts" not in diff
    exported = tmp_path / "export.tar"
    engine.docker("export", "-o", str(exported), box, check=True)
    with tarfile.open(exported) as tar:
        names = tar.getnames()
    assert "bin/busybox" in names
    assert "tmp/new" in names
    assert "etc/group" not in names


@pytest.mark.root
def test_export_of_a_stopped_container(
    engine: EngineProcess, busybox: str, tmp_path: Path
) -> None:
    name = "export-stopped"
    engine.docker(
        "run", "--name", name, busybox, "sh", "-c", "echo hi > /made", check=True
    )
    try:
        conn = UnixHTTPConnection(str(engine.socket))
        conn.request("GET", f"/containers/{name}/export")
        response = conn.getresponse()
        assert response.status == 200
        with tarfile.open(fileobj=io.BytesIO(response.read())) as tar:
            made = tar.extractfile("made")
            assert made is not None and made.read() == b"hi\n"
    finally:
        engine.docker("rm", "-f", name)


def _tar_of(name: str, data: bytes, uid: int = 1234) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.uid = info.gid = uid
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.root
def test_no_overwrite_dir_non_dir(engine: EngineProcess, box: str) -> None:
    status, body = _put_archive(
        engine, box, "/&noOverwriteDirNonDir=true", _tar_of("tmp", b"x")
    )
    assert status == 400
    assert b"cannot overwrite directory" in body
    assert engine.docker("exec", box, "test", "-d", "/tmp").returncode == 0


@pytest.mark.root
def test_copy_uid_gid_uses_the_container_user(
    engine: EngineProcess, busybox: str
) -> None:
    name = "cp-user"
    engine.docker(
        "run", "-d", "--name", name, "-u", "nobody", busybox, "sleep", "300",
        check=True,
    )  # fmt: skip
    try:
        status, _ = _put_archive(
            engine, name, "/tmp&copyUIDGID=true", _tar_of("f", b"1")
        )
        assert status == 200
        status, _ = _put_archive(engine, name, "/tmp", _tar_of("g", b"2"))
        assert status == 200
        owners = engine.docker(
            "exec", name, "stat", "-c", "%n %u:%g", "/tmp/f", "/tmp/g"
        )
        assert owners.stdout.splitlines() == ["/tmp/f 65534:65534", "/tmp/g 0:0"]
    finally:
        engine.docker("rm", "-f", name)
