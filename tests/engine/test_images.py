"""Images through the real docker CLI 28 and docker-py against a real engine.

The session engine has ``dockyard-test/busybox:latest`` loaded (other test
modules rely on it), so tests here work on images of their own: tags of
busybox, imported root filesystems and archives built in the test.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from tests.support.engine import EngineProcess
from tests.support.images import BUSYBOX_REF, busybox_rootfs_tar

pytestmark = pytest.mark.root


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def image_id(engine: EngineProcess, ref: str) -> str:
    return engine.docker(
        "image", "inspect", "--format", "{{.Id}}", ref, check=True
    ).stdout.strip()


def small_rootfs(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    path.write_bytes(small_rootfs(files))
    return path


def import_image(
    engine: EngineProcess, tmp_path: Path, ref: str, content: bytes
) -> str:
    src = write_tar(tmp_path / f"{uuid.uuid4().hex}.tar", {"hello.txt": content})
    out = engine.docker("import", str(src), ref, check=True).stdout.strip()
    assert out.startswith("sha256:")
    return out


def docker_run_works(engine: EngineProcess) -> str | None:
    """None when ``docker run`` works on this engine, else why not."""
    result = engine.docker("run", "--rm", BUSYBOX_REF, "true", timeout=60)
    if result.returncode != 0:
        return f"docker run is not functional yet: {result.stderr.strip()[:200]}"
    return None


# -- listing and inspecting ------------------------------------------------


def test_loaded_busybox_is_listed(engine: EngineProcess) -> None:
    out = engine.docker(
        "images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}", check=True
    )
    assert "dockyard-test/busybox:latest" in out.stdout
    full = image_id(engine, BUSYBOX_REF)
    quiet = engine.docker("images", "-q", check=True).stdout.split()
    assert full[7:19] in quiet
    no_trunc = engine.docker("images", "-q", "--no-trunc", check=True).stdout.split()
    assert full in no_trunc


def test_images_digests_and_filters(engine: EngineProcess, tmp_path: Path) -> None:
    out = engine.docker("images", "--digests", BUSYBOX_REF, check=True).stdout
    assert out.splitlines()[0].split()[:4] == ["REPOSITORY", "TAG", "DIGEST", "IMAGE"]
    assert "<none>" in out.splitlines()[1]

    dangling = import_image(engine, tmp_path, "", b"dangling " + uuid.uuid4().bytes)
    listed = engine.docker(
        "images", "-q", "--no-trunc", "--filter", "dangling=true", check=True
    )
    assert dangling in listed.stdout.split()
    assert image_id(engine, BUSYBOX_REF) not in listed.stdout.split()

    by_ref = engine.docker(
        "images",
        "--format",
        "{{.Repository}}",
        "--filter",
        "reference=dockyard-test/*",
        check=True,
    )
    assert by_ref.stdout.split() == ["dockyard-test/busybox"]

    bad = engine.docker("images", "--filter", "colour=blue")
    assert bad.returncode != 0 and "invalid filter 'colour'" in bad.stderr
    engine.docker("rmi", dangling, check=True)


def test_inspect_shape(engine: EngineProcess) -> None:
    body = json.loads(engine.docker("inspect", BUSYBOX_REF, check=True).stdout)[0]
    assert body["Id"].startswith("sha256:")
    assert BUSYBOX_REF in body["RepoTags"]
    assert body["Config"]["Cmd"] == ["sh"]
    assert body["Os"] == "linux"
    assert body["RootFS"]["Type"] == "layers" and len(body["RootFS"]["Layers"]) == 1
    assert body["GraphDriver"]["Name"] == "overlay2"
    assert Path(body["GraphDriver"]["Data"]["UpperDir"], "bin/busybox").exists()
    assert body["Size"] > 1_000_000

    status, raw = engine.request("GET", "/v1.47/images/json")
    summary = next(i for i in json.loads(raw) if i["Id"] == body["Id"])
    assert status == 200
    assert set(summary) >= {
        "Containers",
        "Created",
        "Id",
        "Labels",
        "ParentId",
        "RepoDigests",
        "RepoTags",
        "SharedSize",
        "Size",
    }
    assert summary["Created"] == 1700000000


def test_inspect_unknown_image(engine: EngineProcess) -> None:
    result = engine.docker("image", "inspect", "no-such-image-here")
    assert result.returncode != 0
    assert "No such image: no-such-image-here:latest" in result.stderr
    status, body = engine.request("GET", "/v1.47/images/no-such-image-here/json")
    assert status == 404
    assert json.loads(body) == {"message": "No such image: no-such-image-here:latest"}


def test_history(engine: EngineProcess) -> None:
    out = engine.docker(
        "history", "--no-trunc", BUSYBOX_REF, check=True
    ).stdout.splitlines()
    assert out[0].split()[:3] == ["IMAGE", "CREATED", "CREATED"]
    assert "busybox-static from Debian" in out[1]
    assert out[1].startswith(image_id(engine, BUSYBOX_REF))


# -- tag and rmi -----------------------------------------------------------


def test_tag_and_rmi_untags_then_deletes(engine: EngineProcess, tmp_path: Path) -> None:
    name = unique("tagme")
    full = import_image(engine, tmp_path, f"{name}:1", b"tag me")
    engine.docker("tag", f"{name}:1", f"{name}:2", check=True)
    engine.docker("tag", f"{name}:1", f"localhost:5000/{name}", check=True)
    tags = engine.docker(
        "image", "inspect", "--format", "{{json .RepoTags}}", full, check=True
    )
    assert json.loads(tags.stdout) == [
        f"{name}:1",
        f"{name}:2",
        f"localhost:5000/{name}:latest",
    ]

    by_id = engine.docker("rmi", full[7:19])
    assert by_id.returncode != 0
    assert (
        "must be forced" in by_id.stderr
        and "referenced in multiple repositories" in by_id.stderr
    )

    untag = engine.docker("rmi", f"{name}:2", check=True)
    assert untag.stdout.strip() == f"Untagged: {name}:2"
    engine.docker("rmi", f"localhost:5000/{name}", check=True)
    gone = engine.docker("rmi", f"{name}:1", check=True).stdout.splitlines()
    assert gone[0] == f"Untagged: {name}:1"
    assert f"Deleted: {full}" in gone
    assert len(gone) == 3  # the image and its layer
    assert engine.docker("image", "inspect", full).returncode != 0


def test_rmi_unknown_and_bad_names(engine: EngineProcess) -> None:
    result = engine.docker("rmi", "nothing-like-this")
    assert result.returncode != 0
    assert "No such image: nothing-like-this:latest" in result.stderr
    bad = engine.docker("tag", BUSYBOX_REF, "Bad/Name")
    assert bad.returncode != 0 and "invalid reference format" in bad.stderr


def test_tag_events(engine: EngineProcess) -> None:
    since = str(time.time() - 1)
    name = unique("evt")
    engine.docker("tag", BUSYBOX_REF, name, check=True)
    engine.docker("rmi", name, check=True)
    until = str(time.time() + 1)
    out = engine.docker(
        "events",
        "--since",
        since,
        "--until",
        until,
        "--filter",
        "type=image",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
        check=True,
    ).stdout.splitlines()
    assert f"tag {name}:latest" in out
    assert any(line.startswith("untag ") for line in out)


# -- save, load, import -----------------------------------------------------


def test_save_rmi_load_round_trip(engine: EngineProcess, tmp_path: Path) -> None:
    name = unique("trip")
    full = import_image(engine, tmp_path, f"{name}:1", b"round trip")
    archive = tmp_path / "save.tar"
    engine.docker("save", "-o", str(archive), f"{name}:1", check=True)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        layer = tar.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    assert "oci-layout" in names
    assert manifest[0]["RepoTags"] == [f"{name}:1"]
    assert manifest[0]["Config"] == f"blobs/sha256/{full[7:]}"
    assert (
        index["manifests"][0]["annotations"]["io.containerd.image.name"]
        == f"docker.io/library/{name}:1"
    )
    assert "sha256:" + hashlib.sha256(layer).hexdigest() in manifest[0]["Layers"][
        0
    ].replace("blobs/sha256/", "sha256:")

    engine.docker("rmi", f"{name}:1", check=True)
    loaded = engine.docker("load", "-i", str(archive), check=True)
    assert loaded.stdout.strip() == f"Loaded image: {name}:1"
    assert image_id(engine, f"{name}:1") == full
    engine.docker("rmi", f"{name}:1", check=True)


def test_load_oci_layout(engine: EngineProcess, tmp_path: Path) -> None:
    """An OCI image layout (gzip layer, nested index) as skopeo or buildx write it."""
    layer_tar = small_rootfs({"oci.txt": b"from an OCI layout"})
    layer_gz = gzip.compress(layer_tar, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64"
            if __import__("platform").machine() == "x86_64"
            else "arm64",
            "os": "linux",
            "created": "2024-01-02T03:04:05Z",
            "config": {"Cmd": ["cat", "/oci.txt"], "Labels": {"source": "oci"}},
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()],
            },
        }
    ).encode()
    blobs: dict[str, bytes] = {}

    def add(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return digest

    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": add(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": add(layer_gz),
                    "size": len(layer_gz),
                }
            ],
        }
    ).encode()
    manifest_digest = add(manifest)
    name = unique("oci")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "annotations": {
                        "org.opencontainers.image.ref.name": f"docker.io/library/{name}:v1"
                    },
                }
            ],
        }
    ).encode()
    path = tmp_path / "oci.tar"
    with tarfile.open(path, "w") as tar:
        for member, data in [
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", index),
        ] + [(f"blobs/sha256/{d[7:]}", b) for d, b in blobs.items()]:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    out = engine.docker("load", "-i", str(path), check=True).stdout.strip()
    assert out == f"Loaded image: {name}:v1"
    body = json.loads(
        engine.docker("image", "inspect", f"{name}:v1", check=True).stdout
    )[0]
    assert body["Id"] == "sha256:" + hashlib.sha256(config).hexdigest()
    assert body["Config"]["Labels"] == {"source": "oci"}
    assert (
        Path(body["GraphDriver"]["Data"]["UpperDir"], "oci.txt").read_bytes()
        == b"from an OCI layout"
    )
    engine.docker("rmi", f"{name}:v1", check=True)


def test_load_garbage_is_refused(engine: EngineProcess, tmp_path: Path) -> None:
    path = write_tar(tmp_path / "junk.tar", {"hello": b"not an image"})
    result = engine.docker("load", "-i", str(path))
    assert result.returncode != 0
    assert "manifest.json" in result.stderr
    assert engine.ping()


def test_import_with_changes_and_message(engine: EngineProcess, tmp_path: Path) -> None:
    name = unique("imported")
    src = tmp_path / "rootfs.tar"
    src.write_bytes(busybox_rootfs_tar())
    out = engine.docker(
        "import",
        "--change",
        'CMD ["/bin/sh", "-c", "echo hi"]',
        "--change",
        "ENV A=1 B=two",
        "--change",
        "EXPOSE 8080",
        "--change",
        "WORKDIR /srv",
        "--change",
        "LABEL x=y",
        "-m",
        "from a test",
        str(src),
        f"{name}:1",
        check=True,
    ).stdout.strip()
    body = json.loads(
        engine.docker("image", "inspect", f"{name}:1", check=True).stdout
    )[0]
    assert body["Id"] == out
    assert body["Config"]["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert body["Config"]["Env"] == ["A=1", "B=two"]
    assert body["Config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert body["Config"]["WorkingDir"] == "/srv"
    assert body["Config"]["Labels"] == {"x": "y"}
    assert body["Comment"] == "from a test"
    history = engine.docker(
        "history", "--format", "{{.Comment}}", f"{name}:1", check=True
    )
    assert history.stdout.strip() == "from a test"

    bad = engine.docker("import", "--change", "RUN rm -rf /", str(src), unique("bad"))
    assert bad.returncode != 0 and "RUN is not a valid change command" in bad.stderr
    engine.docker("rmi", f"{name}:1", check=True)


def test_import_from_stdin(engine: EngineProcess) -> None:
    name = unique("stdin")
    # engine.docker() feeds text; a gzip stream needs bytes.
    result = subprocess.run(
        ["docker", "import", "-", name],
        input=gzip.compress(small_rootfs({"a": b"b"})),
        env=engine.env(),
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert image_id(engine, name) == result.stdout.decode().strip()
    engine.docker("rmi", name, check=True)


def test_image_prune(engine: EngineProcess, tmp_path: Path) -> None:
    dangling = import_image(engine, tmp_path, "", b"prune me " + uuid.uuid4().bytes)
    name = unique("keep")
    kept = import_image(engine, tmp_path, name, b"keep me " + uuid.uuid4().bytes)
    out = engine.docker("image", "prune", "-f", check=True).stdout
    assert f"deleted: {dangling}" in out
    assert "Total reclaimed space" in out
    assert engine.docker("image", "inspect", dangling).returncode != 0
    assert image_id(engine, name) == kept
    engine.docker("rmi", name, check=True)


# -- hostile layers ---------------------------------------------------------


def _hostile(kind: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(name: str, data: bytes | None = None, **kw: object) -> None:
            info = tarfile.TarInfo(name)
            for key, value in kw.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        add("ok.txt", b"fine")
        if kind == "dotdot":
            add("../../../../tmp/dyimg-escape", b"evil")
        elif kind == "absolute":
            add("/tmp/dyimg-escape", b"evil")
        elif kind == "symlink":
            add("link", type=tarfile.SYMTYPE, linkname="/tmp")
            add("link/dyimg-escape", b"evil")
        elif kind == "hardlink":
            add("hl", type=tarfile.LNKTYPE, linkname="../../../../etc/passwd")
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_hostile_layer_is_refused(
    engine: EngineProcess, tmp_path: Path, kind: str
) -> None:
    src = tmp_path / f"{kind}.tar"
    src.write_bytes(_hostile(kind))
    result = engine.docker("import", str(src), unique("hostile"))
    assert result.returncode != 0
    assert "refusing layer entry" in result.stderr
    assert not Path("/tmp/dyimg-escape").exists()
    layers_dir = engine.root / "data/image/layers"
    assert not [p for p in layers_dir.iterdir() if p.name.startswith("tmp-")]
    assert list((engine.root / "data/image/ingest").iterdir()) == []
    assert engine.docker("version", check=True).returncode == 0


def test_hostile_layer_in_archive_is_refused(
    engine: EngineProcess, tmp_path: Path
) -> None:
    layer = _hostile("symlink")
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    manifest = json.dumps(
        [{"Config": "c.json", "RepoTags": ["hostile:1"], "Layers": ["l/layer.tar"]}]
    ).encode()
    path = tmp_path / "hostile.tar"
    with tarfile.open(path, "w") as tar:
        for member, data in [
            ("c.json", config),
            ("l/layer.tar", layer),
            ("manifest.json", manifest),
        ]:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result = engine.docker("load", "-i", str(path))
    assert result.returncode != 0
    assert "refusing layer entry 'link/dyimg-escape'" in result.stderr
    assert engine.docker("image", "inspect", "hostile:1").returncode != 0
    assert engine.ping()


# -- docker-py -------------------------------------------------------------


def test_docker_py_images(engine: EngineProcess, tmp_path: Path) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=engine.host)
    try:
        ids = [image.id for image in client.images.list()]
        busybox = client.images.get(BUSYBOX_REF)
        assert busybox.id in ids
        assert BUSYBOX_REF in busybox.tags

        name = unique("py")
        assert busybox.tag(name, "7")
        assert f"{name}:7" in client.images.get(busybox.id).tags

        archive = b"".join(client.api.get_image(f"{name}:7"))
        client.images.remove(f"{name}:7")
        loaded = client.images.load(archive)
        assert [image.id for image in loaded] == [busybox.id]
        client.images.remove(f"{name}:7")

        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get("py-missing-image")
    finally:
        client.close()


# -- container-dependent ---------------------------------------------------


def test_rmi_conflicts_while_a_container_uses_the_image(
    engine: EngineProcess, tmp_path: Path
) -> None:
    reason = docker_run_works(engine)
    if reason:
        print(reason)
        pytest.skip(reason)
    name = unique("inuse")
    full = import_image(engine, tmp_path, name, b"in use")
    ctr = engine.docker("create", name, "/hello.txt", check=True).stdout.strip()
    try:
        refused = engine.docker("rmi", name)
        assert refused.returncode != 0
        assert (
            "must force" in refused.stderr
            and "is using its referenced image" in refused.stderr
        )
        by_id = engine.docker("rmi", full)
        assert by_id.returncode != 0 and "being used by" in by_id.stderr

        forced = engine.docker("rmi", "-f", name, check=True)
        assert forced.stdout.strip() == f"Untagged: {name}:latest"
        # The container still needs the layers: the image stays, untagged.
        assert image_id(engine, full) == full
    finally:
        engine.docker("rm", "-f", ctr)
    gone = engine.docker("rmi", full, check=True).stdout
    assert f"Deleted: {full}" in gone


def test_commit(engine: EngineProcess) -> None:
    reason = docker_run_works(engine)
    if reason:
        print(reason)
        pytest.skip(reason)
    cname = unique("commit")
    engine.docker(
        "run",
        "--name",
        cname,
        BUSYBOX_REF,
        "sh",
        "-c",
        "echo committed > /made-here; rm /etc/group",
        check=True,
    )
    name = unique("committed")
    try:
        out = engine.docker(
            "commit",
            "--change",
            'CMD ["cat", "/made-here"]',
            "-m",
            "a commit",
            cname,
            f"{name}:1",
            check=True,
        ).stdout.strip()
        assert out == image_id(engine, f"{name}:1")
        run = engine.docker("run", "--rm", f"{name}:1", check=True)
        assert run.stdout.strip() == "committed"
        gone = engine.docker("run", "--rm", f"{name}:1", "ls", "/etc/group")
        assert gone.returncode != 0
        history = engine.docker(
            "history", "--format", "{{.Comment}}", f"{name}:1", check=True
        )
        assert history.stdout.splitlines()[0] == "a commit"
    finally:
        engine.docker("rm", "-f", cname)
        engine.docker("rmi", f"{name}:1")


def test_import_save_load_delete_events(engine: EngineProcess, tmp_path: Path) -> None:
    since = str(time.time() - 1)
    name = unique("events")
    full = import_image(engine, tmp_path, name, b"events " + uuid.uuid4().bytes)
    archive = tmp_path / "events.tar"
    engine.docker("save", "-o", str(archive), name, check=True)
    engine.docker("rmi", name, check=True)
    engine.docker("load", "-i", str(archive), check=True)
    engine.docker("rmi", name, check=True)
    until = str(time.time() + 1)
    out = engine.docker(
        "events",
        "--since",
        since,
        "--until",
        until,
        "--filter",
        f"image={full}",
        "--format",
        "{{.Action}}",
        check=True,
    ).stdout.split()
    assert [a for a in out if a in ("import", "save", "delete", "load")] == [
        "import",
        "save",
        "delete",
        "load",
        "delete",
    ]
