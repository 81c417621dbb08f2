"""RegistryService against Debian's docker-registry, without the HTTP API.

The image store and the registry service run in this process on a data
root of their own; the registries are real ``docker-registry`` processes on
loopback (open, htpasswd, token auth with the test's own issuer). The
docker CLI flows are in test_registry_cli.py; these tests pin the service's
behaviour where the CLI cannot reach (OCI indexes, zstd layers, mirrors,
a registry that dies in the middle of a pull).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import shutil
import ssl
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from engine.config import Config
from engine.errors import EngineError, Unauthorized
from engine.events import EventBus
from engine.images.store import ImageStore
from engine.registry.auth import parse_challenges
from engine.registry.client import RegistryNotFound, RegistryUnauthorized, Transport
from engine.registry.service import RegistryService
from tests.conftest import need_root
from tests.support.images import busybox_rootfs_tar
from tests.support.registry import REGISTRY_BIN, RegistryProcess, ScratchCA, TokenIssuer

pytestmark = [pytest.mark.registry, pytest.mark.root]

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


class Harness:
    """A daemon reduced to what the registry service needs."""

    def __init__(self, root: Path, **config: Any) -> None:
        self.config = Config(data_root=root, certs_dir=root / "certs.d", **config)
        self.events = EventBus()
        self.images = ImageStore(self)  # type: ignore[arg-type]
        self.registry = RegistryService(self)

    async def start(self) -> None:
        await self.images.start()
        await self.registry.start()

    async def stop(self) -> None:
        await self.registry.stop()
        await self.images.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def collect(stream: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [message async for message in stream]


def statuses(messages: list[dict[str, Any]]) -> list[str]:
    return [str(m.get("status")) for m in messages if "status" in m]


def auth_header(user: str, password: str, server: str) -> str:
    doc = {"username": user, "password": password, "serveraddress": server}
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


def random_layer(size: int, name: str = "data.bin") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = 1700000000
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return buf.getvalue()


def make_image(harness: Harness, ref: str, extra: int = 200_000) -> str:
    """busybox plus one random layer, tagged ``ref``; returns the image id."""
    store = harness.images
    base = store.add_layer(None, io.BytesIO(busybox_rootfs_tar()))
    top = store.add_layer(base.chain_id, io.BytesIO(random_layer(extra)))
    config = {
        "architecture": "amd64" if os.uname().machine == "x86_64" else "arm64",
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [base.diff_id, top.diff_id]},
    }
    image = store.create_image(json.dumps(config).encode())
    store.tag(image.id, ref)
    return str(image.id)


@pytest.fixture
def harness() -> Iterator[Harness]:
    need_root()
    root = Path(tempfile.mkdtemp(prefix="dyreg-", dir="/var/tmp"))
    h = Harness(root)
    run(h.start())
    try:
        yield h
    finally:
        run(h.stop())
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def registry_root() -> Iterator[Path]:
    if not REGISTRY_BIN.exists():
        pytest.skip("needs Debian's docker-registry (/usr/bin/docker-registry)")
    root = Path(tempfile.mkdtemp(prefix="dyregsrv-", dir="/var/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def open_registry(registry_root: Path) -> Iterator[RegistryProcess]:
    with RegistryProcess(registry_root / "open") as reg:
        yield reg


@pytest.fixture(scope="module")
def basic_registry(registry_root: Path) -> Iterator[RegistryProcess]:
    with RegistryProcess(registry_root / "basic", users={"bob": "s3cret"}) as reg:
        yield reg


@pytest.fixture(scope="module")
def token_registry(registry_root: Path) -> Iterator[RegistryProcess]:
    with (
        TokenIssuer(users={"alice": "wonderland"}) as issuer,
        RegistryProcess(registry_root / "token", token=issuer) as reg,
    ):
        yield reg


def _put(url: str, body: bytes, content_type: str) -> None:
    req = urllib.request.Request(url, data=body, method="PUT")
    req.add_header("Content-Type", content_type)
    urllib.request.urlopen(req).close()


def upload_blob(reg: RegistryProcess, repo: str, data: bytes) -> str:
    """Put a blob into the registry directly (monolithic upload)."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    req = urllib.request.Request(
        f"http://{reg.host}/v2/{repo}/blobs/uploads/", data=b"", method="POST"
    )
    with urllib.request.urlopen(req) as resp:
        location = resp.headers["Location"]
    if location.startswith("/"):
        location = f"http://{reg.host}{location}"
    sep = "&" if "?" in location else "?"
    _put(f"{location}{sep}digest={digest}", data, "application/octet-stream")
    return digest


def upload_image(
    reg: RegistryProcess,
    repo: str,
    tag: str,
    layers: list[tuple[bytes, bytes, str]],
    arch: str,
    manifest_type: str = OCI_MANIFEST,
) -> tuple[str, int]:
    """An image made by hand: (plain tar, blob, media type) per layer."""
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {
                "type": "layers",
                "diff_ids": [
                    "sha256:" + hashlib.sha256(plain).hexdigest()
                    for plain, _, _ in layers
                ],
            },
        }
    ).encode()
    config_digest = upload_blob(reg, repo, config)
    descriptors = []
    for _, blob, media_type in layers:
        digest = upload_blob(reg, repo, blob)
        descriptors.append(
            {"mediaType": media_type, "size": len(blob), "digest": digest}
        )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": len(config),
                "digest": config_digest,
            },
            "layers": descriptors,
        }
    ).encode()
    _put(f"http://{reg.host}/v2/{repo}/manifests/{tag}", manifest, manifest_type)
    return "sha256:" + hashlib.sha256(manifest).hexdigest(), len(manifest)


# -- open registry ----------------------------------------------------------


def test_push_then_pull_round_trip(
    harness: Harness, open_registry: RegistryProcess
) -> None:
    ref = f"{open_registry.host}/round/trip"
    image_id = make_image(harness, f"{ref}:1")

    pushed = run(collect(harness.registry.push(ref, "1", "e30=")))
    assert pushed[0]["status"] == f"The push refers to repository [{ref}]"
    assert statuses(pushed).count("Pushed") == 2
    digest = pushed[-1]["aux"]["Digest"]
    assert (
        pushed[-2]["status"] == f"1: digest: {digest} size: {pushed[-1]['aux']['Size']}"
    )

    again = run(collect(harness.registry.push(ref, "1", "e30=")))
    assert statuses(again).count("Layer already exists") == 2
    assert again[-1]["aux"]["Digest"] == digest

    harness.images.delete(f"{ref}:1", force=True)
    assert not harness.images.exists(f"{ref}:1")
    pulled = run(collect(harness.registry.pull(ref, "1", "e30=", None)))
    assert pulled[0] == {
        "status": "Pulling from round/trip",
        "progressDetail": {},
        "id": "1",
    }
    assert statuses(pulled).count("Pull complete") == 2
    assert pulled[-2]["status"] == f"Digest: {digest}"
    assert pulled[-1]["status"] == f"Status: Downloaded newer image for {ref}:1"
    image = harness.images.get(f"{ref}:1")
    assert image.id == image_id
    assert f"{ref}@{digest}" in image.repo_digests

    second = run(collect(harness.registry.pull(ref, "1", None, None)))
    # dockerd shows no layer lines for an image it already has.
    assert "Already exists" not in statuses(second)
    assert second[-1]["status"] == f"Status: Image is up to date for {ref}:1"


def test_pull_by_digest_and_missing_tag(
    harness: Harness, open_registry: RegistryProcess
) -> None:
    ref = f"{open_registry.host}/by/digest"
    make_image(harness, f"{ref}:1")
    digest = run(collect(harness.registry.push(ref, "1", None)))[-1]["aux"]["Digest"]
    harness.images.delete(f"{ref}:1", force=True)

    pulled = run(collect(harness.registry.pull(ref, digest, None, None)))
    assert pulled[0]["id"] == digest
    assert pulled[-1]["status"] == f"Status: Downloaded newer image for {ref}@{digest}"
    assert harness.images.exists(f"{ref}@{digest}")

    with pytest.raises(RegistryNotFound) as err:
        run(collect(harness.registry.pull(ref, "nope", None, None)))
    assert err.value.status == 404
    assert err.value.message == (
        f"manifest for {ref}:nope not found: manifest unknown: manifest unknown"
    )


def test_push_mounts_from_sibling_repository(
    harness: Harness, open_registry: RegistryProcess
) -> None:
    first = f"{open_registry.host}/mount/source"
    second = f"{open_registry.host}/mount/target"
    image_id = make_image(harness, f"{first}:1")
    run(collect(harness.registry.push(first, "1", None)))
    harness.images.tag(image_id, f"{second}:1")
    pushed = run(collect(harness.registry.push(second, "1", None)))
    assert statuses(pushed).count("Mounted from mount/source") == 2


def test_uncompressed_layer_is_gzipped_once(
    harness: Harness, open_registry: RegistryProcess
) -> None:
    """Local layers are compressed deterministically; the digest is remembered."""
    ref = f"{open_registry.host}/gzip/once"
    make_image(harness, f"{ref}:1")
    first = run(collect(harness.registry.push(ref, "1", None)))
    manifest_digest = first[-1]["aux"]["Digest"]
    url = f"http://{open_registry.host}/v2/gzip/once/manifests/{manifest_digest}"
    req = urllib.request.Request(url, headers={"Accept": DOCKER_MANIFEST})
    manifest = json.loads(urllib.request.urlopen(req).read())
    assert manifest["mediaType"] == DOCKER_MANIFEST
    for layer in manifest["layers"]:
        assert layer["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
        # Compressed only for the upload: not kept beside the layer.
        assert not harness.images.blobs.exists(layer["digest"])
    # The same layers pushed elsewhere give the same blobs.
    other = f"{open_registry.host}/gzip/twice"
    harness.images.tag(harness.images.get(f"{ref}:1").id, f"{other}:1")
    again = run(collect(harness.registry.push(other, "1", None)))
    assert again[-1]["aux"]["Digest"] == manifest_digest


def test_oci_index_picks_the_engine_platform(
    harness: Harness, open_registry: RegistryProcess
) -> None:
    """An index with two platforms: the engine's own, or the one asked for."""
    repo = "multi/arch"
    native = "amd64" if os.uname().machine == "x86_64" else "arm64"
    foreign = "arm64" if native == "amd64" else "amd64"
    plain_native = random_layer(1000, "native.txt")
    plain_foreign = random_layer(1000, "foreign.txt")
    gz = "application/vnd.oci.image.layer.v1.tar+gzip"
    import gzip as gzip_module

    d1, s1 = upload_image(
        open_registry,
        repo,
        "n",
        [(plain_native, gzip_module.compress(plain_native), gz)],
        native,
    )
    d2, s2 = upload_image(
        open_registry,
        repo,
        "f",
        [(plain_foreign, gzip_module.compress(plain_foreign), gz)],
        foreign,
    )
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": d2,
                    "size": s2,
                    "platform": {"os": "linux", "architecture": foreign},
                },
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": d1,
                    "size": s1,
                    "platform": {"os": "linux", "architecture": native},
                },
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": d1,
                    "size": s1,
                    "platform": {"os": "unknown", "architecture": "unknown"},
                },
            ],
        }
    ).encode()
    _put(f"http://{open_registry.host}/v2/{repo}/manifests/multi", index, OCI_INDEX)
    index_digest = "sha256:" + hashlib.sha256(index).hexdigest()
    ref = f"{open_registry.host}/{repo}"

    pulled = run(collect(harness.registry.pull(ref, "multi", None, None)))
    assert pulled[-2]["status"] == f"Digest: {index_digest}"
    image = harness.images.get(f"{ref}:multi")
    assert image.config["architecture"] == native
    assert f"{ref}@{index_digest}" in image.repo_digests

    run(collect(harness.registry.pull(ref, "multi", None, f"linux/{foreign}")))
    assert harness.images.get(f"{ref}:multi").config["architecture"] == foreign

    with pytest.raises(RegistryNotFound, match="no matching manifest for linux/s390x"):
        run(collect(harness.registry.pull(ref, "multi", None, "linux/s390x")))

    inspect = run(harness.registry.inspect(f"{ref}:multi", None))
    assert inspect["Descriptor"]["digest"] == index_digest
    assert {p["architecture"] for p in inspect["Platforms"]} == {native, foreign}


def test_zstd_and_plain_layers(
    harness: Harness, open_registry: RegistryProcess
) -> None:
    base = busybox_rootfs_tar()
    top = random_layer(50_000)
    layers = [
        (
            base,
            zstandard.ZstdCompressor().compress(base),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        (top, top, "application/vnd.oci.image.layer.v1.tar"),
    ]
    arch = "amd64" if os.uname().machine == "x86_64" else "arm64"
    upload_image(open_registry, "zstd/img", "1", layers, arch)
    ref = f"{open_registry.host}/zstd/img"
    pulled = run(collect(harness.registry.pull(ref, "1", None, None)))
    assert statuses(pulled).count("Pull complete") == 2
    image = harness.images.get(f"{ref}:1")
    assert (harness.images.layer_dirs(image)[1] / "bin" / "busybox").exists()
    # Pushed back: the zstd layer keeps its form, so the manifest is OCI.
    pushed = run(collect(harness.registry.push(f"{ref}", "1", None)))
    assert "Layer already exists" in statuses(pushed)


def test_registry_gone_mid_pull_leaves_no_image(
    harness: Harness, registry_root: Path
) -> None:
    """The registry dies during the pull: no image, only whole blobs; a retry completes."""
    reg = RegistryProcess(registry_root / "flaky")
    reg.start()
    try:
        ref = f"{reg.host}/flaky/img"
        store = harness.images
        base = store.add_layer(None, io.BytesIO(busybox_rootfs_tar()))
        chain = base.chain_id
        diff_ids = [base.diff_id]
        for _ in range(4):
            layer = store.add_layer(chain, io.BytesIO(random_layer(6_000_000)))
            chain = layer.chain_id
            diff_ids.append(layer.diff_id)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        image = store.create_image(json.dumps(config).encode())
        store.tag(image.id, f"{ref}:1")
        run(collect(harness.registry.push(ref, "1", None)))
        run(harness.stop())
        fresh_root = harness.config.data_root.with_name(
            harness.config.data_root.name + "-b"
        )
        other = Harness(fresh_root)
        run(other.start())

        async def pull_and_kill() -> BaseException | None:
            seen = 0
            try:
                async for message in other.registry.pull(ref, "1", None, None):
                    if message.get("status") == "Downloading":
                        seen += 1
                        if seen == 1:
                            reg.stop()
            except (EngineError, OSError) as err:
                return err
            return None

        error = run(pull_and_kill())
        assert error is not None, "the pull should fail when the registry goes away"
        assert not other.images.exists(f"{ref}:1")
        assert other.images.list_images() == []
        for blob in other.images.blobs.dir.iterdir():
            assert (
                "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
                == f"sha256:{blob.name}"
            )
        run(other.stop())

        # The engine "restarts": the ingest area is swept, the pull completes.
        reg.start()
        again = Harness(fresh_root)
        run(again.start())
        assert list(again.images.blobs.ingest_dir.iterdir()) == []
        pulled = run(collect(again.registry.pull(ref, "1", None, None)))
        assert pulled[-1]["status"].startswith("Status: Downloaded newer image")
        assert again.images.get(f"{ref}:1").id == image.id
        run(again.stop())
        shutil.rmtree(fresh_root, ignore_errors=True)
    finally:
        reg.stop()


def test_mirror_serves_docker_hub_names(
    harness: Harness, open_registry: RegistryProcess, tmp_path: Path
) -> None:
    """``busybox``-style names go to the configured mirror first."""
    ref = f"{open_registry.host}/library/mirrored"
    make_image(harness, f"{ref}:1")
    run(collect(harness.registry.push(ref, "1", None)))
    mirrored = Harness(
        tmp_path / "m", registry_mirrors=[f"http://{open_registry.host}"]
    )
    run(mirrored.start())
    try:
        pulled = run(collect(mirrored.registry.pull("mirrored", "1", None, None)))
        assert pulled[0]["status"] == "Pulling from library/mirrored"
        assert pulled[-1]["status"] == "Status: Downloaded newer image for mirrored:1"
        assert mirrored.images.exists("docker.io/library/mirrored:1")
        config = mirrored.registry.registry_config()
        assert config["Mirrors"] == [f"http://{open_registry.host}"]
        assert config["InsecureRegistryCIDRs"] == ["127.0.0.0/8"]
    finally:
        run(mirrored.stop())


def test_skopeo_reads_what_was_pushed(
    harness: Harness, open_registry: RegistryProcess
) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("needs Debian's skopeo")
    ref = f"{open_registry.host}/skopeo/check"
    image_id = make_image(harness, f"{ref}:1")
    digest = run(collect(harness.registry.push(ref, "1", None)))[-1]["aux"]["Digest"]
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}:1"],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(out.stdout)
    assert doc["Digest"] == digest
    assert len(doc["Layers"]) == 2
    raw = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--config",
            "--raw",
            "--tls-verify=false",
            f"docker://{ref}:1",
        ],
        capture_output=True,
        check=True,
    ).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == image_id


# -- credentials ------------------------------------------------------------


def test_basic_auth_login_push_pull(
    harness: Harness, basic_registry: RegistryProcess
) -> None:
    host = basic_registry.host
    ref = f"{host}/private/img"
    make_image(harness, f"{ref}:1")
    registry = harness.registry

    with pytest.raises(Unauthorized) as refused:
        run(
            registry.login(
                {"username": "bob", "password": "wrong", "serveraddress": host}
            )
        )
    assert refused.value.status == 401
    assert "401 Unauthorized" in refused.value.message
    ok = run(
        registry.login({"username": "bob", "password": "s3cret", "serveraddress": host})
    )
    assert ok == {"Status": "Login Succeeded", "IdentityToken": ""}

    with pytest.raises(RegistryUnauthorized) as anonymous:
        run(collect(registry.push(ref, "1", "e30=")))
    assert anonymous.value.message == "no basic auth credentials"

    good = auth_header("bob", "s3cret", host)
    pushed = run(collect(registry.push(ref, "1", good)))
    assert pushed[-1]["aux"]["Tag"] == "1"
    harness.images.delete(f"{ref}:1", force=True)
    with pytest.raises(RegistryUnauthorized):
        run(collect(registry.pull(ref, "1", None, None)))
    pulled = run(collect(registry.pull(ref, "1", good, None)))
    assert pulled[-1]["status"] == f"Status: Downloaded newer image for {ref}:1"


def test_token_auth_flow(harness: Harness, token_registry: RegistryProcess) -> None:
    host = token_registry.host
    ref = f"{host}/team/app"
    make_image(harness, f"{ref}:1")
    registry = harness.registry
    issuer = token_registry.token
    assert issuer is not None

    with pytest.raises(Unauthorized, match="incorrect username or password"):
        run(
            registry.login(
                {"username": "alice", "password": "nope", "serveraddress": host}
            )
        )
    assert (
        run(
            registry.login(
                {"username": "alice", "password": "wonderland", "serveraddress": host}
            )
        )["Status"]
        == "Login Succeeded"
    )

    # Anonymous callers get pull-only tokens: the registry refuses the push.
    with pytest.raises(RegistryUnauthorized):
        run(collect(registry.push(ref, "1", None)))

    issuer.requests.clear()
    good = auth_header("alice", "wonderland", host)
    run(collect(registry.push(ref, "1", good)))
    asked = [r for r in issuer.requests if r["user"] == "alice"]
    # One token per scope set, reused for every blob and the manifest.
    assert [r["scopes"] for r in asked] == [["repository:team/app:pull,push"]]

    harness.images.delete(f"{ref}:1", force=True)
    pulled = run(collect(registry.pull(ref, "1", None, None)))  # anonymous pull
    assert pulled[-1]["status"] == f"Status: Downloaded newer image for {ref}:1"


def test_challenge_parsing() -> None:
    header = (
        'Bearer realm="https://auth.example/token",service="reg",'
        'scope="repository:a/b:pull,push", Basic realm="x"'
    )
    challenges = parse_challenges(header)
    assert challenges[0].scheme == "bearer"
    assert challenges[0].params == {
        "realm": "https://auth.example/token",
        "service": "reg",
        "scope": "repository:a/b:pull,push",
    }
    assert challenges[1].scheme == "basic"


# -- TLS --------------------------------------------------------------------


def test_tls_registry_with_certs_d(harness: Harness, registry_root: Path) -> None:
    """``certs.d/<host:port>/``: ca.crt verifies, client.cert/key is presented.

    The registry demands a client certificate; without the folder the
    engine cannot talk to it, with it push and pull go over https.
    """
    ca = ScratchCA(registry_root / "ca")
    with RegistryProcess(registry_root / "tls", tls=ca, client_certs=True) as reg:
        folder = harness.config.certs_dir / reg.host
        folder.mkdir(parents=True)
        shutil.copy(ca.cert_path, folder / "ca.crt")
        ca.issue(folder / "client", "127.0.0.1", server=False)

        verified = Transport(harness.config.certs_dir)
        response = verified.request("GET", f"https://{reg.host}/v2/", verify=True)
        response.read()
        assert response.status == 200
        bare = Transport(harness.config.certs_dir / "none")
        with pytest.raises(ssl.SSLError):
            bare.request("GET", f"https://{reg.host}/v2/", verify=True)

        ref = f"{reg.host}/secure/img"
        make_image(harness, f"{ref}:1")
        pushed = run(collect(harness.registry.push(ref, "1", None)))
        assert pushed[-1]["aux"]["Tag"] == "1"
        assert harness.registry.candidates(reg.host, mirrors=False)[0].url.startswith(
            "https://"
        )
        harness.images.delete(f"{ref}:1", force=True)
        pulled = run(collect(harness.registry.pull(ref, "1", None, None)))
        assert pulled[-1]["status"] == f"Status: Downloaded newer image for {ref}:1"

        stranger = Harness(harness.config.data_root / "stranger")
        run(stranger.start())
        try:
            with pytest.raises(EngineError):
                run(collect(stranger.registry.pull(ref, "1", None, None)))
        finally:
            run(stranger.stop())


def test_disk_full_pull_leaves_no_image(
    harness: Harness, open_registry: RegistryProcess, tmp_path: Path
) -> None:
    """A data root too small for the image: a clear error, nothing half-written."""
    ref = f"{open_registry.host}/disk/full"
    make_image(harness, f"{ref}:1", extra=16_000_000)
    run(collect(harness.registry.push(ref, "1", None)))
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)], check=True
    )
    try:
        cramped = Harness(small / "root")
        run(cramped.start())
        with pytest.raises(EngineError, match="No space left on device"):
            run(collect(cramped.registry.pull(ref, "1", None, None)))
        assert cramped.images.list_images() == []
        assert list(cramped.images.blobs.ingest_dir.iterdir()) == []
        for blob in cramped.images.blobs.dir.iterdir():
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
        run(cramped.stop())
    finally:
        subprocess.run(["umount", str(small)], check=False)


class CuttingProxy:
    """A TCP relay to the registry that breaks one download half-way.

    Real sockets both sides; the first connection that carries more than
    ``cut_after`` bytes towards the engine is reset, as a flaky network
    would. Requests are recorded so the test can see the resume.
    """

    def __init__(self, target: int, cut_after: int) -> None:
        import socket
        import threading

        self.target = target
        self.cut_after = cut_after
        self.cut_done = False
        self.sent_up: list[bytes] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(
                target=self._up, args=(client, upstream), daemon=True
            ).start()
            threading.Thread(
                target=self._down, args=(upstream, client), daemon=True
            ).start()

    def _up(self, client: Any, upstream: Any) -> None:
        try:
            while data := client.recv(65536):
                self.sent_up.append(data)
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            upstream.close()

    def _down(self, upstream: Any, client: Any) -> None:
        import socket

        passed = 0
        try:
            while data := upstream.recv(65536):
                passed += len(data)
                with self._lock:
                    cut = not self.cut_done and passed > self.cut_after
                    self.cut_done = self.cut_done or cut
                if cut:
                    # shutdown wakes the other relay thread blocked on this
                    # socket; a bare close would wait for it.
                    client.shutdown(socket.SHUT_RDWR)
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self.listener.close()


def test_broken_download_resumes_with_range(
    harness: Harness, open_registry: RegistryProcess, tmp_path: Path
) -> None:
    proxy = CuttingProxy(open_registry.port, cut_after=3_000_000)
    try:
        ref = f"127.0.0.1:{proxy.port}/flaky/net"
        proxy.cut_done = True  # not while pushing
        image_id = make_image(harness, f"{ref}:1", extra=8_000_000)
        run(collect(harness.registry.push(ref, "1", None)))
        other = Harness(tmp_path / "other")
        run(other.start())
        try:
            proxy.cut_done = False
            pulled = run(collect(other.registry.pull(ref, "1", None, None)))
            assert proxy.cut_done, "the proxy should have broken a download"
            assert pulled[-1]["status"] == f"Status: Downloaded newer image for {ref}:1"
            assert other.images.get(f"{ref}:1").id == image_id
            assert b"Range: bytes=" in b"".join(proxy.sent_up)
        finally:
            run(other.stop())
    finally:
        proxy.close()
