"""Mount specs: parsing and checks on their own, then real containers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import types
from pathlib import Path
from typing import Any

import pytest

from engine.config import Config
from engine.errors import InvalidParameter
from engine.events import EventBus
from engine.storage import mounts
from engine.storage.volumes import VolumeStore
from tests.support.engine import EngineProcess


def test_parse_bind_forms() -> None:
    bind = mounts.parse_bind("/srv/site:/usr/share/html:ro")
    assert (bind.type, bind.source, bind.destination, bind.rw) == (
        "bind",
        "/srv/site",
        "/usr/share/html",
        False,
    )
    assert bind.to_oci() == {
        "destination": "/usr/share/html",
        "type": "bind",
        "source": "/srv/site",
        "options": ["rbind", "ro", "rprivate"],
    }
    assert (
        bind.inspect()["Mode"] == "ro" and bind.inspect()["Propagation"] == "rprivate"
    )
    named = mounts.parse_bind("db:/var/lib/db")
    assert (named.type, named.name, named.rw, named.mode) == ("volume", "db", True, "z")
    anon = mounts.parse_bind("/data")
    assert anon.type == "volume" and anon.anonymous and anon.name == ""
    nocopy = mounts.parse_bind("db:/x:nocopy,ro")
    assert nocopy.nocopy and not nocopy.rw and not nocopy.needs_copy_up
    shared = mounts.parse_bind("/a:/b:rshared,z")
    assert shared.propagation == "rshared"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("/a:/b:/c:/d", "invalid volume specification: '/a:/b:/c:/d'"),
        ("/a:/b:bogus", "invalid mode: bogus"),
        ("/a:/b:ro,rw", "invalid mode: ro,rw"),
        ("/data:rw", "invalid volume specification: '/data:rw'"),
        ("vol:data", "mount path must be absolute"),
        ("/a:/", "destination can't be '/'"),
        (":/b", "invalid volume specification"),
    ],
)
def test_bad_binds(raw: str, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message.replace("(", r"\(")):
        mounts.parse_bind(raw)


def test_parse_mount_forms(tmp_path: Path) -> None:
    bind, _ = mounts.parse_mount(
        {"Type": "bind", "Source": str(tmp_path), "Target": "/x", "ReadOnly": True}
    )
    assert bind.source == str(tmp_path) and not bind.rw
    vol, options = mounts.parse_mount(
        {
            "Type": "volume",
            "Source": "v",
            "Target": "/v",
            "VolumeOptions": {"NoCopy": True, "Labels": {"a": "b"}},
        }
    )
    assert vol.nocopy and options["Labels"] == {"a": "b"}
    tmpfs, _ = mounts.parse_mount(
        {
            "Type": "tmpfs",
            "Target": "/t",
            "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 0o700},
        }
    )
    oci = tmpfs.to_oci()
    assert oci["type"] == "tmpfs" and "size=1048576" in oci["options"]
    assert "mode=700" in oci["options"] and "nosuid" in oci["options"]
    assert tmpfs.inspect() == {
        "Type": "tmpfs",
        "Source": "",
        "Destination": "/t",
        "Mode": "",
        "RW": True,
        "Propagation": "",
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"Type": "bind", "Source": "/nope/never", "Target": "/x"},
            'invalid mount config for type "bind": bind source path does not exist: /nope/never',
        ),
        ({"Type": "bind", "Target": "/x"}, "field Source must not be empty"),
        (
            {"Type": "tmpfs", "Source": "/a", "Target": "/x"},
            "field Source must not be specified",
        ),
        (
            {
                "Type": "volume",
                "Target": "/x",
                "BindOptions": {"Propagation": "shared"},
            },
            "field BindOptions must not be specified",
        ),
        ({"Type": "floppy", "Target": "/x"}, "mount type unknown"),
        ({"Type": "volume", "Source": "v"}, "field Target must not be empty"),
    ],
)
def test_bad_mounts(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        mounts.parse_mount(spec)


def test_tmpfs_flag_options() -> None:
    m = mounts.parse_tmpfs("/run", "rw,exec,size=64m")
    oci = m.to_oci()
    assert "noexec" not in oci["options"] and "exec" in oci["options"]
    assert "size=64m" in oci["options"] and not m.listed


def test_duplicate_destination() -> None:
    with pytest.raises(InvalidParameter, match="Duplicate mount point: /data"):
        mounts.validate_mounts({"Binds": ["a1:/data"], "Tmpfs": {"/data": ""}})


def test_resolve_creates_volumes_and_image_volumes(tmp_path: Path) -> None:
    config = Config(data_root=tmp_path / "data", exec_root=tmp_path / "run")
    daemon = types.SimpleNamespace(
        config=config,
        events=EventBus(),
        containers=types.SimpleNamespace(using_volume=lambda name: []),
    )
    daemon.volumes = VolumeStore(daemon)
    asyncio.run(daemon.volumes.start())
    missing = tmp_path / "made-by-v"
    container = types.SimpleNamespace(
        host_config={
            "Binds": ["named1:/data", f"{missing}:/src:ro"],
            "Mounts": [
                {
                    "Type": "volume",
                    "Target": "/m",
                    "VolumeOptions": {"Labels": {"l": "1"}},
                }
            ],
        },
        config={"Image": "x"},
    )
    resolved = mounts.resolve_mounts(
        daemon, container, {"Volumes": {"/data": {}, "/cache": {}}}
    )
    by_dest = {m.destination: m for m in resolved}
    assert set(by_dest) == {"/data", "/src", "/m", "/cache"}
    assert by_dest["/data"].name == "named1"
    assert by_dest["/data"].source == str(daemon.volumes.get("named1").mountpoint)
    assert missing.is_dir()  # -v creates a missing bind source, as dockerd
    assert by_dest["/cache"].anonymous and len(by_dest["/cache"].name) == 64
    assert daemon.volumes.get(by_dest["/m"].name).labels["l"] == "1"
    again = [mounts.Mount.from_dict(m.to_dict()) for m in resolved]
    assert [m.to_oci() for m in again] == [m.to_oci() for m in resolved]


# -- real containers --


def _runs(engine: EngineProcess, busybox: str) -> None:
    result = engine.docker("run", "--rm", busybox, "echo", "ok")
    if result.returncode != 0 or result.stdout.strip() != "ok":
        pytest.skip(f"docker run does not work yet: {result.stderr.strip()[:200]}")


def test_cli_bind_mount_read_only_is_enforced(
    engine: EngineProcess, busybox: str, tmp_path: Path
) -> None:
    _runs(engine, busybox)
    (tmp_path / "f").write_text("host file")
    out = engine.docker(
        "run", "--rm", "-v", f"{tmp_path}:/in:ro", busybox, "cat", "/in/f", check=True
    )
    assert out.stdout.strip() == "host file"
    write = engine.docker(
        "run", "--rm", "-v", f"{tmp_path}:/in:ro", busybox, "sh", "-c", "echo x > /in/g"
    )
    assert (
        write.returncode != 0 and "Read-only file system" in write.stderr + write.stdout
    )
    assert not (tmp_path / "g").exists()
    engine.docker(
        "run",
        "--rm",
        "-v",
        f"{tmp_path}:/in",
        busybox,
        "sh",
        "-c",
        "echo y > /in/g",
        check=True,
    )
    assert (tmp_path / "g").read_text() == "y\n"


def test_cli_tmpfs_mount(engine: EngineProcess, busybox: str) -> None:
    _runs(engine, busybox)
    out = engine.docker(
        "run",
        "--rm",
        "--mount",
        "type=tmpfs,destination=/scratch,tmpfs-size=1m",
        busybox,
        "sh",
        "-c",
        "grep ' /scratch ' /proc/mounts",
        check=True,
    )
    assert "tmpfs" in out.stdout and "size=1024k" in out.stdout


def test_cli_bad_mount_specs(engine: EngineProcess, busybox: str) -> None:
    result = engine.docker(
        "create", "--mount", "type=bind,source=/nope/never,target=/x", busybox
    )
    assert result.returncode != 0
    assert "bind source path does not exist: /nope/never" in result.stderr
    result = engine.docker("create", "-v", "/a:/b:bogus", busybox)
    assert result.returncode != 0 and "invalid mode: bogus" in result.stderr


def _image_with_volume(engine: EngineProcess, busybox: str, tag: str) -> None:
    """An image with ``VOLUME /seed`` holding a file, committed from busybox."""
    engine.docker("rm", "-f", "seedsrc")
    engine.docker(
        "run",
        "--name",
        "seedsrc",
        busybox,
        "sh",
        "-c",
        "mkdir /seed && echo seeded > /seed/f",
        check=True,
    )
    engine.docker("commit", "-c", "VOLUME /seed", "seedsrc", tag, check=True)
    engine.docker("rm", "-f", "seedsrc", check=True)


def test_cli_image_volume_is_anonymous_and_copied_up(
    engine: EngineProcess, busybox: str
) -> None:
    _runs(engine, busybox)
    _image_with_volume(engine, busybox, "dockyard-test/seeded:1")
    try:
        engine.docker(
            "create",
            "--name",
            "seeded",
            "dockyard-test/seeded:1",
            "cat",
            "/seed/f",
            check=True,
        )
        body = json.loads(engine.docker("inspect", "seeded", check=True).stdout)[0]
        volume = next(m for m in body["Mounts"] if m["Destination"] == "/seed")
        assert volume["Type"] == "volume" and len(volume["Name"]) == 64
        engine.docker("start", "-a", "seeded", check=True)
        assert Path(volume["Source"], "f").read_text() == "seeded\n"

        # A new named volume is filled from the image on first use too.
        out = engine.docker(
            "run",
            "--rm",
            "-v",
            "seedvol:/seed",
            "dockyard-test/seeded:1",
            "cat",
            "/seed/f",
            check=True,
        )
        assert out.stdout.strip() == "seeded"
    finally:
        engine.docker("rm", "-f", "-v", "seeded")
        engine.docker("volume", "rm", "seedvol")
        engine.docker("rmi", "dockyard-test/seeded:1")


def test_mount_errors_leave_no_mounts(engine: EngineProcess) -> None:
    mounts_now = subprocess.run(
        ["cat", "/proc/self/mounts"], capture_output=True, text=True
    ).stdout
    assert f"{engine.root}/data/volumes" not in mounts_now
