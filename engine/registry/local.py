"""The registry service's use of the image store, gathered in one place.

Pulls and pushes touch the store only through these functions, so the
contract between the two components (docs/DESIGN.md, ImageStore) is
visible at a glance: blobs through the verified ingest, layers by chain id,
images created from the registry's own config bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import IO, Any


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The chain id of each layer: ``sha256(parent_chain + " " + diff_id)``."""
    chains: list[str] = []
    for diff_id in diff_ids:
        if not chains:
            chains.append(diff_id)
        else:
            text = f"{chains[-1]} {diff_id}".encode()
            chains.append("sha256:" + hashlib.sha256(text).hexdigest())
    return chains


def layer_exists(store: Any, chain_id: str) -> bool:
    return bool(store.has_layer(chain_id))


def add_layer(
    store: Any, parent: str | None, blob: str, media_type: str, diff_id: str
) -> tuple[str, str]:
    """Unpack a downloaded layer blob in place; returns (chain id, diff id).

    Raises InvalidParameter when it does not unpack to ``diff_id``.
    """
    path = store.blobs.path(blob)
    layer = store.add_layer(parent, path, media_type, expected_diff_id=diff_id)
    return str(layer.chain_id), str(layer.diff_id)


def image_exists(store: Any, image_id: str) -> bool:
    return bool(store.exists(image_id))


def create_image(store: Any, config: bytes) -> str:
    """Record the image whose id is the digest of these exact config bytes."""
    return str(store.create_image(config).id)


def tag_target(store: Any, ref: str) -> str | None:
    """The image id ``ref`` names now, or None."""
    found = store.resolve_reference(ref)
    return str(found) if found else None


def tag(store: Any, image_id: str, ref: str) -> None:
    store.tag(image_id, ref)


def add_repo_digest(store: Any, image_id: str, ref: str) -> None:
    """Record ``name@sha256:...`` in the image's RepoDigests."""
    store.tag(image_id, ref)


@dataclass
class PushLayer:
    diff_id: str
    chain_id: str
    blob: str  # the layer as the store received it, maybe compressed
    media_type: str
    compressed: bool
    tar_size: int  # bytes of the uncompressed tar


def image_for_push(store: Any, ref: str) -> tuple[str, bytes, list[PushLayer]]:
    """(image id, config bytes, layers bottom first) of the image ``ref`` names.

    Raises NotFound.
    """
    image = store.get(ref)
    config = store.blobs.read(image.id)
    layers = []
    for chain in image.layers:
        layer = store.layer(chain)
        layers.append(
            PushLayer(
                diff_id=layer.diff_id,
                chain_id=layer.chain_id,
                blob=layer.blob_digest,
                media_type=layer.media_type,
                compressed=bool(layer.is_compressed),
                tar_size=int(layer.tar_size),
            )
        )
    return str(image.id), config, layers


def open_layer_tar(store: Any, chain_id: str) -> IO[bytes]:
    """The uncompressed tar of a layer (its bytes hash to the diff id)."""
    layer = store.layer(chain_id)
    stream: IO[bytes] = layer.open_tar(store.blobs)
    return stream
