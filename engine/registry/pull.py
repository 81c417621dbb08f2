"""Pulling an image: manifest, platform choice, verified layers, the image.

A pull goes the way dockerd's does:

1. ``GET /v2/<repo>/manifests/<tag|digest>`` accepting Docker schema 2 and
   OCI manifests and indexes; an index is narrowed to the engine's own
   platform (or the one asked for) and that manifest fetched by digest.
2. The config blob, whose ``rootfs.diff_ids`` give the chain id of every
   layer: those the store already has are reported as "Already exists"
   (nothing at all when the image itself is already there).
3. The other layers are downloaded three at a time, each hashed while it
   streams into the store's ingest area and renamed into place only when
   its digest matches; they are unpacked in order as soon as they and
   their parents are there, and their diff id checked against the config.
4. Only then is the image recorded, tagged, and its RepoDigest added.

A pull killed at any point leaves whole blobs and whole layers (both land
by rename), never an image that lacks one; the next pull reuses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import logging
import platform as host
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

from engine.errors import InvalidParameter
from engine.images.blobs import BlobWriter
from engine.images.reference import Reference
from engine.registry import local
from engine.registry.client import (
    READ_SIZE,
    Cancelled,
    RegistryError,
    RegistryNotFound,
)
from engine.registry.metadata import Metadata
from engine.registry.progress import Channel, Message, counter, short, status
from engine.registry.session import Session

log = logging.getLogger(__name__)

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
)
MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEXES = (DOCKER_LIST, OCI_INDEX)
ACCEPT = ", ".join((*MANIFESTS, *INDEXES))
LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
}
MAX_MANIFEST = 4 * 1024 * 1024
CONCURRENT_DOWNLOADS = 3
DOWNLOAD_ATTEMPTS = 3
RETRY_DELAY = 0.5
ARCHITECTURES = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


def host_platform() -> Platform:
    machine = host.machine()
    arch = ARCHITECTURES.get(machine, machine)
    variant = {"arm64": "v8", "armv7l": "v7", "armv6l": "v6"}.get(
        arch if arch == "arm64" else machine, ""
    )
    return Platform("linux", arch, variant)


def parse_platform(text: str | None) -> Platform | None:
    """``linux/arm64/v8`` or ``linux/amd64``; None or "" for the engine's own.

    Raises InvalidParameter for text that is not os/arch[/variant].
    """
    if not text:
        return None
    parts = text.lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidParameter(
            f'"{text}": unknown operating system or architecture: invalid argument'
        )
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(parts[1], parts[1])
    return Platform(parts[0], arch, parts[2] if len(parts) == 3 else "")


def _variant(arch: str, variant: str) -> str:
    # arm64 images rarely say "v8"; treat the two spellings as one.
    return "" if arch == "arm64" and variant == "v8" else variant


def select_manifest(index: dict[str, Any], want: Platform) -> dict[str, Any]:
    """The index entry for ``want``: exact variant first, then any variant.

    Raises RegistryNotFound with docker's text when none matches.
    """
    fallback = None
    for entry in index.get("manifests") or []:
        plat = entry.get("platform") or {}
        if plat.get("os") != want.os or plat.get("architecture") != want.architecture:
            continue
        if entry.get("mediaType") not in (*MANIFESTS, None):
            continue
        have = _variant(want.architecture, plat.get("variant", ""))
        wanted = _variant(want.architecture, want.variant)
        if have == wanted:
            return dict(entry)
        if fallback is None and (not have or not wanted):
            fallback = entry
    if fallback is not None:
        return dict(fallback)
    raise RegistryNotFound(
        f"no matching manifest for {want} in the manifest list entries"
    )


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Resolved:
    manifest: dict[str, Any]
    manifest_digest: str  # the image manifest's own digest
    pinned: str  # what the name resolved to: the index's digest, if any


class Puller:
    """One pull of one reference through one session."""

    def __init__(
        self,
        store: Any,
        metadata: Metadata,
        session: Session,
        ref: Reference,
        want: Platform,
        repo_key: str,
    ) -> None:
        self.store = store
        self.metadata = metadata
        self.session = session
        self.ref = ref
        self.want = want
        self.repo_key = repo_key  # "registry/path", for push's mount hints
        self.cancel = threading.Event()

    # -- blocking steps, run in threads --

    def _get_manifest(self, reference: str) -> tuple[bytes, str]:
        path = f"/v2/{self.session.repo}/manifests/{reference}"
        response = self.session.request("GET", path, {"Accept": ACCEPT})
        if response.status == 404:
            raise RegistryNotFound(
                f"manifest for {self.ref.familiar} not found: {response.error().message}"
            )
        if response.status != 200:
            raise response.error()
        body = response.read()
        if len(body) > MAX_MANIFEST:
            raise RegistryError(f"manifest for {self.ref.familiar} is too large")
        media_type = response.header("content-type").split(";")[0].strip()
        return body, media_type

    def resolve(self) -> Resolved:
        """Fetch the manifest (through an index if need be) and check digests.

        Raises RegistryNotFound ("manifest unknown", no platform match),
        RegistryUnauthorized, RegistryError.
        """
        reference = self.ref.digest or self.ref.tag or "latest"
        body, media_type = self._get_manifest(reference)
        pinned = digest_of(body)
        if self.ref.digest and pinned != self.ref.digest:
            raise RegistryError(
                f"manifest verification failed for digest {self.ref.digest}"
            )
        doc = self._parse(body)
        media_type = doc.get("mediaType") or media_type
        if media_type in INDEXES or (not media_type and "manifests" in doc):
            entry = select_manifest(doc, self.want)
            log.debug("%s: %s selected %s", self.ref, self.want, entry["digest"])
            body, media_type = self._get_manifest(entry["digest"])
            if digest_of(body) != entry["digest"]:
                raise RegistryError(
                    f"manifest verification failed for digest {entry['digest']}"
                )
            doc = self._parse(body)
            media_type = doc.get("mediaType") or media_type
        if media_type in SCHEMA1 or doc.get("schemaVersion") == 1:
            raise RegistryError(
                f"Docker Image Format v1 and Docker Image manifest version 2, schema 1 support has been removed. Push {self.ref.familiar} again with a newer client"
            )
        if "config" not in doc or "layers" not in doc:
            raise RegistryError(
                f"unsupported manifest media type {media_type or '(none)'}"
            )
        return Resolved(doc, digest_of(body), pinned)

    @staticmethod
    def _parse(body: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(body)
        except ValueError as err:
            raise RegistryError(f"invalid manifest: {err}") from None
        if not isinstance(doc, dict):
            raise RegistryError("invalid manifest: not a JSON object")
        return doc

    def fetch_blob(
        self, descriptor: dict[str, Any], report: Callable[[int], None]
    ) -> bool:
        """Download a blob into the store unless it is there; True if fetched.

        The blob is hashed as it streams into the ingest area and renamed
        into place only when whole and matching. A connection that breaks
        mid-blob is resumed with ``Range`` (from the start if the registry
        ignores it), up to DOWNLOAD_ATTEMPTS times, as dockerd does.
        Raises RegistryError (size or digest mismatch, registry errors, disk
        full), Cancelled, OSError (the registry is gone).
        """
        digest = str(descriptor["digest"])
        size = int(descriptor.get("size") or 0)
        blobs = self.store.blobs
        if blobs.exists(digest):
            return False
        # The writer in use: _receive replaces it when it has to start over.
        current = [blobs.ingest(digest)]
        try:
            for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
                try:
                    self._receive(digest, size, current, report)
                    break
                except (OSError, http.client.HTTPException) as err:
                    if attempt == DOWNLOAD_ATTEMPTS or self.cancel.is_set():
                        raise
                    log.info(
                        "download of %s broke at %d bytes (%s), resuming",
                        digest,
                        current[0].size,
                        err,
                    )
                    self.cancel.wait(RETRY_DELAY * attempt)
            writer = current[0]
            if size and writer.size != size:
                raise RegistryError(
                    f"unexpected EOF: blob {digest} ended after {writer.size} of {size} bytes"
                )
            try:
                writer.commit()
            except InvalidParameter as err:
                raise RegistryError(
                    f"filesystem layer verification failed for digest {digest}: {err}"
                ) from None
        except BaseException:
            current[0].abort()
            raise
        return True

    def _receive(
        self,
        digest: str,
        size: int,
        current: list[BlobWriter],
        report: Callable[[int], None],
    ) -> None:
        """Stream (the rest of) a blob into ``current[0]``."""
        writer = current[0]
        headers = {"Range": f"bytes={writer.size}-"} if writer.size else {}
        path = f"/v2/{self.session.repo}/blobs/{digest}"
        response = self.session.request("GET", path, headers)
        if response.status == 200 and writer.size:
            # The registry sent the whole blob again: start over.
            writer.abort()
            writer = current[0] = self.store.blobs.ingest(digest)
        elif response.status not in (200, 206):
            raise response.error(f"fetching blob {digest}")
        try:
            buffer = memoryview(bytearray(READ_SIZE))
            while True:
                if self.cancel.is_set():
                    raise Cancelled("pull cancelled")
                n = response.readinto(buffer)
                if not n:
                    if size and writer.size < size:
                        # http.client reports a body cut short as a plain end.
                        raise http.client.IncompleteRead(b"", size - writer.size)
                    return
                try:
                    # hashlib and files take the view as it is: no copy.
                    writer.write(cast(bytes, buffer[:n]))
                except OSError as err:
                    # Disk full or read-only: not worth a retry.
                    raise RegistryError(
                        f"writing blob {digest}: {err.strerror or err}"
                    ) from err
                if size and writer.size > size:
                    raise RegistryError(
                        f"blob {digest} is larger than its manifest says ({size} bytes)"
                    )
                report(writer.size)
        except BaseException:
            response.close()
            raise

    def extract(
        self, parent: str | None, descriptor: dict[str, Any], diff_id: str
    ) -> tuple[str, str]:
        if self.cancel.is_set():
            raise Cancelled("pull cancelled")
        try:
            return local.add_layer(
                self.store,
                parent,
                str(descriptor["digest"]),
                str(descriptor.get("mediaType", "")),
                diff_id,
            )
        except InvalidParameter as err:
            raise RegistryError(f"failed to register layer: {err.message}") from None

    # -- the pull --

    async def run(self, resolved: Resolved, channel: Channel) -> None:
        """Download and unpack what is missing, then record the image."""
        manifest = resolved.manifest
        config_desc = manifest["config"]
        layers = list(manifest.get("layers") or [])
        for layer in layers:
            media_type = layer.get("mediaType")
            if media_type and media_type not in LAYER_TYPES:
                raise RegistryError(f"unsupported layer media type {media_type}")

        await asyncio.to_thread(self.fetch_blob, config_desc, lambda n: None)
        config = await asyncio.to_thread(self.store.blobs.read, config_desc["digest"])
        image_id = digest_of(config)
        try:
            rootfs = json.loads(config).get("rootfs") or {}
        except (ValueError, AttributeError) as err:
            raise RegistryError(f"invalid image config {image_id}: {err}") from None
        diff_ids = list(rootfs.get("diff_ids") or [])
        if len(diff_ids) != len(layers):
            raise RegistryError(
                f"the image config lists {len(diff_ids)} layers, the manifest {len(layers)}"
            )
        chains = local.chain_ids(diff_ids)

        present = [
            await asyncio.to_thread(local.layer_exists, self.store, c) for c in chains
        ]
        todo = [i for i, there in enumerate(present) if not there]
        # An image the store already has gets no layer lines at all, as
        # dockerd answers a repeated pull: only the digest and the status.
        known = not todo and await asyncio.to_thread(
            local.image_exists, self.store, image_id
        )
        for i, layer in enumerate(layers):
            if present[i] and not known:
                channel.put(status("Already exists", short(layer["digest"])))
        queued: list[str] = []
        for i in todo:
            layer_id = short(layers[i]["digest"])
            if layer_id not in queued:
                queued.append(layer_id)
                channel.put(status("Pulling fs layer", layer_id))
        for layer_id in queued[CONCURRENT_DOWNLOADS:]:
            channel.put(status("Waiting", layer_id))

        downloads: dict[str, asyncio.Task[bool]] = {}
        limit = asyncio.Semaphore(CONCURRENT_DOWNLOADS)

        async def download(descriptor: dict[str, Any]) -> bool:
            layer_id = short(descriptor["digest"])
            total = int(descriptor.get("size") or 0)
            async with limit:

                def report(current: int) -> None:
                    channel.progress("Downloading", layer_id, current, total)

                fetched = await asyncio.to_thread(self.fetch_blob, descriptor, report)
            if fetched:
                channel.put(status("Verifying Checksum", layer_id))
            channel.put(status("Download complete", layer_id))
            return fetched

        for i in todo:
            digest = layers[i]["digest"]
            if digest not in downloads:
                downloads[digest] = asyncio.create_task(download(layers[i]))

        fetched_any = False
        try:
            for i in todo:
                descriptor = layers[i]
                layer_id = short(descriptor["digest"])
                fetched_any |= await downloads[descriptor["digest"]]
                total = int(descriptor.get("size") or 0)
                # The store unpacks the blob in place (no copy), so the bar
                # only marks the start and the end of the step.
                channel.put(counter("Extracting", layer_id, 0, total))
                parent = chains[i - 1] if i else None
                chain, diff_id = await asyncio.to_thread(
                    self.extract, parent, descriptor, diff_ids[i]
                )
                channel.put(counter("Extracting", layer_id, total, total))
                if diff_id != diff_ids[i] or chain != chains[i]:
                    raise RegistryError(
                        f"layer {descriptor['digest']} unpacks to {diff_id}, the image config says {diff_ids[i]}"
                    )
                await asyncio.to_thread(
                    self.metadata.remember,
                    diff_id,
                    descriptor["digest"],
                    str(descriptor.get("mediaType", "")),
                    int(descriptor.get("size") or 0),
                    self.repo_key,
                )
                channel.put(status("Pull complete", layer_id))
        except BaseException:
            # Threads cannot be cancelled: they stop at their next chunk.
            self.cancel.set()
            for task in downloads.values():
                task.cancel()
            await asyncio.gather(*downloads.values(), return_exceptions=True)
            raise

        for i, layer in enumerate(layers):
            if present[i]:
                await asyncio.to_thread(
                    self.metadata.remember,
                    diff_ids[i],
                    layer["digest"],
                    str(layer.get("mediaType", "")),
                    int(layer.get("size") or 0),
                    self.repo_key,
                )

        # The image exists only now, with every layer in place.
        name = self.ref.name_only()
        before = None
        if self.ref.tag and not self.ref.digest:
            before = await asyncio.to_thread(
                local.tag_target, self.store, str(self.ref)
            )
        had_image = await asyncio.to_thread(local.image_exists, self.store, image_id)
        await asyncio.to_thread(local.create_image, self.store, config)
        if self.ref.tag and not self.ref.digest:
            await asyncio.to_thread(local.tag, self.store, image_id, str(self.ref))
        await asyncio.to_thread(
            local.add_repo_digest, self.store, image_id, f"{name}@{resolved.pinned}"
        )
        channel.put(status(f"Digest: {resolved.pinned}"))
        familiar = self.ref.familiar
        if before == image_id and had_image and not fetched_any and not todo:
            channel.put(status(f"Status: Image is up to date for {familiar}"))
        else:
            channel.put(status(f"Status: Downloaded newer image for {familiar}"))
        log.info("pulled %s (%s)", familiar, image_id[:19])


async def stream(run: Callable[[Channel], Any]) -> AsyncIterator[Message]:
    """Run ``run(channel)`` as a task and yield its messages as they come.

    Closing the iterator (the client went away) cancels the task; an error
    in the task is raised here after the messages before it.
    """
    channel = Channel()
    task = asyncio.create_task(run(channel))
    task.add_done_callback(lambda _: channel.queue.put_nowait(None))
    try:
        while True:
            message = await channel.queue.get()
            if message is None:
                break
            yield message
        while not channel.queue.empty():
            message = channel.queue.get_nowait()
            if message is not None:
                yield message
        task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
