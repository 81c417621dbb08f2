"""Engine API: images, and ``/commit``.

Listing, inspecting and tagging answer from the store's memory; loading,
saving, importing and deleting touch the disk in a worker thread. Pull and
push belong to the registry service, whose progress messages are streamed
here as JSON lines::

    POST /images/create?fromImage=busybox&tag=latest
    {"status":"Pulling from library/busybox","id":"latest"}
    ...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import IO, Any

from engine.errors import EngineError, InvalidParameter, NotFound
from engine.http.server import (
    Request,
    Response,
    RouteTable,
    StreamResponse,
    json_response,
)
from engine.images import archive
from engine.images.reference import parse, parse_repo_tag
from engine.images.store import Image, ImageStore, parse_time

log = logging.getLogger(__name__)

routes = RouteTable()

IMAGE_LIST_FILTERS = {"dangling", "label", "before", "since", "reference", "until"}
PRUNE_FILTERS = {"dangling", "label", "until"}
TRUE_VALUES = {"true", "1"}
FALSE_VALUES = {"false", "0"}


class NotImplementedByEngine(EngineError):
    """An endpoint this engine does not offer."""

    status = 501


# -- request bodies read from a worker thread -----------------------------


class BodyReader:
    """The request body as a blocking file, for tar code in a worker thread.

    Each ``read`` that runs dry fetches the next chunk from the event loop,
    so the client's upload streams straight into the layer being unpacked.
    """

    def __init__(self, req: Request, loop: asyncio.AbstractEventLoop) -> None:
        self._chunks = req.stream()
        self._loop = loop
        self._buffer = b""
        self._done = False

    def _next_chunk(self) -> bytes:
        if self._done:
            return b""
        future = asyncio.run_coroutine_threadsafe(self._fetch(), self._loop)
        chunk = future.result()
        if not chunk:
            self._done = True
        return chunk

    async def _fetch(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return b""

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._buffer]
            self._buffer = b""
            while chunk := self._next_chunk():
                parts.append(chunk)
            return b"".join(parts)
        while not self._buffer and not self._done:
            self._buffer = self._next_chunk()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    async def drain(self) -> None:
        """Read what the client still sends, so the connection stays usable."""
        if self._done:
            return
        async for _ in self._chunks:
            pass
        self._done = True


def _json_line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\r\n"


def _error_line(message: str) -> bytes:
    return _json_line({"errorDetail": {"message": message}, "error": message})


def _before(req: Request, version: tuple[int, int]) -> bool:
    """True when the client speaks an API version older than ``version``."""
    try:
        major, minor = (int(p) for p in req.api_version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) < version


def _store(req: Request) -> ImageStore:
    store: ImageStore = req.app.images
    return store


def _bool_filter(name: str, values: list[str]) -> bool:
    value = values[-1].lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise InvalidParameter(f"Invalid filter '{name}={values[-1]}'")


def _check_filters(filters: dict[str, list[str]], allowed: set[str]) -> None:
    for key in filters:
        if key not in allowed:
            raise InvalidParameter(f"invalid filter '{key}'")


def _until(value: str) -> float:
    """A ``until`` value: unix seconds, an RFC 3339 time or a Go duration ago."""
    try:
        return float(value)
    except ValueError:
        pass
    match = re.fullmatch(r"((?:\d+(?:\.\d+)?(?:h|m|s|ms))+)", value)
    if match:
        seconds = 0.0
        scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
        for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value):
            seconds += float(number) * scale[unit]
        return time.time() - seconds
    stamp = parse_time(value)
    if stamp == 0:
        raise InvalidParameter(f"invalid value for until: {value!r}")
    return float(stamp)


def _label_matches(image: Image, wanted: list[str]) -> bool:
    labels = image.labels
    for item in wanted:
        negate = False
        key, sep, value = item.partition("=")
        if key.endswith("!"):
            negate, key = True, key[:-1]
        present = key in labels and (not sep or labels[key] == value)
        if present == negate:
            return False
    return True


def _glob(pattern: str) -> re.Pattern[str]:
    """Go's path.Match: ``*`` and ``?`` stop at ``/``."""
    out = []
    for char in pattern:
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(char))
    return re.compile("^" + "".join(out) + "$")


def _reference_matches(
    patterns: list[re.Pattern[str]], familiar: str, name: str
) -> bool:
    return any(p.match(familiar) or p.match(name) for p in patterns)


# -- list, inspect, history ----------------------------------------------


@routes.get("/images/json")
async def list_images(req: Request) -> Response:
    store = _store(req)
    filters = req.filters()
    _check_filters(filters, IMAGE_LIST_FILTERS)
    show_all = req.flag("all")
    dangling = (
        _bool_filter("dangling", filters["dangling"])
        if filters.get("dangling")
        else None
    )
    before = [store.get(ref).created_unix for ref in filters.get("before", [])]
    since = [store.get(ref).created_unix for ref in filters.get("since", [])]
    until = [_until(v) for v in filters.get("until", [])]
    patterns = [_glob(p) for p in filters.get("reference", [])]

    images = store.list_images()
    selected: list[tuple[Image, dict[str, Any]]] = []
    for image in images:
        created = image.created_unix
        if any(created >= b for b in before) or any(created <= s for s in since):
            continue
        if any(created >= u for u in until):
            continue
        if filters.get("label") and not _label_matches(image, filters["label"]):
            continue
        refs = image.references
        if patterns:
            refs = [
                r
                for r in refs
                if _reference_matches(
                    patterns,
                    r.familiar if not r.digest else f"{r.familiar_name}@{r.digest}",
                    r.familiar_name,
                )
            ]
        tags = [r.familiar for r in refs if not r.digest]
        digests = [f"{r.familiar_name}@{r.digest}" for r in refs if r.digest]
        if dangling is True and (image.repo_tags or store.children(image.id)):
            continue
        if not tags and not digests:
            if patterns or dangling is False:
                continue
            if not show_all and dangling is None and store.children(image.id):
                continue
        summary = store.summary(image)
        summary["RepoTags"] = tags
        summary["RepoDigests"] = digests
        if _before(req, (1, 44)):
            # Removed in API 1.44; older clients (docker-py 6, compose 1) still read it.
            summary["VirtualSize"] = summary["Size"]
        selected.append((image, summary))
    if req.flag("shared-size"):
        # dockerd counts a layer as shared among the images it lists only.
        shared = store.shared_sizes([image for image, _ in selected])
        for image, summary in selected:
            summary["SharedSize"] = shared[image.id]
    return json_response([summary for _, summary in selected])


@routes.get("/images/search")
async def search_images(req: Request) -> Response:
    raise NotImplementedByEngine(
        "image search is not supported by this engine; search on the registry's website instead"
    )


@routes.get("/images/get")
async def save_images(req: Request) -> StreamResponse:
    names = req.args("names")
    if not names:
        raise InvalidParameter("no image names given: use ?names=NAME")
    return await _save(req, names)


@routes.get("/images/{name:.*}/json")
async def inspect_image(req: Request) -> Response:
    image = _store(req).get(req.params["name"])
    body = image.inspect()
    if _before(req, (1, 44)):
        body["VirtualSize"] = body["Size"]
    return json_response(body)


@routes.get("/images/{name:.*}/history")
async def image_history(req: Request) -> Response:
    store = _store(req)
    image = store.get(req.params["name"])
    return json_response(history(store, image))


def history(store: ImageStore, image: Image) -> list[dict[str, Any]]:
    """``docker history``: newest step first, sizes from the layers.

    As in dockerd, steps are matched to the image and then its parents;
    steps of a pulled image (no parents here) show ``<missing>``.
    """
    layers = store.image_layers(image)
    steps = list(image.config.get("history") or [])
    if not steps:
        steps = [{"created": image.created, "created_by": ""} for _ in layers]
    entries: list[dict[str, Any]] = []
    index = 0
    for step in steps:
        size = 0
        if not step.get("empty_layer"):
            if index < len(layers):
                size = layers[index].size
            index += 1
        entries.append(
            {
                "Id": "<missing>",
                "Created": parse_time(step.get("created")),
                "CreatedBy": step.get("created_by", ""),
                "Tags": None,
                "Size": size,
                "Comment": step.get("comment", ""),
            }
        )
    entries.reverse()
    current: Image | None = image
    for entry in entries:
        if current is None:
            break
        entry["Id"] = current.id
        entry["Tags"] = current.repo_tags or None
        try:
            current = store.get(current.parent) if current.parent else None
        except NotFound:
            current = None
    return entries


# -- tag and delete -------------------------------------------------------


@routes.post("/images/{name:.*}/tag")
async def tag_image(req: Request) -> Response:
    store = _store(req)
    image = store.get(req.params["name"])
    repo = req.arg("repo") or ""
    if not repo:
        raise InvalidParameter("repository name is required: use ?repo=NAME")
    ref = parse_repo_tag(repo, req.arg("tag"))
    if ref.digest:
        raise InvalidParameter("refusing to create a tag with a digest reference")
    await asyncio.to_thread(store.tag, image.id, ref)
    return Response(status=201)


@routes.delete("/images/{name:.*}")
async def delete_image(req: Request) -> Response:
    store = _store(req)
    records = await asyncio.to_thread(
        store.delete, req.params["name"], req.flag("force"), not req.flag("noprune")
    )
    return json_response(records)


@routes.post("/images/prune")
async def prune_images(req: Request) -> Response:
    store = _store(req)
    filters = req.filters()
    _check_filters(filters, PRUNE_FILTERS)
    dangling = True
    if filters.get("dangling"):
        dangling = _bool_filter("dangling", filters["dangling"])
    until = [_until(v) for v in filters.get("until", [])]
    labels = filters.get("label", [])

    def keep(image: Image) -> bool:
        if any(image.created_unix >= u for u in until):
            return True
        return bool(labels) and not _label_matches(image, labels)

    records, reclaimed = await asyncio.to_thread(store.prune, dangling, keep)
    return json_response(
        {"ImagesDeleted": records or None, "SpaceReclaimed": reclaimed}
    )


# -- load and save --------------------------------------------------------


@routes.post("/images/load")
async def load_images(req: Request) -> Response:
    store = _store(req)
    reader = BodyReader(req, asyncio.get_running_loop())
    lines: list[str] = []
    try:
        await asyncio.to_thread(archive.load, store, reader, lines.append)  # type: ignore[arg-type]
    finally:
        # tar stops at its end marker; the client may still send padding.
        await reader.drain()
    body = b"".join(_json_line({"stream": line + "\n"}) for line in lines)
    return Response(body=body, content_type="application/json")


@routes.get("/images/{name:.*}/get")
async def save_image(req: Request) -> StreamResponse:
    return await _save(req, [req.params["name"]])


async def _save(req: Request, names: list[str]) -> StreamResponse:
    store = _store(req)
    selection = await asyncio.to_thread(archive.select_images, store, names)
    entries = await asyncio.to_thread(archive.save_entries, store, selection)
    for image, refs in selection:
        name = refs[0].familiar if refs else image.id
        store.events.publish("image", "save", image.id, {"name": name})
    return StreamResponse(_tar_stream(entries), content_type="application/x-tar")


async def _tar_stream(entries: list[archive.SaveEntry]) -> AsyncIterator[bytes]:
    for directory in archive.directories(entries):
        yield archive.tar_header(directory + "/", 0, directory=True)
    for entry in entries:
        yield archive.tar_header(entry.name, entry.size)
        if entry.data is not None:
            yield entry.data
            written = len(entry.data)
        else:
            assert entry.opener is not None
            source = await asyncio.to_thread(entry.opener)
            written = 0
            try:
                while chunk := await asyncio.to_thread(source.read, 1024 * 1024):
                    written += len(chunk)
                    yield chunk
            finally:
                source.close()
        archive.check_length(entry.name, entry.size, written)
        yield archive.padding(entry.size)
    yield archive.END_OF_ARCHIVE


# -- create: import and pull ----------------------------------------------


def _changes(req: Request) -> list[str]:
    return [c for c in req.args("changes") if c.strip()]


@routes.post("/images/create")
async def create_image(req: Request) -> Response | StreamResponse:
    from_image = req.arg("fromImage")
    from_src = req.arg("fromSrc")
    if from_src:
        return await _import(req, from_src)
    if from_image:
        return await _pull(req, from_image)
    raise InvalidParameter("either fromImage or fromSrc is required")


async def _import(req: Request, source: str) -> Response:
    store = _store(req)
    repo = req.arg("repo") or ""
    ref = parse_repo_tag(repo, req.arg("tag")) if repo else None
    if ref is not None and ref.digest:
        raise InvalidParameter("cannot import digest reference")
    changes = _changes(req)
    reader: Any
    if source == "-":
        reader = BodyReader(req, asyncio.get_running_loop())
    elif source.startswith(("http://", "https://")):
        reader = await asyncio.to_thread(_open_url, source)
    else:
        raise InvalidParameter(f"fromSrc must be - or an http(s) URL, not {source!r}")

    def run() -> Image:
        try:
            return archive.import_rootfs(
                store,
                reader,
                source=source,
                message=req.arg("message") or "",
                changes=changes,
                platform=req.arg("platform"),
                ref=ref,
            )
        finally:
            if source != "-":
                reader.close()

    try:
        image = await asyncio.to_thread(run)
    finally:
        if isinstance(reader, BodyReader):
            await reader.drain()
    return Response(
        body=_json_line({"status": image.id}), content_type="application/json"
    )


def _open_url(url: str) -> IO[bytes]:
    try:
        response: IO[bytes] = urllib.request.urlopen(url, timeout=60)
    except OSError as err:
        raise InvalidParameter(f"fetching {url}: {err}") from err
    return response


async def _pull(req: Request, from_image: str) -> StreamResponse:
    tag = req.arg("tag") or None
    auth = req.headers.get("x-registry-auth")
    platform = req.arg("platform") or None
    registry = req.app.registry
    try:
        messages = registry.pull(from_image, tag, auth, platform)
    except AttributeError:
        raise NotImplementedByEngine(
            "pulling images is not available in this engine yet"
        ) from None
    ref = parse(from_image, default_tag=None)
    if tag:
        ref = ref.with_digest(tag) if ":" in tag else ref.with_tag(tag)
    elif not ref.digest and not ref.tag:
        ref = ref.with_tag("latest")
    return await _relay(req, messages, lambda: _published(req, "pull", ref.familiar))


def _published(req: Request, action: str, name: str) -> None:
    store = _store(req)
    image_id = store.resolve_reference(name) or name
    store.events.publish("image", action, name, {"name": name})
    log.debug("%s %s (%s)", action, name, image_id)


async def _relay(
    req: Request,
    messages: AsyncIterator[dict[str, Any]],
    on_success: Callable[[], None],
) -> StreamResponse:
    """Stream registry progress; errors before the first message keep their status."""
    iterator = messages.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        first = None

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield _json_line(first)
            async for message in iterator:
                yield _json_line(message)
        except EngineError as err:
            yield _error_line(err.message)
            return
        except Exception as err:
            log.exception("%s %s failed", req.method, req.path)
            yield _error_line(f"{type(err).__name__}: {err}")
            return
        finally:
            # A client that went away stops the transfer it asked for.
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        on_success()

    return StreamResponse(body())


@routes.post("/images/{name:.*}/push")
async def push_image(req: Request) -> StreamResponse:
    name = req.params["name"]
    tag = req.arg("tag") or None
    auth = req.headers.get("x-registry-auth")
    registry = req.app.registry
    try:
        messages = registry.push(name, tag, auth)
    except AttributeError:
        raise NotImplementedByEngine(
            "pushing images is not available in this engine yet"
        ) from None
    ref = parse_repo_tag(name, tag) if tag else parse(name)
    return await _relay(req, messages, lambda: _published(req, "push", ref.familiar))


# -- commit ---------------------------------------------------------------


@routes.post("/commit")
async def commit(req: Request) -> Response:
    name = req.arg("container") or ""
    if not name:
        raise InvalidParameter("container is required: use ?container=NAME")
    repo = req.arg("repo") or ""
    tag = req.arg("tag") or ""
    if repo:
        ref = parse_repo_tag(repo, tag or None)
        if ref.digest:
            raise InvalidParameter("cannot commit to a digest reference")
    overrides = await req.json(None)
    containers = req.app.containers
    try:
        container = containers.get(name)
        commit_fn = containers.commit
    except AttributeError:
        raise NotImplementedByEngine(
            "commit is not available in this engine yet"
        ) from None
    kwargs: dict[str, Any] = {
        "repo": repo or None,
        "tag": tag or None,
        "comment": req.arg("comment") or "",
        "author": req.arg("author") or "",
        "changes": _changes(req),
        "pause": req.flag("pause", True),
    }
    if isinstance(overrides, dict) and overrides:
        kwargs["config"] = overrides
    image = await commit_fn(container, **kwargs)
    return json_response({"Id": image.id}, status=201)
