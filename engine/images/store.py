"""The image store: blobs, unpacked layers, image configs and references.

Everything lives under ``<data-root>/image``::

    blobs/sha256/<hex>         manifests, configs and layer tars, by digest
    layers/<chain hex>/diff/   one unpacked layer (an overlayfs lower dir)
    layers/<chain hex>/layer.json
    imagedb/<id hex>.json      local facts about an image (parent, tag time)
    repositories.json          references (name:tag, name@digest) -> image id

An image is its config blob: the id is the config's digest, and the config
lists the layers' ``diff_ids`` (digests of the uncompressed tars). A layer
is known by its chain id, which folds in every layer below it, so the same
tar on top of different parents is two layers::

    chain(L1) = diff_id(L1)
    chain(Ln) = sha256(chain(Ln-1) + " " + diff_id(Ln))

Layers are unpacked once and shared read-only by every image and container
that stacks them. Blocking methods (``add_layer``, ``delete``...) are meant
to run in a worker thread; one lock keeps the in-memory indexes consistent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import platform
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from engine.component import Component
from engine.errors import Conflict, EngineError, InvalidParameter, NotFound
from engine.images import layers as layerfs
from engine.images.blobs import BlobStore, BlobWriter, split_digest
from engine.images.changes import apply_changes
from engine.images.reference import Reference, parse

if TYPE_CHECKING:
    from engine.daemon import Daemon

log = logging.getLogger(__name__)

MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
_MEDIA_BY_COMPRESSION = {
    "": MEDIA_LAYER_TAR,
    "gzip": MEDIA_LAYER_GZIP,
    "zstd": MEDIA_LAYER_ZSTD,
}
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}
# A layer made by add_layer but not yet in an image is safe from deletion
# this long, so that an image being pulled keeps the layers it shares with
# an image being removed at the same moment.
FRESH_LAYER_SECONDS = 3600


def host_arch() -> str:
    machine = platform.machine()
    return ARCHITECTURES.get(machine, machine)


def chain_id(parent_chain: str | None, diff_id: str) -> str:
    """The chain id of ``diff_id`` stacked on the layer ``parent_chain``."""
    if not parent_chain:
        return diff_id
    joined = f"{parent_chain} {diff_id}".encode()
    return "sha256:" + hashlib.sha256(joined).hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(chain_id(out[-1] if out else None, diff_id))
    return out


def now_rfc3339() -> str:
    """The current UTC time with nanoseconds, as Go's RFC3339Nano prints it."""
    ns = time.time_ns()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000))
    fraction = f"{ns % 1_000_000_000:09d}".rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def parse_time(value: str | None) -> int:
    """Seconds since the epoch of an RFC 3339 time (nanoseconds allowed); 0 if unset."""
    if not value:
        return 0
    text = value.strip().replace("z", "Z")
    main, _, rest = text.partition(".")
    zone = ""
    if rest:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
    elif text.endswith("Z"):
        main, zone = text[:-1], "Z"
    elif len(text) > 19:
        main, zone = text[:19], text[19:]
    if zone == "Z":
        zone = "+00:00"
    try:
        parsed = datetime.fromisoformat(main + zone)
    except ValueError:
        return 0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def _write_json_atomic(path: Path, obj: Any) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


def short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


@dataclass
class Layer:
    """One unpacked layer."""

    chain_id: str
    diff_id: str
    parent: str | None
    size: int  # bytes of file content
    tar_size: int  # length of the uncompressed tar (== the diff_id's content)
    blob_digest: str  # the tar as received (maybe compressed), in blobs/
    media_type: str
    created: float
    path: Path

    @property
    def diff_dir(self) -> Path:
        return self.path / "diff"

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "diff_id": self.diff_id,
            "parent": self.parent,
            "size": self.size,
            "tar_size": self.tar_size,
            "blob_digest": self.blob_digest,
            "media_type": self.media_type,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> Layer:
        return cls(
            chain_id=data["chain_id"],
            diff_id=data["diff_id"],
            parent=data.get("parent"),
            size=int(data.get("size", 0)),
            tar_size=int(data.get("tar_size", 0)),
            blob_digest=data.get("blob_digest", data["diff_id"]),
            media_type=data.get("media_type", MEDIA_LAYER_TAR),
            created=float(data.get("created", 0)),
            path=path,
        )

    @property
    def is_compressed(self) -> bool:
        return self.blob_digest != self.diff_id

    def open_tar(self, blobs: BlobStore) -> IO[bytes]:
        """The layer as an uncompressed tar stream (its bytes hash to diff_id)."""
        raw = open(blobs.path(self.blob_digest), "rb")  # noqa: SIM115 - caller closes
        if not self.is_compressed:
            return raw
        return layerfs.decompressed(raw)


@dataclass
class Image:
    """An image: its config, its layers (chain ids, bottom first) and local facts."""

    id: str
    config: dict[str, Any]
    layers: list[str]
    meta: dict[str, Any]
    store: ImageStore = field(repr=False)

    @property
    def repo_tags(self) -> list[str]:
        return [r.familiar for r in self.store.references(self.id) if not r.digest]

    @property
    def repo_digests(self) -> list[str]:
        return [
            f"{r.familiar_name}@{r.digest}"
            for r in self.store.references(self.id)
            if r.digest
        ]

    @property
    def references(self) -> list[Reference]:
        return self.store.references(self.id)

    @property
    def size(self) -> int:
        return self.store.size_of(self.layers)

    @property
    def created(self) -> str:
        return str(self.config.get("created") or "")

    @property
    def created_unix(self) -> int:
        return parse_time(self.config.get("created"))

    @property
    def top_layer(self) -> str | None:
        return self.layers[-1] if self.layers else None

    @property
    def parent(self) -> str:
        return str(self.meta.get("parent") or "")

    @property
    def diff_ids(self) -> list[str]:
        return list((self.config.get("rootfs") or {}).get("diff_ids") or [])

    @property
    def labels(self) -> dict[str, str]:
        return dict((self.config.get("config") or {}).get("Labels") or {})

    @property
    def short_id(self) -> str:
        return short_id(self.id)

    def inspect(self) -> dict[str, Any]:
        """``GET /images/{name}/json`` as API 1.47 shapes it."""
        cfg = self.config
        body: dict[str, Any] = {
            "Id": self.id,
            "RepoTags": self.repo_tags,
            "RepoDigests": self.repo_digests,
            "Parent": self.parent,
            "Comment": cfg.get("comment", ""),
        }
        if cfg.get("created"):
            body["Created"] = cfg["created"]
        body.update(
            {
                "DockerVersion": cfg.get("docker_version", ""),
                "Author": cfg.get("author", ""),
                "Config": container_config(cfg.get("config") or {}),
                "Architecture": cfg.get("architecture", ""),
            }
        )
        if cfg.get("variant"):
            body["Variant"] = cfg["variant"]
        body["Os"] = cfg.get("os", "")
        if cfg.get("os.version"):
            body["OsVersion"] = cfg["os.version"]
        body.update(
            {
                "Size": self.size,
                "GraphDriver": self.store.graph_driver(self),
                "RootFS": {"Type": "layers", "Layers": self.diff_ids},
                "Metadata": {
                    "LastTagTime": self.meta.get("last_tag_time")
                    or "0001-01-01T00:00:00Z"
                },
            }
        )
        return body


# The container.Config fields API 1.47 still returns for an image, in order.
_CONTAINER_CONFIG_DEFAULTS: list[tuple[str, Any]] = [
    ("Hostname", ""),
    ("Domainname", ""),
    ("User", ""),
    ("AttachStdin", False),
    ("AttachStdout", False),
    ("AttachStderr", False),
    ("ExposedPorts", None),
    ("Tty", False),
    ("OpenStdin", False),
    ("StdinOnce", False),
    ("Env", None),
    ("Cmd", None),
    ("Healthcheck", None),
    ("ArgsEscaped", None),
    ("Image", ""),
    ("Volumes", None),
    ("WorkingDir", ""),
    ("Entrypoint", None),
    ("OnBuild", None),
    ("Labels", None),
    ("StopSignal", None),
    ("Shell", None),
]
_OMIT_WHEN_EMPTY = {"ExposedPorts", "Healthcheck", "ArgsEscaped", "StopSignal", "Shell"}


def container_config(config: dict[str, Any]) -> dict[str, Any]:
    """The image's runtime config in the container.Config shape of API 1.47."""
    out: dict[str, Any] = {}
    for key, default in _CONTAINER_CONFIG_DEFAULTS:
        value = config.get(key, default)
        if key in _OMIT_WHEN_EMPTY and not value:
            continue
        out[key] = value
    return out


class ImageStore(Component):
    """Images, layers and references under ``<data-root>/image``."""

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(daemon)
        self.root = Path(self.config.data_root) / "image"
        self.layers_dir = self.root / "layers"
        self.imagedb_dir = self.root / "imagedb"
        self.repositories_file = self.root / "repositories.json"
        for path in (self.root, self.layers_dir, self.imagedb_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.root)
        self._lock = threading.RLock()
        self._images: dict[str, Image] = {}
        self._layers: dict[str, Layer] = {}
        self._refs: dict[str, str] = {}  # str(Reference) -> image id
        self._fresh: dict[str, float] = {}
        self._trash: list[Path] = []
        self._load()

    # -- loading ----------------------------------------------------------

    def _load(self) -> None:
        for entry in self.layers_dir.iterdir():
            if entry.name.startswith("tmp-"):
                # An unpack cut short by a crash: never referenced.
                layerfs.remove_tree(entry)
                continue
            try:
                data = json.loads((entry / "layer.json").read_text())
                self._layers[data["chain_id"]] = Layer.from_json(data, entry)
            except (OSError, ValueError, KeyError) as err:
                log.warning("ignoring damaged layer %s: %s", entry.name, err)

        for entry in self.imagedb_dir.glob("*.json"):
            image_id = "sha256:" + entry.stem
            try:
                meta = json.loads(entry.read_text())
                config = json.loads(self.blobs.read(image_id))
            except (OSError, ValueError, EngineError) as err:
                log.warning("ignoring damaged image %s: %s", image_id, err)
                continue
            diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
            self._images[image_id] = Image(
                image_id, config, chain_ids(diff_ids), meta, self
            )

        if self.repositories_file.exists():
            try:
                data = json.loads(self.repositories_file.read_text())
                for refs in (data.get("Repositories") or {}).values():
                    for ref, image_id in refs.items():
                        if image_id in self._images:
                            self._refs[ref] = image_id
            except (OSError, ValueError) as err:
                log.warning("ignoring damaged %s: %s", self.repositories_file, err)
        log.debug(
            "image store: %d images, %d layers, %d references",
            len(self._images),
            len(self._layers),
            len(self._refs),
        )

    async def start(self) -> None:
        await asyncio.to_thread(self._collect_orphans)

    def _empty_trash(self) -> None:
        with self._lock:
            trash, self._trash = self._trash, []
        for path in trash:
            layerfs.remove_tree(path)

    def _collect_orphans(self) -> None:
        """Remove layers no image uses: left by a pull or build cut short."""
        with self._lock:
            used = {c for img in self._images.values() for c in img.layers}
            orphans = [c for c in self._layers if c not in used]
            removed = self._release_layers(orphans)
        self._empty_trash()
        if removed:
            log.info("removed %d unused layers", len(removed))

    def engine_id(self) -> str:
        """A stable id for this data root (``docker info``'s ID)."""
        path = self.root / "engine-id"
        with self._lock:
            try:
                return path.read_text().strip()
            except FileNotFoundError:
                value = str(uuid.uuid4())
                path.write_text(value + "\n")
                return value

    # -- references -------------------------------------------------------

    def references(self, image_id: str) -> list[Reference]:
        with self._lock:
            refs = [ref for ref, target in self._refs.items() if target == image_id]
        return [parse(ref, default_tag=None) for ref in sorted(refs)]

    def _save_references(self) -> None:
        grouped: dict[str, dict[str, str]] = {}
        for ref, image_id in sorted(self._refs.items()):
            parsed = parse(ref, default_tag=None)
            grouped.setdefault(parsed.repository, {})[ref] = image_id
        _write_json_atomic(self.repositories_file, {"Repositories": grouped})

    def tag(self, image_id: str, ref: str | Reference) -> Reference:
        """Point ``ref`` at the image; a tag held by another image moves.

        Raises NotFound for an unknown image, InvalidParameter for a bad ref.
        """
        image = self.get(image_id)
        parsed = ref if isinstance(ref, Reference) else parse(ref)
        if parsed.tag and parsed.digest:
            parsed = parsed.with_digest(parsed.digest)
        with self._lock:
            self._refs[str(parsed)] = image.id
            self._save_references()
            if not parsed.digest:
                image.meta["last_tag_time"] = now_rfc3339()
                self._save_meta(image)
        if not parsed.digest:
            self.events.publish("image", "tag", image.id, {"name": parsed.familiar})
        log.debug("tagged %s as %s", image.short_id, parsed)
        return parsed

    def untag(self, ref: str | Reference) -> Reference:
        """Remove one reference; raises NotFound when it points nowhere."""
        parsed = ref if isinstance(ref, Reference) else parse(ref)
        with self._lock:
            image_id = self._refs.pop(str(parsed), None)
            if image_id is None:
                raise NotFound(f"No such image: {parsed.familiar}")
            self._save_references()
        self.events.publish("image", "untag", image_id, {"name": image_id})
        return parsed

    def resolve_reference(self, ref: str) -> str | None:
        """The image id a reference names, or None."""
        try:
            parsed = parse(ref)
        except InvalidParameter:
            return None
        with self._lock:
            if parsed.digest:
                return self._refs.get(str(parsed.with_digest(parsed.digest)))
            return self._refs.get(str(parsed))

    # -- images -----------------------------------------------------------

    def get(self, ref_or_id: str) -> Image:
        """An image by name, name:tag, name@digest, or full or short id.

        Raises NotFound("No such image: <ref>").
        """
        image = self._find(ref_or_id)
        if image is None:
            raise NotFound(f"No such image: {_missing_name(ref_or_id)}")
        return image

    def _find(self, text: str) -> Image | None:
        with self._lock:
            if text.startswith("sha256:"):
                return self._by_id_prefix(text[7:])
            image_id = self.resolve_reference(text)
            if image_id is not None:
                return self._images.get(image_id)
            return self._by_id_prefix(text)

    def _by_id_prefix(self, prefix: str) -> Image | None:
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            return None
        full = "sha256:" + prefix
        if full in self._images:
            return self._images[full]
        found = [img for key, img in self._images.items() if key.startswith(full)]
        return found[0] if len(found) == 1 else None

    def exists(self, ref_or_id: str) -> bool:
        return self._find(ref_or_id) is not None

    def list_images(self) -> list[Image]:
        with self._lock:
            return sorted(
                self._images.values(), key=lambda i: i.created_unix, reverse=True
            )

    def children(self, image_id: str) -> list[Image]:
        with self._lock:
            return [i for i in self._images.values() if i.parent == image_id]

    def _save_meta(self, image: Image) -> None:
        _write_json_atomic(
            self.imagedb_dir / f"{split_digest(image.id)}.json", image.meta
        )

    def create_image(
        self,
        config: dict[str, Any] | bytes,
        layers: list[str] | None = None,
        parent: str | None = None,
    ) -> Image:
        """Store an image config; the id is the digest of the config bytes.

        ``config`` as bytes is stored verbatim (a pulled or loaded config
        keeps the digest its manifest names); as a dict it is serialised
        compactly. With ``layers`` (chain ids, bottom first; the top one
        alone is enough) a dict config's ``rootfs.diff_ids`` is set from
        them. Raises InvalidParameter for a
        config that names a layer this store does not have.
        """
        full: list[str] | None = None
        if layers is not None:
            full = self._chain_to(layers[-1]) if layers else []
            if len(layers) > 1 and full != list(layers):
                raise InvalidParameter("the given layers do not stack on each other")
        if isinstance(config, bytes | bytearray):
            raw = bytes(config)
            try:
                parsed = json.loads(raw)
            except ValueError as err:
                raise InvalidParameter(f"invalid image config: {err}") from None
            if not isinstance(parsed, dict):
                raise InvalidParameter("invalid image config: not a JSON object")
        else:
            parsed = dict(config)
            if full is not None:
                diff_ids = [self.layer(c).diff_id for c in full]
                parsed["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
            parsed.setdefault("rootfs", {"type": "layers", "diff_ids": []})
            raw = json.dumps(parsed, separators=(",", ":"), sort_keys=True).encode()

        diff_ids = list((parsed.get("rootfs") or {}).get("diff_ids") or [])
        chains = chain_ids(diff_ids)
        if full is not None and chains != full:
            raise InvalidParameter(
                "image config rootfs does not match the given layers"
            )
        with self._lock:
            for chain in chains:
                if chain not in self._layers:
                    raise InvalidParameter(
                        f"image config names layer {chain}, which is not in the store"
                    )
            image_id = self.blobs.write(raw)
            for chain in chains:
                self._fresh.pop(chain, None)
            existing = self._images.get(image_id)
            if existing is not None:
                return existing
            meta: dict[str, Any] = {
                "parent": parent or "",
                "created_local": now_rfc3339(),
            }
            image = Image(image_id, parsed, chains, meta, self)
            self._save_meta(image)
            self._images[image_id] = image
        log.debug("created image %s with %d layers", image.short_id, len(chains))
        return image

    def new_config(
        self,
        parent: Image | None,
        runtime_config: dict[str, Any] | None = None,
        *,
        layer: Layer | None = None,
        created_by: str = "",
        comment: str = "",
        author: str = "",
        changes: list[str] | None = None,
    ) -> tuple[dict[str, Any], list[str]]:
        """The config and layers of an image derived from ``parent``.

        ``runtime_config`` (Cmd, Env, Labels...) replaces the parent's;
        ``changes`` (Dockerfile-style, as ``docker commit --change``) are
        applied on top. A history entry records ``created_by``, with
        ``empty_layer`` when ``layer`` is None.
        """
        base = parent.config if parent else {}
        run = dict(
            runtime_config if runtime_config is not None else base.get("config") or {}
        )
        if changes:
            run = apply_changes(run, changes)
        created = now_rfc3339()
        history = list(base.get("history") or [])
        # Keep one non-empty step per layer, or ``docker history`` loses count.
        missing = len(parent.layers if parent else []) - sum(
            1 for h in history if not h.get("empty_layer")
        )
        if missing > 0:
            filler = {"created": base.get("created") or created, "created_by": ""}
            history = [dict(filler) for _ in range(missing)] + history
        entry: dict[str, Any] = {"created": created, "created_by": created_by}
        if author:
            entry["author"] = author
        if comment:
            entry["comment"] = comment
        if layer is None:
            entry["empty_layer"] = True
        history.append(entry)
        config: dict[str, Any] = {
            "architecture": base.get("architecture") or host_arch(),
            "os": base.get("os") or "linux",
            "created": created,
            "config": run,
            "history": history,
        }
        if base.get("variant"):
            config["variant"] = base["variant"]
        if author:
            config["author"] = author
        if comment:
            config["comment"] = comment
        chains = list(parent.layers) if parent else []
        if layer is not None:
            chains.append(layer.chain_id)
        return config, chains

    def commit(
        self,
        parent: Image | None,
        upper: Path | None,
        runtime_config: dict[str, Any] | None = None,
        *,
        created_by: str = "",
        comment: str = "",
        author: str = "",
        changes: list[str] | None = None,
        ref: str | None = None,
        skip_empty: frozenset[str] = frozenset(),
    ) -> Image:
        """Make an image of ``parent`` plus the overlay upper dir ``upper``.

        What ``docker commit`` and a builder step need in one call: the
        diff becomes a layer (none when nothing changed), the config gets
        ``runtime_config`` and ``changes``, and ``ref`` is tagged.
        """
        parent_chain = parent.top_layer if parent else None
        layer = (
            self.diff_layer(upper, parent_chain, skip_empty)
            if upper is not None
            else None
        )
        config, chains = self.new_config(
            parent,
            runtime_config,
            layer=layer,
            created_by=created_by,
            comment=comment,
            author=author,
            changes=changes,
        )
        image = self.create_image(config, chains, parent=parent.id if parent else None)
        if ref:
            self.tag(image.id, ref)
        return image

    # -- layers -----------------------------------------------------------

    def layer(self, chain: str) -> Layer:
        with self._lock:
            found = self._layers.get(chain)
        if found is None:
            raise NotFound(f"layer {chain} not found")
        return found

    def _chain_to(self, top: str) -> list[str]:
        """Chain ids from the bottom layer up to ``top``, by parent links."""
        out: list[str] = []
        current: str | None = top
        while current:
            out.append(current)
            current = self.layer(current).parent
        return out[::-1]

    def has_layer(self, chain: str) -> bool:
        with self._lock:
            return chain in self._layers

    def size_of(self, chains: list[str]) -> int:
        with self._lock:
            return sum(self._layers[c].size for c in chains if c in self._layers)

    def image_layers(self, image: Image) -> list[Layer]:
        """The image's layers, bottom first."""
        return [self.layer(c) for c in image.layers]

    def layer_dirs(self, image: Image) -> list[Path]:
        """Unpacked diff dirs of the image, top first (overlayfs lowerdir order)."""
        return [self.layer(c).diff_dir for c in reversed(image.layers)]

    def lower_links(self, image: Image) -> tuple[Path, list[str]]:
        """Short names for the image's diff dirs, top first, and where they resolve.

        The kernel takes at most one page of mount options, which full
        paths fill at about 40 layers; ``l/<26 chars>`` links relative to
        the returned directory (mount from there, as overlay2 does) fit
        over a hundred.
        """
        links = self.root / "l"
        links.mkdir(exist_ok=True)
        names = []
        for chain in reversed(image.layers):
            name = _link_name(chain)
            with contextlib.suppress(FileExistsError):
                os.symlink(f"../layers/{split_digest(chain)}/diff", links / name)
            names.append(f"l/{name}")
        return self.root, names

    def graph_driver(self, image: Image) -> dict[str, Any]:
        if not image.layers:
            return {"Data": None, "Name": "overlay2"}
        dirs = [str(d) for d in self.layer_dirs(image)]
        top = self.layer(image.layers[-1]).path
        data = {
            "MergedDir": str(top / "merged"),
            "UpperDir": dirs[0],
            "WorkDir": str(top / "work"),
        }
        if len(dirs) > 1:
            data["LowerDir"] = ":".join(dirs[1:])
        return {"Data": data, "Name": "overlay2"}

    def layers_size(self) -> int:
        with self._lock:
            return sum(layer.size for layer in self._layers.values())

    def add_layer(
        self,
        parent_chain: str | None,
        tar: BinaryIO | IO[bytes] | Path,
        media_type: str = "",
        expected_diff_id: str | None = None,
    ) -> Layer:
        """Unpack a layer tar on top of ``parent_chain`` and keep its blob.

        ``tar`` is a stream or a file; a file already in ``blobs`` is used
        in place. Returns the existing layer when its chain id is known.
        Raises InvalidParameter for an unsafe or malformed tar or a diff_id
        other than ``expected_diff_id``; nothing is left behind then.
        """
        if parent_chain and not self.has_layer(parent_chain):
            raise NotFound(f"parent layer {parent_chain} not found")
        if expected_diff_id is not None:
            known = chain_id(parent_chain, expected_diff_id)
            if self.has_layer(known):
                return self._touch(known)

        temp = Path(tempfile.mkdtemp(dir=self.layers_dir, prefix="tmp-"))
        writer: BlobWriter | None = None
        source: IO[bytes]
        try:
            (temp / "diff").mkdir(mode=0o755)
            blob_digest: str | None = None
            if isinstance(tar, Path) and tar.parent == self.blobs.dir:
                blob_digest = "sha256:" + tar.name
                source = open(tar, "rb")  # noqa: SIM115 - closed below
            else:
                raw = open(tar, "rb") if isinstance(tar, Path) else tar  # noqa: SIM115
                writer = self.blobs.ingest(None)
                source = _Tee(raw, writer)  # type: ignore[assignment]
            try:
                stats = layerfs.unpack(source, temp / "diff")
                # Whatever follows the tar's end (padding, a gzip trailer)
                # belongs to the blob too.
                while source.read(layerfs.CHUNK):
                    pass
            finally:
                if isinstance(tar, Path):
                    (source.raw if isinstance(source, _Tee) else source).close()
            if expected_diff_id is not None and stats.diff_id != expected_diff_id:
                raise InvalidParameter(
                    f"layer content does not match its diff id: expected {expected_diff_id}, got {stats.diff_id}"
                )
            if writer is not None:
                blob_digest = writer.commit()
            assert blob_digest is not None
            chain = chain_id(parent_chain, stats.diff_id)
            layer = Layer(
                chain_id=chain,
                diff_id=stats.diff_id,
                parent=parent_chain,
                size=stats.size,
                tar_size=stats.tar_size,
                blob_digest=blob_digest,
                media_type=media_type
                or _MEDIA_BY_COMPRESSION.get(stats.compression, MEDIA_LAYER_TAR),
                created=time.time(),
                path=self.layers_dir / split_digest(chain),
            )
            _write_json_atomic(temp / "layer.json", layer.to_json())
            with self._lock:
                if chain in self._layers:
                    layerfs.remove_tree(temp)
                    return self._touch(chain)
                # A directory without a readable layer.json was skipped at load.
                layerfs.remove_tree(layer.path)
                os.rename(temp, layer.path)
                self._layers[chain] = layer
                self._fresh[chain] = time.monotonic()
        except BaseException:
            if writer is not None:
                writer.abort()
            layerfs.remove_tree(temp)
            raise
        log.debug("added layer %s (%d bytes)", chain, layer.size)
        return layer

    def _touch(self, chain: str) -> Layer:
        with self._lock:
            self._fresh[chain] = time.monotonic()
            return self._layers[chain]

    def diff_layer(
        self,
        upper: Path,
        parent_chain: str | None,
        skip_empty: frozenset[str] = frozenset(),
    ) -> Layer | None:
        """Turn an overlay upper dir into a new layer on ``parent_chain``.

        Whiteouts and opaque dirs become their OCI form; empty files named in
        ``skip_empty`` (runtime mount points) are left out. Returns None when
        ``upper`` holds no changes.
        """
        writer = self.blobs.ingest(None)
        try:
            entries = layerfs.write_diff(upper, writer, skip_empty)  # type: ignore[arg-type]
        except BaseException:
            writer.abort()
            raise
        if entries == 0:
            writer.abort()
            return None
        digest = writer.commit()
        return self.add_layer(parent_chain, self.blobs.path(digest), MEDIA_LAYER_TAR)

    # -- deletion ---------------------------------------------------------

    def _users(self, image_id: str) -> list[tuple[str, bool]]:
        """(container id, running) of each container made from the image.

        Uses ``containers.image_users`` when the runtime offers it, else the
        contract's ``using_image`` (which names no container).
        """
        containers = getattr(self.daemon, "containers", None)
        users = getattr(containers, "image_users", None)
        if users is not None:
            return [(str(cid), bool(running)) for cid, running in users(image_id)]
        try:
            return [("", False)] if containers.using_image(image_id) else []  # type: ignore[union-attr]
        except AttributeError:
            return []

    def _in_use(self, image_id: str) -> bool:
        return bool(self._users(image_id))

    def delete(
        self, ref_or_id: str, force: bool = False, prune: bool = True
    ) -> list[dict[str, str]]:
        """``docker rmi``: untag a name, or delete an image and its unused layers.

        Returns the ``Untagged``/``Deleted`` records. Raises NotFound, or
        Conflict when the image is in use, has child images or (by id)
        several references and ``force`` is not set.
        """
        with self._lock:
            image = self.get(ref_or_id)
            records: list[dict[str, str]] = []
            refs = self.references(image.id)
            by_id = self._names_id(ref_or_id, image.id)
            removed_ref = False
            if not by_id:
                named = parse(ref_or_id)
                if named.tag and named.digest:
                    named = named.with_digest(named.digest)
                users = self._users(image.id)
                if not force and _single_repository(refs) and users:
                    who = (
                        f"container {users[0][0][:12]}"
                        if users[0][0]
                        else "a container"
                    )
                    raise Conflict(
                        f'conflict: unable to remove repository reference "{ref_or_id}" (must force) - {who} is using its referenced image {image.short_id}'
                    )
                self.untag(named)
                records.append({"Untagged": named.familiar})
                refs = self.references(image.id)
                if not named.digest and not any(
                    not r.digest and r.repository == named.repository for r in refs
                ):
                    for r in [
                        r for r in refs if r.digest and r.repository == named.repository
                    ]:
                        self.untag(r)
                        records.append({"Untagged": f"{r.familiar_name}@{r.digest}"})
                    refs = self.references(image.id)
                if refs:
                    return records
                removed_ref = True
            elif _single_repository(refs):
                self._check_conflicts(
                    image, hard=True, soft=not force, references=False
                )
                for r in refs:
                    self.untag(r)
                    records.append({"Untagged": _display(r)})
            self._delete_image(image, records, force, prune, quiet=removed_ref)
        self._empty_trash()
        return records

    def _names_id(self, text: str, image_id: str) -> bool:
        hex_id = image_id[7:]
        if text.startswith("sha256:"):
            return hex_id.startswith(text[7:])
        return self.resolve_reference(text) is None and hex_id.startswith(text)

    def _check_conflicts(
        self, image: Image, hard: bool, soft: bool, references: bool = True
    ) -> None:
        def conflict(message: str, forceable: bool) -> Conflict:
            how = "must be forced" if forceable else "cannot be forced"
            return Conflict(
                f"conflict: unable to delete {image.short_id} ({how}) - {message}"
            )

        if hard and self.children(image.id):
            raise conflict("image has dependent child images", False)
        users = self._users(image.id)
        running = [cid for cid, up in users if up]
        if hard and running:
            raise conflict(
                f"image is being used by running container {running[0][:12]}", False
            )
        if soft and references and self.references(image.id):
            raise conflict("image is referenced in multiple repositories", True)
        if soft and users:
            cid = users[0][0]
            who = f"stopped container {cid[:12]}" if cid else "a container"
            raise conflict(f"image is being used by {who}", True)

    def _delete_image(
        self,
        image: Image,
        records: list[dict[str, str]],
        force: bool,
        prune: bool,
        quiet: bool,
    ) -> None:
        try:
            self._check_conflicts(image, hard=True, soft=not force)
        except Conflict:
            # Pruning a parent stops quietly at the first image still needed.
            needed = (
                self.references(image.id)
                or self.children(image.id)
                or self._in_use(image.id)
            )
            if quiet and needed:
                return
            raise
        for r in self.references(image.id):
            self.untag(r)
            records.append({"Untagged": _display(r)})
        if self._in_use(image.id):
            # Forced past a container that uses it: the container still needs
            # the layers, so the image stays, untagged, as dockerd leaves it.
            return
        parent = image.parent
        self._images.pop(image.id, None)
        with contextlib.suppress(FileNotFoundError):
            (self.imagedb_dir / f"{split_digest(image.id)}.json").unlink()
        self.blobs.delete(image.id)
        self.events.publish("image", "delete", image.id, {"name": image.id})
        records.append({"Deleted": image.id})
        for chain in self._release_layers(image.layers):
            records.append({"Deleted": chain})
        log.info("deleted image %s", image.short_id)
        if prune and parent and parent in self._images:
            self._delete_image(self._images[parent], records, False, True, quiet=True)

    def _release_layers(self, chains: list[str]) -> list[str]:
        """Remove the given layers no image still uses; returns the removed chain ids."""
        used = {c for img in self._images.values() for c in img.layers}
        now = time.monotonic()
        removed = []
        for chain in reversed(chains):
            if chain in used:
                continue
            fresh = self._fresh.get(chain)
            if fresh is not None and now - fresh < FRESH_LAYER_SECONDS:
                continue
            layer = self._layers.pop(chain, None)
            if layer is None:
                continue
            self._fresh.pop(chain, None)
            with contextlib.suppress(FileNotFoundError):
                (self.root / "l" / _link_name(chain)).unlink()
            # Renamed now, removed once the lock is free: a big layer takes
            # seconds to delete and the API's reads wait on this lock.
            trash = self.layers_dir / f"tmp-del-{uuid.uuid4().hex}"
            os.rename(layer.path, trash)
            self._trash.append(trash)
            if not any(
                other.blob_digest == layer.blob_digest
                for other in self._layers.values()
            ):
                self.blobs.delete(layer.blob_digest)
            removed.append(chain)
        return removed

    def prune(
        self,
        dangling_only: bool = True,
        keep: Any = None,
    ) -> tuple[list[dict[str, str]], int]:
        """Delete unused images (only untagged ones when ``dangling_only``).

        ``keep(image) -> bool`` spares images a filter rules out. Returns the
        records and the bytes reclaimed.
        """
        records: list[dict[str, str]] = []
        before = self.layers_size()
        with self._lock:
            candidates = [
                img
                for img in self.list_images()
                if not (dangling_only and img.repo_tags)
                and not self._in_use(img.id)
                and not (keep is not None and keep(img))
            ]
            # An image with children waits for them: passes until none goes.
            progress = True
            while progress:
                progress = False
                for img in candidates:
                    if img.id not in self._images or self.children(img.id):
                        continue
                    # Dangling images may still carry digests (pulled by digest).
                    for r in self.references(img.id):
                        self.untag(r)
                        records.append({"Untagged": _display(r)})
                    with contextlib.suppress(Conflict):
                        self._delete_image(
                            img, records, force=False, prune=True, quiet=True
                        )
                    progress = progress or img.id not in self._images
        self._empty_trash()
        reclaimed = max(0, before - self.layers_size())
        self.events.publish("image", "prune", "", {"reclaimed": str(reclaimed)})
        return records, reclaimed

    # -- summaries --------------------------------------------------------

    def summary(
        self, image: Image, shared_size: int = -1, containers: int = -1
    ) -> dict[str, Any]:
        """One ``GET /images/json`` entry."""
        return {
            "Containers": containers,
            "Created": image.created_unix,
            "Id": image.id,
            "Labels": image.labels or None,
            "ParentId": image.parent,
            "RepoDigests": image.repo_digests,
            "RepoTags": image.repo_tags,
            "SharedSize": shared_size,
            "Size": image.size,
        }

    def shared_sizes(self, images: list[Image]) -> dict[str, int]:
        """Per image, the bytes of its layers that another of ``images`` uses.

        Only the images listed count, as dockerd does: in ``docker system
        df`` a built image's own layer is unique although its intermediate
        parents (not listed) hold it too.
        """
        with self._lock:
            users: dict[str, int] = {}
            for img in images:
                for chain in set(img.layers):
                    users[chain] = users.get(chain, 0) + 1
            return {
                img.id: sum(
                    self._layers[c].size
                    for c in set(img.layers)
                    if users.get(c, 0) > 1 and c in self._layers
                )
                for img in images
            }

    def top_level(self, images: list[Image]) -> list[Image]:
        """``images`` without the untagged parents of other images.

        What ``GET /images/json`` lists without ``all``: the builder's
        intermediate images stay hidden.
        """
        with self._lock:
            parents = {img.parent for img in self._images.values() if img.parent}
            return [
                img
                for img in images
                if img.repo_tags or img.repo_digests or img.id not in parents
            ]

    def df(self) -> list[dict[str, Any]]:
        """``GET /system/df``'s Images: the top-level images, as dockerd counts."""
        images = self.top_level(self.list_images())
        shared = self.shared_sizes(images)
        return [
            self.summary(img, shared[img.id], len(self._users(img.id)))
            for img in images
        ]

    def iter_layers(self) -> Iterator[Layer]:
        with self._lock:
            yield from list(self._layers.values())


def _link_name(chain: str) -> str:
    return base64.b32encode(hashlib.sha256(chain.encode()).digest()).decode()[:26]


def _missing_name(text: str) -> str:
    """The name a "No such image" error shows: ``nope:latest`` as dockerd does.

    Raises InvalidParameter for text that is neither a reference nor an id.
    """
    hex_part = text.removeprefix("sha256:")
    if text.startswith("sha256:") or (
        hex_part
        and all(c in "0123456789abcdef" for c in hex_part)
        and len(hex_part) == 64
    ):
        return text
    return parse(text).familiar


def _single_repository(refs: list[Reference]) -> bool:
    """True when all references are in one repository with at most one tag."""
    repos = {r.repository for r in refs}
    tags = [r for r in refs if not r.digest]
    return len(repos) <= 1 and len(tags) <= 1


def _display(ref: Reference) -> str:
    if ref.digest:
        return f"{ref.familiar_name}@{ref.digest}"
    return ref.familiar


class _Tee:
    """Reads ``raw`` and copies every byte into a blob writer."""

    def __init__(self, raw: IO[bytes], writer: BlobWriter) -> None:
        self.raw = raw
        self.writer = writer

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if data:
            self.writer.write(data)
        return data
