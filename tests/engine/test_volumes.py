"""Volumes: the store on its own, then through the real docker CLI."""

from __future__ import annotations

import asyncio
import json
import types
from pathlib import Path

import pytest

from engine.config import Config
from engine.errors import Conflict, InvalidParameter, NotFound, Unsupported
from engine.events import EventBus
from engine.storage.volumes import ANONYMOUS_LABEL, VolumeStore
from tests.support.engine import EngineProcess


class _Users:
    """Stands in for the container manager's ``using_volume``."""

    def __init__(self) -> None:
        self.users: dict[str, list[str]] = {}

    def using_volume(self, name: str) -> list[str]:
        return self.users.get(name, [])


@pytest.fixture
def store(tmp_path: Path) -> tuple[VolumeStore, _Users]:
    users = _Users()
    config = Config(data_root=tmp_path / "data", exec_root=tmp_path / "run")
    daemon = types.SimpleNamespace(config=config, events=EventBus(), containers=users)
    volumes = VolumeStore(daemon)
    asyncio.run(volumes.start())
    return volumes, users


def test_create_get_list_remove(store: tuple[VolumeStore, _Users]) -> None:
    volumes, _ = store
    vol = volumes.create("data1", labels={"app": "db"})
    assert vol.mountpoint.is_dir()
    assert volumes.create("data1") is vol  # dockerd returns the existing one
    body = vol.inspect()
    assert body["Name"] == "data1" and body["Driver"] == "local"
    assert body["Mountpoint"].endswith("/volumes/data1/_data")
    assert body["Labels"] == {"app": "db"} and body["Scope"] == "local"
    anon = volumes.create(None)
    assert len(anon.name) == 64 and ANONYMOUS_LABEL in anon.labels
    assert [v.name for v in volumes.list_volumes({"label": ["app=db"]})] == ["data1"]
    assert [v.name for v in volumes.list_volumes({"name": ["ata"]})] == ["data1"]
    volumes.remove("data1")
    assert not vol.path.exists()
    with pytest.raises(NotFound, match="get data1: no such volume"):
        volumes.get("data1")
    volumes.remove("data1", force=True)  # force: a missing volume is fine


def test_records_survive_a_restart(store: tuple[VolumeStore, _Users]) -> None:
    volumes, _ = store
    volumes.create("keep", labels={"x": "1"})
    again = VolumeStore(volumes.daemon)
    asyncio.run(again.start())
    assert again.get("keep").labels == {"x": "1"}


def test_bad_names_and_drivers(store: tuple[VolumeStore, _Users]) -> None:
    volumes, _ = store
    with pytest.raises(InvalidParameter, match="includes invalid characters"):
        volumes.create("a/b")
    with pytest.raises(InvalidParameter, match="includes invalid characters"):
        volumes.create("x")
    with pytest.raises(Unsupported, match='only "local"'):
        volumes.create("vv", driver="nfs-plugin")
    with pytest.raises(Unsupported, match="not supported"):
        volumes.create("vv", driver_opts={"type": "ext4", "device": "/dev/sdz"})
    with pytest.raises(InvalidParameter, match="invalid option key"):
        volumes.create("vv", driver_opts={"colour": "blue"})


def test_in_use_volume_is_kept(store: tuple[VolumeStore, _Users]) -> None:
    volumes, users = store
    volumes.create("busy")
    users.users["busy"] = ["c" * 64]
    with pytest.raises(Conflict, match=r"remove busy: volume is in use - \[c+\]"):
        volumes.remove("busy", force=True)
    assert [v.name for v in volumes.list_volumes({"dangling": ["false"]})] == ["busy"]
    assert volumes.list_volumes({"dangling": ["true"]}) == []


def test_prune_takes_anonymous_unless_all(store: tuple[VolumeStore, _Users]) -> None:
    volumes, users = store
    named = volumes.create("named")
    anon = volumes.create(None)
    used = volumes.create(None)
    users.users[used.name] = ["c1"]
    (anon.mountpoint / "f").write_bytes(b"x" * 10000)
    removed, reclaimed = volumes.prune()
    assert removed == [anon.name] and reclaimed >= 10000
    removed, _ = volumes.prune(all=True)
    assert removed == [named.name]
    assert [v.name for v in volumes.list_volumes()] == [used.name]


def test_populate_copies_once_into_an_empty_volume(
    store: tuple[VolumeStore, _Users], tmp_path: Path
) -> None:
    volumes, _ = store
    image_dir = tmp_path / "rootfs" / "data"
    (image_dir / "sub").mkdir(parents=True)
    (image_dir / "sub" / "f.txt").write_text("from the image")
    vol = volumes.create("fresh")
    assert volumes.populate("fresh", image_dir, root=tmp_path / "rootfs")
    assert (vol.mountpoint / "sub" / "f.txt").read_text() == "from the image"
    (vol.mountpoint / "sub" / "f.txt").write_text("changed")
    assert not volumes.populate("fresh", image_dir)
    assert (vol.mountpoint / "sub" / "f.txt").read_text() == "changed"

    other = volumes.create("prefilled")
    (other.mountpoint / "mine").write_text("keep")
    assert not volumes.populate("prefilled", image_dir)
    assert sorted(p.name for p in other.mountpoint.iterdir()) == ["mine"]


def test_populate_refuses_symlinks_out_of_the_rootfs(
    store: tuple[VolumeStore, _Users], tmp_path: Path
) -> None:
    volumes, _ = store
    secret = tmp_path / "host-secret"
    secret.mkdir()
    (secret / "key").write_text("do not copy")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "data").symlink_to(secret)
    vol = volumes.create("guarded")
    assert not volumes.populate("guarded", rootfs / "data", root=rootfs)
    assert list(vol.mountpoint.iterdir()) == []


def test_events_for_create_and_destroy(store: tuple[VolumeStore, _Users]) -> None:
    volumes, _ = store
    volumes.create("ev")
    volumes.remove("ev")
    actions = [(e.type, e.action, e.actor_id) for e in volumes.events.history()]
    assert actions == [("volume", "create", "ev"), ("volume", "destroy", "ev")]


# -- through the docker CLI --


def test_cli_volume_create_ls_inspect_rm(engine: EngineProcess) -> None:
    assert (
        engine.docker(
            "volume", "create", "--label", "k=v", "cliv1", check=True
        ).stdout.strip()
        == "cliv1"
    )
    listed = engine.docker(
        "volume", "ls", "--format", "{{.Name}}", check=True
    ).stdout.split()
    assert "cliv1" in listed
    body = json.loads(engine.docker("volume", "inspect", "cliv1", check=True).stdout)[0]
    assert body["Labels"] == {"k": "v"} and body["Driver"] == "local"
    assert Path(body["Mountpoint"]).is_dir()
    filtered = engine.docker(
        "volume", "ls", "-q", "--filter", "label=k=v", check=True
    ).stdout.split()
    assert filtered == ["cliv1"]
    engine.docker("volume", "rm", "cliv1", check=True)
    missing = engine.docker("volume", "inspect", "cliv1")
    assert missing.returncode != 0 and "no such volume" in missing.stderr


def test_cli_volume_rm_missing_and_bad_name(engine: EngineProcess) -> None:
    result = engine.docker("volume", "rm", "never-made")
    assert result.returncode != 0 and "no such volume" in result.stderr
    bad = engine.docker("volume", "create", "bad/name")
    assert bad.returncode != 0 and "includes invalid characters" in bad.stderr


def test_cli_volume_prune(engine: EngineProcess) -> None:
    engine.docker("volume", "create", "prune-me", check=True)
    out = engine.docker("volume", "prune", "-a", "-f", check=True).stdout
    assert "prune-me" in out
    assert "prune-me" not in engine.docker("volume", "ls", "-q").stdout.split()


def _runs(engine: EngineProcess, busybox: str) -> None:
    result = engine.docker("run", "--rm", busybox, "echo", "ok")
    if result.returncode != 0 or result.stdout.strip() != "ok":
        pytest.skip(f"docker run does not work yet: {result.stderr.strip()[:200]}")


def test_cli_volume_persists_across_containers(
    engine: EngineProcess, busybox: str
) -> None:
    _runs(engine, busybox)
    engine.docker(
        "run",
        "--rm",
        "-v",
        "persist1:/data",
        busybox,
        "sh",
        "-c",
        "echo kept > /data/f",
        check=True,
    )
    out = engine.docker(
        "run", "--rm", "-v", "persist1:/data", busybox, "cat", "/data/f", check=True
    )
    assert out.stdout.strip() == "kept"
    engine.docker("volume", "rm", "persist1", check=True)


def test_cli_in_use_volume_cannot_be_removed(
    engine: EngineProcess, busybox: str
) -> None:
    _runs(engine, busybox)
    engine.docker(
        "create",
        "--name",
        "vol-user",
        "-v",
        "inuse1:/data",
        busybox,
        "true",
        check=True,
    )
    try:
        result = engine.docker("volume", "rm", "inuse1")
        assert result.returncode != 0
        assert "volume is in use" in result.stderr
    finally:
        engine.docker("rm", "-f", "vol-user")
        engine.docker("volume", "rm", "inuse1")


def test_api_status_codes(engine: EngineProcess) -> None:
    status, _ = engine.request("GET", "/v1.47/volumes/absent")
    assert status == 404
    status, body = engine.request(
        "POST",
        "/v1.47/volumes/create",
        json.dumps({"Name": "apiv"}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 201 and json.loads(body)["Name"] == "apiv"
    status, _ = engine.request("DELETE", "/v1.47/volumes/apiv")
    assert status == 204


def test_cli_tmpfs_volume_options(engine: EngineProcess, busybox: str) -> None:
    _runs(engine, busybox)
    engine.docker(
        "volume",
        "create",
        "--opt",
        "type=tmpfs",
        "--opt",
        "device=tmpfs",
        "--opt",
        "o=size=2m",
        "tmpvol",
        check=True,
    )
    try:
        out = engine.docker(
            "run",
            "--rm",
            "-v",
            "tmpvol:/t",
            busybox,
            "sh",
            "-c",
            "echo in-ram > /t/f; grep ' /t ' /proc/mounts",
            check=True,
        ).stdout
        assert out.startswith("tmpfs /t tmpfs") and "size=2048k" in out
        body = json.loads(
            engine.docker("volume", "inspect", "tmpvol", check=True).stdout
        )[0]
        assert body["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=2m"}
        mountpoint = body["Mountpoint"]
    finally:
        engine.docker("volume", "rm", "tmpvol", check=True)
    with open("/proc/self/mounts") as f:
        assert f" {mountpoint} " not in f.read()
