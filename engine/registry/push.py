"""Pushing an image: the blobs a registry lacks, then the manifest.

For each layer (by diff id) the engine looks for a compressed form it
already knows (:mod:`engine.registry.metadata`):

- known in this repository and still there (``HEAD`` says 200):
  "Layer already exists";
- known in another repository of the same registry: a cross-repository
  mount, ``POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<other>``,
  "Mounted from other/repo";
- present in the local blob store: uploaded as it is;
- otherwise the layer's plain tar is gzipped deterministically (no name,
  no time stamp, fixed level) straight into a chunked ``PATCH`` upload,
  and only its digest remembered: the same tar always gives the same blob.

Blobs already compressed in the store go up monolithically (``POST`` a
session, ``PUT ?digest=`` with the bytes).
The config blob follows, then a Docker schema 2 manifest (OCI when a layer
is zstd) under the tag; the registry's digest for it ends the stream as
docker prints it: ``1: digest: sha256:... size: 527``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any
from urllib.parse import urlencode, urljoin

from engine.errors import NotFound
from engine.images.reference import Reference
from engine.registry import local
from engine.registry.client import (
    READ_SIZE,
    Cancelled,
    RegistryError,
    RegistryUnauthorized,
)
from engine.registry.metadata import Metadata
from engine.registry.progress import Channel, short, status
from engine.registry.pull import DOCKER_MANIFEST, OCI_MANIFEST, digest_of
from engine.registry.session import NO_BASIC_CREDENTIALS, NoBasicCredentials, Session

log = logging.getLogger(__name__)

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
GZIP_TYPES = (
    DOCKER_GZIP,
    OCI_GZIP,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)
CONCURRENT_UPLOADS = 3
# Level 1 trades some size for speed (docker uses the default level); the
# output depends only on the input, so a layer always pushes as one digest.
GZIP_LEVEL = 1


def gzip_chunks(
    source: IO[bytes], cancel: threading.Event, report: Callable[[int], None]
) -> Iterator[bytes]:
    """Deterministic gzip of ``source`` (no name, mtime 0), piece by piece.

    ``report`` gets the count of plain bytes consumed so far.
    """
    # RFC 1952 header: magic, deflate, no flags, mtime 0, XFL, OS=unknown.
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, 9)
    crc = 0
    size = 0
    while True:
        if cancel.is_set():
            raise Cancelled("push cancelled")
        chunk = source.read(READ_SIZE)
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        size += len(chunk)
        out = compressor.compress(chunk)
        if out:
            yield out
        report(size)
    yield (
        compressor.flush()
        + crc.to_bytes(4, "little")
        + (size & 0xFFFFFFFF).to_bytes(4, "little")
    )


class _Digester:
    """Digest and size of the bytes an upload body yields."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0

    def through(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self._hash.update(chunk)
            self.size += len(chunk)
            yield chunk

    @property
    def digest(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"


class _ProgressFile(io.RawIOBase):
    """The body of an upload: a blob file that reports what was sent."""

    def __init__(
        self, path: Any, report: Callable[[int], None], cancel: threading.Event
    ) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._report = report
        self._cancel = cancel
        self.sent = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self._cancel.is_set():
            raise Cancelled("push cancelled")
        data = self._file.read(READ_SIZE if size is None or size < 0 else size)
        self.sent += len(data)
        self._report(self.sent)
        return data

    def close(self) -> None:
        self._file.close()
        super().close()


class Pusher:
    """One push of one tag through one session."""

    def __init__(
        self,
        store: Any,
        metadata: Metadata,
        session: Session,
        ref: Reference,
        registry: str,
    ) -> None:
        self.store = store
        self.metadata = metadata
        self.session = session
        self.ref = ref
        self.registry = registry  # "127.0.0.1:5000": mount sources must live there
        self.repo_key = f"{registry}/{session.repo}"
        self.cancel = threading.Event()

    # -- blocking steps --

    def blob_exists(self, digest: str) -> bool:
        response = self.session.request(
            "HEAD", f"/v2/{self.session.repo}/blobs/{digest}"
        )
        response.close()
        if response.status == 200:
            return True
        if response.status == 404:
            return False
        raise response.error(f"checking blob {digest}")

    def mount(self, digest: str, source: str) -> str | None:
        """Try a cross-repository mount; returns an upload URL if refused."""
        query = urlencode({"mount": digest, "from": source})
        scopes = (*self.session.scopes, f"repository:{source}:pull")
        response = self.session.request(
            "POST",
            f"/v2/{self.session.repo}/blobs/uploads/?{query}",
            scopes=scopes,
            body=b"",
        )
        response.read()
        if response.status == 201:
            return None
        if response.status == 202:
            return urljoin(self.session.url("/"), response.header("location"))
        raise RegistryError(
            f"mounting {digest} from {source}: status {response.status}"
        )

    def upload(
        self,
        digest: str,
        size: int,
        report: Callable[[int], None],
        location: str | None = None,
    ) -> None:
        """Monolithic upload (``PUT ?digest=``) of a blob in the store.

        Raises RegistryError.
        """
        if location is None:
            response = self.session.request(
                "POST", f"/v2/{self.session.repo}/blobs/uploads/", body=b""
            )
            if response.status != 202:
                raise response.error()
            response.read()
            location = urljoin(self.session.url("/"), response.header("location"))
        target = (
            location + ("&" if "?" in location else "?") + urlencode({"digest": digest})
        )
        body = _ProgressFile(self.store.blobs.path(digest), report, self.cancel)
        try:
            response = self.session.request(
                "PUT",
                target,
                {
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(size),
                },
                body=body,
            )
        finally:
            body.close()
        if response.status not in (201, 204):
            raise response.error()
        response.read()

    def _cancel_upload(self, location: str) -> None:
        """Drop an upload session the registry opened instead of mounting."""
        try:
            self.session.request("DELETE", location).close()
        except (OSError, RegistryError) as err:
            log.debug("cancelling upload %s: %s", location, err)

    def stored_form(self, layer: local.PushLayer) -> dict[str, Any] | None:
        """A compressed blob of the layer already in the store, if any."""
        for entry in self.metadata.blobs(layer.diff_id):
            if self.store.blobs.exists(entry["digest"]):
                return entry
        if layer.compressed and self.store.blobs.exists(layer.blob):
            zstd = layer.media_type.endswith("+zstd")
            media_type = OCI_ZSTD if zstd else DOCKER_GZIP
            size = self.store.blobs.size(layer.blob)
            self.metadata.remember(layer.diff_id, layer.blob, media_type, size, None)
            return {"digest": layer.blob, "mediaType": media_type, "size": size}
        return None

    def stream_compressed(
        self, layer: local.PushLayer, layer_id: str, channel: Channel
    ) -> dict[str, Any]:
        """Gzip a plain layer straight into a chunked upload (``PATCH``).

        Nothing is kept locally but the digest: the compression is
        deterministic, so a later push finds the blob by that digest.
        """
        response = self.session.request(
            "POST", f"/v2/{self.session.repo}/blobs/uploads/", body=b""
        )
        if response.status != 202:
            raise response.error()
        response.read()
        location = urljoin(self.session.url("/"), response.header("location"))
        hasher = _Digester()
        total = layer.tar_size

        def report(done: int) -> None:
            channel.progress("Pushing", layer_id, min(done, total), total)

        def chunks() -> Iterator[bytes]:
            with local.open_layer_tar(self.store, layer.chain_id) as source:
                yield from gzip_chunks(source, self.cancel, report)

        response = self.session.request(
            "PATCH",
            location,
            {"Content-Type": "application/octet-stream"},
            body=hasher.through(chunks()),
        )
        if response.status != 202:
            raise response.error()
        response.read()
        location = urljoin(location, response.header("location") or location)
        target = location + ("&" if "?" in location else "?")
        response = self.session.request(
            "PUT", target + urlencode({"digest": hasher.digest}), body=b""
        )
        if response.status not in (201, 204):
            raise response.error()
        response.read()
        self.metadata.remember(
            layer.diff_id, hasher.digest, DOCKER_GZIP, hasher.size, None
        )
        log.debug(
            "streamed layer %s as %s, %d bytes",
            layer.diff_id[:19],
            hasher.digest[:19],
            hasher.size,
        )
        return {"digest": hasher.digest, "mediaType": DOCKER_GZIP, "size": hasher.size}

    def push_layer(self, layer: local.PushLayer, channel: Channel) -> dict[str, Any]:
        """Make sure the registry has a compressed form; returns its descriptor."""
        diff_id = layer.diff_id
        layer_id = short(diff_id)
        known = self.metadata.blobs(diff_id)
        # Forms the registry may have already: here, or in a sibling repository.
        for entry in known:
            if self.blob_exists(entry["digest"]):
                channel.put_threadsafe(status("Layer already exists", layer_id))
                return entry
        for entry in known:
            for repo in entry.get("repos") or []:
                source_registry, _, source = repo.partition("/")
                if source_registry != self.registry or repo == self.repo_key:
                    continue
                location = self.mount(entry["digest"], source)
                if location is None:
                    channel.put_threadsafe(status(f"Mounted from {source}", layer_id))
                    return entry
                if self.store.blobs.exists(entry["digest"]):
                    self._send(entry, layer_id, channel, location)
                    return entry
                self._cancel_upload(location)
        stored = self.stored_form(layer)
        if stored is None:
            streamed = self.stream_compressed(layer, layer_id, channel)
            channel.put_threadsafe(status("Pushed", layer_id))
            return streamed
        if self.blob_exists(stored["digest"]):
            channel.put_threadsafe(status("Layer already exists", layer_id))
        else:
            self._send(stored, layer_id, channel, None)
        return stored

    def _send(
        self,
        entry: dict[str, Any],
        layer_id: str,
        channel: Channel,
        location: str | None,
    ) -> None:
        size = int(entry["size"])

        def report(sent: int) -> None:
            channel.progress("Pushing", layer_id, sent, size)

        self.upload(entry["digest"], size, report, location)
        channel.put_threadsafe(status("Pushed", layer_id))

    def put_manifest(self, manifest: bytes, media_type: str, tag: str) -> str:
        response = self.session.request(
            "PUT",
            f"/v2/{self.session.repo}/manifests/{tag}",
            {"Content-Type": media_type},
            body=manifest,
        )
        if response.status not in (200, 201, 202):
            raise response.error()
        response.read()
        digest = digest_of(manifest)
        said = response.header("docker-content-digest")
        if said and said != digest:
            raise RegistryError(
                f"the registry stored the manifest as {said}, expected {digest}"
            )
        return digest

    # -- the push --

    async def run(self, channel: Channel) -> None:
        tag = self.ref.tag or "latest"
        try:
            image_id, config, layers = await asyncio.to_thread(
                local.image_for_push, self.store, str(self.ref)
            )
        except NotFound:
            raise NotFound(
                f"An image does not exist locally with the tag: {self.ref.familiar_name}"
            ) from None
        channel.put(status(f"The push refers to repository [{self.ref.repository}]"))
        # docker lists the top layer first; a layer twice in an image goes once.
        unique = list({layer.diff_id: layer for layer in reversed(layers)}.values())
        for layer in unique:
            channel.put(status("Preparing", short(layer.diff_id)))
        for layer in unique[CONCURRENT_UPLOADS:]:
            channel.put(status("Waiting", short(layer.diff_id)))

        limit = asyncio.Semaphore(CONCURRENT_UPLOADS)

        async def push_one(layer: local.PushLayer) -> dict[str, Any]:
            async with limit:
                try:
                    return await asyncio.to_thread(self.push_layer, layer, channel)
                except NoBasicCredentials:
                    # dockerd's push names no URL here, only the reason.
                    raise RegistryUnauthorized(NO_BASIC_CREDENTIALS) from None

        tasks = {
            layer.diff_id: asyncio.create_task(push_one(layer)) for layer in unique
        }
        try:
            descriptors = {d: await t for d, t in tasks.items()}
        except BaseException:
            self.cancel.set()
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            raise
        diff_ids = [layer.diff_id for layer in layers]

        config_digest = digest_of(config)
        if not await asyncio.to_thread(self.blob_exists, config_digest):
            await asyncio.to_thread(
                self.upload, config_digest, len(config), lambda n: None
            )

        layer_descs = [descriptors[d] for d in diff_ids]
        oci = any(d.get("mediaType") == OCI_ZSTD for d in layer_descs)
        entries: list[dict[str, Any]] = []
        for desc in layer_descs:
            media_type = str(desc.get("mediaType") or DOCKER_GZIP)
            if oci and media_type == DOCKER_GZIP:
                media_type = OCI_GZIP
            elif not oci and media_type in GZIP_TYPES:
                media_type = DOCKER_GZIP
            entries.append(
                {
                    "mediaType": media_type,
                    "size": int(desc["size"]),
                    "digest": desc["digest"],
                }
            )
        manifest_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
        manifest = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {
                "mediaType": OCI_CONFIG if oci else DOCKER_CONFIG,
                "size": len(config),
                "digest": config_digest,
            },
            "layers": entries,
        }
        body = json.dumps(manifest, indent=3).encode()
        digest = await asyncio.to_thread(self.put_manifest, body, manifest_type, tag)

        for diff_id, desc in zip(diff_ids, layer_descs, strict=True):
            await asyncio.to_thread(
                self.metadata.remember,
                diff_id,
                desc["digest"],
                str(desc.get("mediaType") or DOCKER_GZIP),
                int(desc["size"]),
                self.repo_key,
            )
        await asyncio.to_thread(
            local.add_repo_digest,
            self.store,
            image_id,
            f"{self.ref.name_only()}@{digest}",
        )
        channel.put(status(f"{tag}: digest: {digest} size: {len(body)}"))
        channel.put(
            {
                "progressDetail": {},
                "aux": {"Tag": tag, "Digest": digest, "Size": len(body)},
            }
        )
        log.info("pushed %s (%s)", self.ref.familiar, digest[:19])
