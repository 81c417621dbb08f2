"""``docker save`` and ``docker load``: images as one tar.

Two layouts travel in such a tar, and since Docker 25 both at once::

    manifest.json                 docker-archive: [{"Config", "RepoTags", "Layers"}]
    index.json, oci-layout        OCI image layout: index -> manifests -> blobs
    blobs/sha256/<hex>            configs, manifests and uncompressed layer tars

Loading takes either: ``manifest.json`` when present (older Docker wrote
``<id>.json`` and ``<dir>/layer.tar`` paths, which it names), otherwise the
OCI index, where ``io.containerd.image.name`` or a full reference in
``org.opencontainers.image.ref.name`` gives the tag. Saving writes both, as
Docker 25 and later do, streaming layers straight from the store.

Loading reads the tar once, in order: small members stay in memory, big
ones go straight into the blob store, and layers unpack from there.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from engine.errors import EngineError, InvalidParameter
from engine.images.blobs import BlobStore, sha256_digest
from engine.images.layers import CHUNK
from engine.images.reference import Reference, parse
from engine.images.store import Image, ImageStore, host_arch

log = logging.getLogger(__name__)

SMALL_MEMBER = 4 * 1024 * 1024
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"


# -- load -----------------------------------------------------------------


@dataclass
class _Members:
    """The archive's files: small ones in memory, big ones as blobs."""

    blobs: BlobStore
    small: dict[str, bytes] = field(default_factory=dict)
    big: dict[str, str] = field(default_factory=dict)  # name -> digest
    links: dict[str, str] = field(default_factory=dict)
    added: set[str] = field(default_factory=set)  # blobs new to the store

    def _resolve(self, name: str) -> str:
        name = _norm(name)
        for _ in range(16):
            target = self.links.get(name)
            if target is None:
                return name
            base = name.rsplit("/", 1)[0] if "/" in name else ""
            name = _norm(
                f"{base}/{target}" if base and not target.startswith("/") else target
            )
        raise InvalidParameter(f"invalid archive: symlink loop at {name}")

    def has(self, name: str) -> bool:
        name = self._resolve(name)
        return name in self.small or name in self.big

    def read(self, name: str) -> bytes:
        name = self._resolve(name)
        if name in self.small:
            return self.small[name]
        if name in self.big:
            return self.blobs.read(self.big[name])
        raise InvalidParameter(f"invalid archive: {name} is missing")

    def open(self, name: str) -> IO[bytes]:
        resolved = self._resolve(name)
        if resolved in self.small:
            return io.BytesIO(self.small[resolved])
        if resolved in self.big:
            return open(self.blobs.path(self.big[resolved]), "rb")
        raise InvalidParameter(f"invalid archive: {name} is missing")


def _norm(name: str) -> str:
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def _read_members(stream: IO[bytes], members: _Members) -> None:
    blobs = members.blobs
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:  # type: ignore[call-overload]
            for member in tar:
                name = _norm(member.name)
                if member.issym():
                    members.links[name] = member.linkname
                elif member.islnk():
                    members.links[name] = "/" + _norm(member.linkname)
                elif member.isreg():
                    source = tar.extractfile(member)
                    assert source is not None
                    if member.size <= SMALL_MEMBER:
                        members.small[name] = source.read()
                        continue
                    with blobs.ingest(None) as writer:
                        while chunk := source.read(CHUNK):
                            writer.write(chunk)
                    digest = writer.commit()
                    members.big[name] = digest
                    members.added.add(digest)
    except tarfile.TarError as err:
        raise InvalidParameter(f"invalid archive: {err}") from err


@dataclass
class _Loaded:
    image: Image
    refs: list[Reference]


def _load_layers(
    store: ImageStore, members: _Members, layer_names: list[str], diff_ids: list[str]
) -> list[str]:
    if len(layer_names) != len(diff_ids):
        raise InvalidParameter(
            f"invalid archive: the config lists {len(diff_ids)} layers, the manifest {len(layer_names)}"
        )
    parent: str | None = None
    chains = []
    for name, diff_id in zip(layer_names, diff_ids, strict=True):
        resolved = members._resolve(name)
        if resolved in members.big:
            layer = store.add_layer(
                parent,
                store.blobs.path(members.big[resolved]),
                expected_diff_id=diff_id,
            )
        else:
            with members.open(name) as source:
                layer = store.add_layer(parent, source, expected_diff_id=diff_id)
        parent = layer.chain_id
        chains.append(layer.chain_id)
    return chains


def _docker_archive(store: ImageStore, members: _Members) -> list[_Loaded]:
    try:
        manifest = json.loads(members.read("manifest.json"))
    except ValueError as err:
        raise InvalidParameter(f"invalid archive: manifest.json: {err}") from None
    if not isinstance(manifest, list):
        raise InvalidParameter("invalid archive: manifest.json is not a list")
    loaded = []
    for entry in manifest:
        raw = members.read(entry["Config"])
        config = json.loads(raw)
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        chains = _load_layers(store, members, list(entry.get("Layers") or []), diff_ids)
        image = store.create_image(raw, chains)
        refs = [parse(tag) for tag in entry.get("RepoTags") or []]
        loaded.append(_Loaded(image, refs))
    return loaded


def _blob_name(digest: str) -> str:
    algorithm, _, hex_part = digest.partition(":")
    return f"blobs/{algorithm}/{hex_part}"


def _verified(members: _Members, digest: str) -> bytes:
    data = members.read(_blob_name(digest))
    if sha256_digest(data) != digest:
        raise InvalidParameter(
            f"invalid archive: blob {digest} does not match its digest"
        )
    return data


def _platform_matches(descriptor: dict[str, Any]) -> bool:
    platform = descriptor.get("platform") or {}
    return (
        platform.get("os", "linux") == "linux"
        and platform.get("architecture", host_arch()) == host_arch()
    )


def _manifests(
    members: _Members, index: dict[str, Any]
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(descriptor as the top index lists it, image manifest) pairs."""
    for descriptor in index.get("manifests") or []:
        media = descriptor.get("mediaType", "")
        doc = json.loads(_verified(members, descriptor["digest"]))
        if media in (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST) or "manifests" in doc:
            candidates = [d for d in doc.get("manifests") or [] if _platform_matches(d)]
            available = [d for d in candidates if members.has(_blob_name(d["digest"]))]
            if not available:
                raise InvalidParameter(
                    f"invalid archive: no linux/{host_arch()} image in index {descriptor['digest']}"
                )
            doc = json.loads(_verified(members, available[0]["digest"]))
        yield descriptor, doc


def _oci_layout(store: ImageStore, members: _Members) -> list[_Loaded]:
    try:
        index = json.loads(members.read("index.json"))
    except ValueError as err:
        raise InvalidParameter(f"invalid archive: index.json: {err}") from None
    loaded = []
    for descriptor, manifest in _manifests(members, index):
        config_digest = manifest["config"]["digest"]
        raw = _verified(members, config_digest)
        config = json.loads(raw)
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        layer_names = []
        for layer in manifest.get("layers") or []:
            name = _blob_name(layer["digest"])
            resolved = members._resolve(name)
            if resolved in members.big and members.big[resolved] != layer["digest"]:
                raise InvalidParameter(
                    f"invalid archive: blob {layer['digest']} does not match its digest"
                )
            layer_names.append(name)
        chains = _load_layers(store, members, layer_names, diff_ids)
        image = store.create_image(raw, chains)
        annotations = descriptor.get("annotations") or {}
        refs = []
        for key in (ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME):
            ref_name = annotations.get(key)
            if ref_name and ("/" in ref_name or ":" in ref_name):
                try:
                    refs.append(parse(ref_name))
                    break
                except InvalidParameter:
                    continue
        loaded.append(_Loaded(image, refs))
    return loaded


def load(
    store: ImageStore, stream: IO[bytes], report: Callable[[str], None]
) -> list[Image]:
    """Load every image of a docker-archive or OCI-layout tar into ``store``.

    ``report`` gets the lines ``docker load`` prints ("Loaded image: ...").
    Raises InvalidParameter for an archive that is neither, or whose
    content does not match its digests.
    """
    members = _Members(store.blobs)
    try:
        _read_members(stream, members)
        if members.has("manifest.json"):
            loaded = _docker_archive(store, members)
        elif members.has("index.json"):
            loaded = _oci_layout(store, members)
        else:
            raise InvalidParameter(
                "invalid archive: neither manifest.json (docker save) nor index.json (OCI layout) found"
            )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise InvalidParameter(
            f"invalid archive: malformed metadata ({err!r})"
        ) from err
    finally:
        # Big members that did not become layer blobs are not worth keeping.
        kept = {layer.blob_digest for layer in store.iter_layers()}
        kept.update(img.id for img in store.list_images())
        for digest in members.added - kept:
            store.blobs.delete(digest)

    images = []
    for item in loaded:
        image = item.image
        for ref in item.refs:
            previous = store.resolve_reference(str(ref))
            if previous is not None and previous != image.id:
                report(
                    f"The image {ref.familiar} already exists, renaming the old one with ID {previous} to empty string"
                )
            store.tag(image.id, ref)
            store.events.publish("image", "load", image.id, {"name": ref.familiar})
            report(f"Loaded image: {ref.familiar}")
        if not item.refs:
            store.events.publish("image", "load", image.id, {"name": image.id})
            report(f"Loaded image ID: {image.id}")
        images.append(image)
    return images


# -- save -----------------------------------------------------------------


@dataclass
class SaveEntry:
    """One file of the archive: bytes in memory or a stream opened on demand."""

    name: str
    size: int
    data: bytes | None = None
    opener: Callable[[], IO[bytes]] | None = None


def select_images(
    store: ImageStore, names: list[str]
) -> list[tuple[Image, list[Reference]]]:
    """The images ``docker save NAME...`` means, with the references to record.

    A repository without a tag means every tag of it. Raises NotFound.
    """
    chosen: dict[str, list[Reference]] = {}
    order: list[str] = []
    for name in names:
        try:
            parsed: Reference | None = parse(name, default_tag=None)
        except InvalidParameter:
            parsed = None
        refs: list[tuple[str, Reference]] = []
        if parsed is not None and not parsed.tag and not parsed.digest:
            # A bare repository: every tag of it.
            refs = [
                (img.id, ref)
                for img in store.list_images()
                for ref in img.references
                if ref.repository == parsed.repository and not ref.digest
            ]
        elif parsed is not None:
            target = store.resolve_reference(name)
            if target is not None:
                refs = [(target, parsed.with_tag(parsed.tag) if parsed.tag else parsed)]
        if not refs:
            image = store.get(name)
            if image.id not in chosen:
                chosen[image.id] = []
                order.append(image.id)
        for image_id, ref in refs:
            if image_id not in chosen:
                chosen[image_id] = []
                order.append(image_id)
            if ref not in chosen[image_id]:
                chosen[image_id].append(ref)
    return [(store.get(image_id), chosen[image_id]) for image_id in order]


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def save_entries(
    store: ImageStore, selection: list[tuple[Image, list[Reference]]]
) -> list[SaveEntry]:
    """The files of a Docker 25-style archive for the selected images."""
    entries: list[SaveEntry] = []
    seen: set[str] = set()
    manifest_json = []
    index_manifests = []

    def blob(
        digest: str,
        size: int,
        data: bytes | None = None,
        opener: Callable[[], IO[bytes]] | None = None,
    ) -> str:
        name = _blob_name(digest)
        if name not in seen:
            seen.add(name)
            entries.append(SaveEntry(name, size, data, opener))
        return name

    for image, refs in selection:
        layer_names = []
        layer_descriptors = []
        for layer in store.image_layers(image):
            opener = _layer_opener(store, layer.chain_id)
            layer_names.append(blob(layer.diff_id, layer.tar_size, opener=opener))
            layer_descriptors.append(
                {
                    "mediaType": MEDIA_OCI_LAYER,
                    "digest": layer.diff_id,
                    "size": layer.tar_size,
                }
            )
        config_raw = store.blobs.read(image.id)
        config_name = blob(image.id, len(config_raw), data=config_raw)
        oci_manifest = _json_bytes(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_OCI_MANIFEST,
                "config": {
                    "mediaType": MEDIA_OCI_CONFIG,
                    "digest": image.id,
                    "size": len(config_raw),
                },
                "layers": layer_descriptors,
            }
        )
        manifest_digest = sha256_digest(oci_manifest)
        blob(manifest_digest, len(oci_manifest), data=oci_manifest)
        descriptor = {
            "mediaType": MEDIA_OCI_MANIFEST,
            "digest": manifest_digest,
            "size": len(oci_manifest),
        }
        tags = [r for r in refs if not r.digest]
        if tags:
            for ref in tags:
                index_manifests.append(
                    {
                        **descriptor,
                        "annotations": {
                            ANNOTATION_IMAGE_NAME: str(ref),
                            ANNOTATION_REF_NAME: ref.tag,
                        },
                    }
                )
        else:
            index_manifests.append(descriptor)
        manifest_json.append(
            {
                "Config": config_name,
                "RepoTags": [r.familiar for r in tags] or None,
                "Layers": layer_names,
            }
        )

    index = _json_bytes(
        {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": index_manifests}
    )
    manifest = _json_bytes(manifest_json)
    layout = _json_bytes({"imageLayoutVersion": "1.0.0"})
    entries += [
        SaveEntry("index.json", len(index), index),
        SaveEntry("manifest.json", len(manifest), manifest),
        SaveEntry("oci-layout", len(layout), layout),
    ]
    return entries


def _layer_opener(store: ImageStore, chain: str) -> Callable[[], IO[bytes]]:
    def opener() -> IO[bytes]:
        return store.layer(chain).open_tar(store.blobs)

    return opener


def tar_header(name: str, size: int, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mtime = 0
    return info.tobuf(format=tarfile.PAX_FORMAT)


def padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


END_OF_ARCHIVE = b"\0" * (2 * tarfile.BLOCKSIZE)


def directories(entries: list[SaveEntry]) -> list[str]:
    dirs: list[str] = []
    for entry in entries:
        parts = entry.name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.append(d)
    return dirs


class SaveError(EngineError):
    """The store changed under a save in progress."""


def check_length(name: str, expected: int, written: int) -> None:
    if written != expected:
        raise SaveError(f"{name}: expected {expected} bytes, the store gave {written}")


# -- import ---------------------------------------------------------------


def import_rootfs(
    store: ImageStore,
    stream: IO[bytes],
    *,
    source: str = "-",
    message: str = "",
    changes: list[str] | None = None,
    platform: str | None = None,
    ref: Reference | None = None,
) -> Image:
    """``docker import``: a root filesystem tar as a one-layer image.

    Raises InvalidParameter for an unsafe tar or a bad change.
    """
    from engine.images.changes import apply_changes
    from engine.images.store import now_rfc3339

    os_name, arch = "linux", host_arch()
    if platform:
        parts = platform.split("/")
        os_name = parts[0] or "linux"
        if len(parts) > 1 and parts[1]:
            arch = parts[1]
    run = apply_changes({}, changes or [])
    layer = store.add_layer(None, stream)
    created = now_rfc3339()
    comment = message or f"Imported from {source}"
    config: dict[str, Any] = {
        "architecture": arch,
        "os": os_name,
        "created": created,
        "config": run,
        "history": [{"created": created, "comment": comment}],
    }
    if message:
        config["comment"] = message
    image = store.create_image(config, [layer.chain_id])
    if ref is not None:
        store.tag(image.id, ref)
    store.events.publish(
        "image", "import", image.id, {"name": ref.familiar if ref else image.id}
    )
    return image
