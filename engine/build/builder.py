"""The legacy builder behind ``POST /build``: a Dockerfile, step by step.

Each instruction turns the current image into a new one, as dockerd's
classic builder does: RUN in a container of the engine's own runtime whose
changes become a layer, COPY and ADD by writing the layer directly,
everything else (ENV, CMD, LABEL...) as a new config with an empty layer.
Every step leaves an image, so a later build with the same parent and the
same step finds it in the cache and goes on from there::

    build = await daemon.builder.prepare(options, req.stream())
    async for message in build.run():
        ...  # {"stream": "Step 1/4 : FROM busybox\\n"}, {"aux": {"ID": ...}}

The messages are the JSON stream the docker CLI and docker-py print. A
failing step ends the stream with ``{"errorDetail": ..., "error": ...}`` and
tags nothing.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import posixpath
import secrets
import shutil
import tempfile
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.build import images as imageops
from engine.build.cache import BuildCache, step_key
from engine.build.context import BuildContext
from engine.build.dockerfile import (
    Dockerfile,
    DockerfileError,
    Instruction,
    expand,
    parse,
    parse_line,
)
from engine.build.instructions import (
    expand_ports,
    go_list,
    health_history,
    healthcheck_config,
)
from engine.build.sources import (
    GLOB_CHARS,
    CopyError,
    CopyPlan,
    fetch_url,
    is_archive,
    match_sources,
    unpack_archive,
)
from engine.component import Component
from engine.errors import EngineError, InvalidParameter, NotFound, Unsupported
from engine.images.reference import parse as parse_reference

log = logging.getLogger(__name__)

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Build args every Dockerfile may use without declaring them, kept out of
# the history and the cache key because they differ between machines.
PROXY_ARGS = {
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
}
STDERR_START = "\x1b[91m"
STDERR_END = "\x1b[0m"


class BuildError(EngineError):
    """A step failed; ``code`` is the exit code of a failed RUN."""

    status = 400

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class BuildOptions:
    """The query of ``POST /build``, parsed."""

    tags: list[str] = field(default_factory=list)
    dockerfile: str | None = None
    build_args: dict[str, str | None] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    nocache: bool = False
    pull: bool = False
    rm: bool = True
    forcerm: bool = False
    quiet: bool = False
    target: str = ""
    network_mode: str = ""
    shm_size: int = 0
    platform: str = ""
    remote: str = ""
    cache_from: list[str] = field(default_factory=list)
    extra_hosts: list[str] = field(default_factory=list)
    # Limits for RUN containers, as HostConfig fields (Memory, CpuShares...).
    resources: dict[str, Any] = field(default_factory=dict)
    # X-Registry-Config: registry host -> auth config, for FROM pulls.
    auth_configs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Stage:
    """The state of one stage while its instructions run."""

    index: int
    name: str
    image_id: str = ""
    image: dict[str, Any] = field(default_factory=dict)  # the image config
    layers: list[str] = field(default_factory=list)  # chain ids, base first
    args: dict[str, str | None] = field(default_factory=dict)
    cmd_set: bool = False

    @property
    def config(self) -> dict[str, Any]:
        return self.image.setdefault("config", {})

    @property
    def shell(self) -> list[str]:
        return list(self.config.get("Shell") or DEFAULT_SHELL)

    def env_map(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in self.config.get("Env") or []:
            key, _, value = item.partition("=")
            env[key] = value
        return env

    def set_env(self, key: str, value: str) -> None:
        items = list(self.config.get("Env") or [])
        for index, item in enumerate(items):
            if item.partition("=")[0] == key:
                items[index] = f"{key}={value}"
                break
        else:
            items.append(f"{key}={value}")
        self.config["Env"] = items


class Builder(Component):
    """The daemon's builder: prepares builds and keeps their cache index."""

    def __init__(self, daemon: Any) -> None:
        super().__init__(daemon)
        self.root = self.config.data_root / "builder"
        self.root.mkdir(parents=True, exist_ok=True)
        # Contexts of builds the engine was stopped in the middle of: made
        # at the first build after a start (``Daemon.builder``), before any
        # build of this run has a context there.
        shutil.rmtree(self.root / "tmp", ignore_errors=True)
        self.cache = BuildCache(self.root)

    async def prepare(self, options: BuildOptions, body: AsyncIterator[bytes]) -> Build:
        """Receive the context and parse the Dockerfile, before any output.

        Raises InvalidParameter (400) for a bad context or Dockerfile, which
        the API answers as a plain error as dockerd does.
        """
        for tag in options.tags:
            imageops.normalize_tag(tag)
        workdir = Path(tempfile.mkdtemp(prefix="ctx-", dir=self._tmp()))
        try:
            if options.remote:
                async for _ in body:
                    pass
                ctx = await BuildContext.fetch(options.remote, workdir)
            else:
                ctx = await BuildContext.receive(body, workdir)
            text = await asyncio.to_thread(ctx.dockerfile, options.dockerfile)
            return Build(self, options, ctx, parse(text))
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    async def build(
        self, options: BuildOptions, body: AsyncIterator[bytes]
    ) -> AsyncIterator[dict[str, Any]]:
        """The whole build as one stream (DESIGN.md's contract).

        Unlike :meth:`prepare`, a bad context or Dockerfile arrives as the
        stream's error message rather than as an exception.
        """
        try:
            prepared = await self.prepare(options, body)
        except EngineError as err:
            yield {"errorDetail": {"message": err.message}, "error": err.message}
            return
        async for message in prepared.run():
            yield message

    def _tmp(self) -> Path:
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def prune(self) -> dict[str, Any]:
        keys = self.cache.prune()
        log.info("build cache pruned: %d entries", len(keys))
        return {"CachesDeleted": None, "SpaceReclaimed": 0}


class Build:
    """One build in progress; :meth:`run` yields its messages."""

    def __init__(
        self,
        builder: Builder,
        options: BuildOptions,
        ctx: BuildContext,
        dockerfile: Dockerfile,
    ) -> None:
        self.builder = builder
        self.daemon = builder.daemon
        self.options = options
        self.ctx = ctx
        self.dockerfile = dockerfile
        self.escape = dockerfile.escape
        self.meta_args: dict[str, str | None] = {}
        self.used_args: set[str] = set()
        self.stages: list[Stage] = []
        self.step = 0
        self.total = 0
        self.containers: list[Any] = []
        self._cancelled = asyncio.Event()
        self._quiet_result: dict[str, Any] | None = None
        self.stage_groups, self.meta = self._split()
        self.tmp = Path(tempfile.mkdtemp(prefix="build-", dir=builder._tmp()))

    def cancel(self) -> None:
        """Stop at the next chance: the client that asked went away."""
        self._cancelled.set()

    # -- plan --

    def _split(self) -> tuple[list[list[Instruction]], list[Instruction]]:
        meta: list[Instruction] = []
        groups: list[list[Instruction]] = []
        for inst in self.dockerfile.instructions:
            if inst.cmd == "from":
                groups.append([inst])
            elif not groups:
                if inst.cmd != "arg":
                    raise DockerfileError(
                        "dockerfile parse error line "
                        f"{inst.line}: no build stage in current context"
                    )
                meta.append(inst)
            else:
                groups[-1].append(inst)
        if not groups:
            raise DockerfileError(
                "dockerfile parse error: no build stage in current context"
            )
        if self.options.labels:
            pairs = " ".join(
                f"{json.dumps(k)}={json.dumps(v)}"
                for k, v in self.options.labels.items()
            )
            groups[-1].append(parse_line(f"LABEL {pairs}", 0, self.escape))
        if self.options.target:
            names = [_stage_name(group[0]) for group in groups]
            wanted = self.options.target.lower()
            if wanted not in names:
                raise InvalidParameter(
                    f"failed to reach build target {self.options.target} in Dockerfile"
                )
            groups = groups[: names.index(wanted) + 1]
        self.total = len(meta) + sum(len(group) for group in groups)
        for group in groups:
            for inst in group:
                if inst.cmd == "healthcheck":
                    # dockerd refuses a bad option before the build starts.
                    try:
                        healthcheck_config(inst)
                    except InvalidParameter as err:
                        raise DockerfileError(
                            f"dockerfile parse error line {inst.line}: {err.message}"
                        ) from err
        return groups, meta

    # -- the stream --

    async def run(self) -> AsyncIterator[dict[str, Any]]:
        """Run every step; yields the messages of the JSON stream."""
        try:
            async for message in self._run():
                hidden = "stream" in message or "aux" in message or "status" in message
                if self.options.quiet and hidden and message is not self._quiet_result:
                    continue
                yield message
        except EngineError as err:
            log.info("build failed: %s", err.message)
            detail: dict[str, Any] = {"message": err.message}
            if isinstance(err, BuildError) and err.code is not None:
                detail = {"code": err.code, "message": err.message}
            yield {"errorDetail": detail, "error": err.message}
        except Exception as err:
            log.exception("build failed unexpectedly")
            text = f"{type(err).__name__}: {err}"
            yield {"errorDetail": {"message": text}, "error": text}
        finally:
            await self._cleanup()

    async def _run(self) -> AsyncIterator[dict[str, Any]]:
        # ARGs before the first FROM count as steps in dockerd's output too.
        for inst in self.meta:
            self.step += 1
            yield _out(f"Step {self.step}/{self.total} : {inst.original}\n")
            self._meta_arg(inst)
        for index, group in enumerate(self.stage_groups):
            stage = Stage(index=index, name=_stage_name(group[0]))
            self.stages.append(stage)
            for inst in group:
                if self._cancelled.is_set():
                    raise BuildError("build cancelled: the client went away")
                self.step += 1
                yield _out(f"Step {self.step}/{self.total} : {inst.original}\n")
                async for message in self._dispatch(stage, inst):
                    yield message
        final = self.stages[-1]
        if not final.image_id:
            raise BuildError("No image was generated. Is your Dockerfile empty?")
        image_id = final.image_id
        yield {"aux": {"ID": image_id}}
        unused = sorted(
            name
            for name in self.options.build_args
            if name not in self.used_args and name not in PROXY_ARGS
        )
        if unused:
            yield _out(
                f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed\n"
            )
        yield _out(f"Successfully built {_short(image_id)}\n")
        for tag in self.options.tags:
            ref = imageops.normalize_tag(tag)
            await asyncio.to_thread(self.daemon.images.tag, image_id, ref)
            yield _out(f"Successfully tagged {ref}\n")
        if self.options.quiet:
            self._quiet_result = {"stream": f"{image_id}\n"}
            yield self._quiet_result
        log.info("built image %s (%d steps)", _short(image_id), self.total)

    async def _dispatch(
        self, stage: Stage, inst: Instruction
    ) -> AsyncIterator[dict[str, Any]]:
        if inst.cmd == "from":
            async for message in self._from(stage, inst):
                yield message
            return
        if not stage.image_id and not stage.image:
            raise BuildError(
                "Please provide a source image with `from` prior to commit"
            )
        if inst.cmd == "run":
            async for message in self._run_step(stage, inst):
                yield message
        elif inst.cmd in ("copy", "add"):
            async for message in self._copy(stage, inst):
                yield message
        else:
            async for message in self._metadata(stage, inst):
                yield message

    # -- ARG --

    def _meta_arg(self, inst: Instruction) -> None:
        env = {k: v for k, v in self.meta_args.items() if v is not None}
        for word in inst.args:
            name, value = self._arg_value(word, env, self.meta_args)
            self.meta_args[name] = value

    def _arg_value(
        self, word: str, env: dict[str, str], inherited: dict[str, str | None]
    ) -> tuple[str, str | None]:
        name, eq, default = word.partition("=")
        name = expand(name, env, self.escape)
        self.used_args.add(name)
        given = self.options.build_args.get(name)
        if name in self.options.build_args and given is not None:
            return name, given
        if eq:
            return name, expand(default, env, self.escape)
        return name, inherited.get(name)

    def _expand_env(self, stage: Stage) -> dict[str, str]:
        env = {k: v for k, v in stage.args.items() if v is not None}
        env.update(stage.env_map())
        return env

    # -- FROM --

    async def _from(
        self, stage: Stage, inst: Instruction
    ) -> AsyncIterator[dict[str, Any]]:
        meta_env = {k: v for k, v in self.meta_args.items() if v is not None}
        words = [expand(w, meta_env, self.escape) for w in inst.args]
        if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
            raise DockerfileError(
                f"dockerfile parse error line {inst.line}: FROM requires either one or three arguments"
            )
        platform = expand(inst.flags.get("platform", ""), meta_env, self.escape)
        check_platform(platform)
        unknown = set(inst.flags) - {"platform"}
        if unknown:
            raise BuildError(f"Unknown flag: {sorted(unknown)[0]}")
        base = words[0]
        if not base:
            raise BuildError("base name (${...}) should not be blank")
        previous = next(
            (s for s in self.stages[:-1] if s.name and s.name == base.lower()), None
        )
        if previous is not None:
            stage.image_id = previous.image_id
            stage.image = copy.deepcopy(previous.image)
            stage.layers = list(previous.layers)
        elif base.lower() == "scratch":
            stage.image = imageops.scratch_config()
            stage.image_id = ""
            yield _out(" ---> \n")
            return
        else:
            async for message in self._base_image(stage, base):
                yield message
        yield _out(f" ---> {_short(stage.image_id)}\n")
        triggers = list(stage.config.get("OnBuild") or [])
        if triggers:
            stage.config["OnBuild"] = None
            noun = "trigger" if len(triggers) == 1 else "triggers"
            yield _out(f"# Executing {len(triggers)} build {noun}\n")
            for text in triggers:
                trigger = parse_line(text, inst.line, self.escape)
                async for message in self._dispatch(stage, trigger):
                    yield message

    async def _base_image(
        self, stage: Stage, ref: str
    ) -> AsyncIterator[dict[str, Any]]:
        images = self.daemon.images
        image = None
        if not self.options.pull:
            with suppress(NotFound):
                image = await asyncio.to_thread(images.get, ref)
        if image is None:
            async for message in self._pull(ref):
                yield message
            image = await asyncio.to_thread(images.get, ref)
        stage.image_id = image.id
        stage.image = copy.deepcopy(image.config)
        stage.layers = imageops.chain_ids(images, image)

    async def _pull(self, ref: str) -> AsyncIterator[dict[str, Any]]:
        """Pull a base image, passing the registry's progress messages on."""
        parsed = parse_reference(ref)
        auth = imageops.auth_header(self.options.auth_configs, parsed.domain)
        stream = self.daemon.registry.pull(
            parsed.name_only().familiar,
            parsed.digest or parsed.tag or "latest",
            auth or None,
            self.options.platform or None,
        )
        async for progress in stream:
            if "error" in progress or "errorDetail" in progress:
                detail = progress.get("errorDetail") or {}
                raise BuildError(str(progress.get("error") or detail.get("message")))
            yield progress

    # -- RUN --

    async def _run_step(
        self, stage: Stage, inst: Instruction
    ) -> AsyncIterator[dict[str, Any]]:
        if inst.flags:
            flag = sorted(inst.flags)[0]
            raise BuildError(
                f"the --{flag} option requires BuildKit. Refer to "
                "https://docs.docker.com/go/buildkit/ to learn how to build images "
                "with BuildKit enabled"
            )
        argv = list(inst.args) if inst.json else [*stage.shell, inst.args[0]]
        arg_env = self._run_args(stage)
        shown = list(argv)
        if arg_env:
            shown = [f"|{len(arg_env)}", *arg_env, *argv]
        proxies = [
            f"{k}={v}"
            for k, v in self.options.build_args.items()
            if k in PROXY_ARGS and v is not None
        ]
        key = step_key(stage.image_id, "run", shown, self._config_key(stage))
        cached = await self._cached(stage, key, " ".join(shown))
        if cached is not None:
            yield _out(" ---> Using cache\n")
            await self._adopt(stage, cached)
            yield _out(f" ---> {_short(stage.image_id)}\n")
            return

        env = list(stage.config.get("Env") or [])
        if not any(item.startswith("PATH=") for item in env):
            env.insert(0, f"PATH={DEFAULT_PATH}")
        env_names = {item.partition("=")[0] for item in env}
        env += [
            item
            for item in arg_env + proxies
            if item.partition("=")[0] not in env_names
        ]
        body = imageops.run_body(
            stage.image_id,
            argv,
            env,
            stage.config,
            self.options.network_mode,
            self.options.shm_size,
            self.options.extra_hosts,
            self.options.resources,
        )
        containers = self.daemon.containers
        container = await _maybe_await(containers.create(body, None))
        self.containers.append(container)
        yield _out(f" ---> Running in {_short(container.id)}\n")
        tail = _LogTail(Path(container.log_path))
        await _maybe_await(containers.start(container))
        waiter = asyncio.ensure_future(
            _maybe_await(containers.wait(container, "not-running"))
        )
        while not waiter.done():
            await asyncio.wait([waiter], timeout=0.1)
            for message in tail.read():
                yield message
            if self._cancelled.is_set():
                waiter.cancel()
                raise BuildError("build cancelled: the client went away")
        code = int(waiter.result())
        for message in tail.read(final=True):
            yield message
        if code != 0:
            if not self.options.forcerm:
                # dockerd leaves a failed step's container unless --force-rm.
                self.containers.remove(container)
            raise BuildError(
                f"The command '{' '.join(argv)}' returned a non-zero code: {code}",
                code,
            )
        layer = await asyncio.to_thread(self._diff, stage, Path(container.upper))
        created_by = " ".join(shown)
        await self._commit(stage, created_by, layer, key)
        if self.options.rm or self.options.forcerm:
            await self._remove(container)
            yield _out(f"Removing intermediate container {_short(container.id)}\n")
        yield _out(f" ---> {_short(stage.image_id)}\n")

    def _diff(self, stage: Stage, upper: Path) -> Any:
        with imageops.RootfsView(self.daemon.images, stage.layers, self.tmp) as view:
            imageops.prune_upper(upper, view)
        return self.daemon.images.diff_layer(
            upper, stage.layers[-1] if stage.layers else None
        )

    def _run_args(self, stage: Stage) -> list[str]:
        """``NAME=value`` for the declared args a RUN sees, as docker lists them."""
        env_names = set(stage.env_map())
        return sorted(
            f"{k}={v}"
            for k, v in stage.args.items()
            if v is not None and k not in env_names and k not in PROXY_ARGS
        )

    def _config_key(self, stage: Stage) -> dict[str, Any]:
        """The parts of the config a RUN's outcome depends on."""
        config = stage.config
        return {
            "env": config.get("Env"),
            "user": config.get("User"),
            "workdir": config.get("WorkingDir"),
            "shell": config.get("Shell"),
            "network": self.options.network_mode,
        }

    async def _remove(self, container: Any) -> None:
        with suppress(ValueError):
            self.containers.remove(container)
        try:
            await _maybe_await(
                self.daemon.containers.remove(container, force=True, volumes=True)
            )
        except EngineError as err:
            log.warning("removing intermediate container %s: %s", container.id, err)

    # -- COPY and ADD --

    async def _copy(
        self, stage: Stage, inst: Instruction
    ) -> AsyncIterator[dict[str, Any]]:
        keyword = inst.keyword
        env = self._expand_env(stage)
        words = [expand(w, env, self.escape) for w in inst.args]
        sources, dest = words[:-1], words[-1]
        flags = {k: expand(v, env, self.escape) for k, v in inst.flags.items()}
        if "link" in flags:
            raise BuildError(
                "the --link option requires BuildKit. Refer to "
                "https://docs.docker.com/go/buildkit/ to learn how to build images "
                "with BuildKit enabled"
            )
        unknown = set(flags) - {"from", "chown", "chmod"}
        if unknown:
            raise BuildError(f"Unknown flag: {sorted(unknown)[0]}")
        if "from" in flags and inst.cmd == "add":
            raise BuildError("ADD does not support the --from option")

        with imageops.RootfsView(self.daemon.images, stage.layers, self.tmp) as view:
            owner = None
            if flags.get("chown"):
                owner = imageops.resolve_owner(flags["chown"], lambda: view.path)
            chmod = None
            if flags.get("chmod"):
                try:
                    chmod = int(flags["chmod"], 8)
                except ValueError:
                    raise BuildError(
                        f"invalid chmod parameter: {flags['chmod']}"
                    ) from None
            plan = CopyPlan(
                dest=dest,
                workdir=stage.config.get("WorkingDir") or "/",
                owner=owner,
                chmod=chmod,
                lookup=view.lstat,
            )
            if "from" in flags:
                source_view = await self._copy_from_root(flags["from"])
                with source_view as src:
                    await asyncio.to_thread(
                        self._plan_sources,
                        plan,
                        keyword,
                        sources,
                        src.path,
                        True,
                        True,
                    )
                    async for message in self._finish_copy(stage, inst, plan, keyword):
                        yield message
                return
            downloads = await self._downloads(sources) if inst.cmd == "add" else {}
            await asyncio.to_thread(
                self._plan_sources,
                plan,
                keyword,
                sources,
                self.ctx.root,
                False,
                False,
                downloads,
                inst.cmd == "add",
            )
            async for message in self._finish_copy(stage, inst, plan, keyword):
                yield message

    def _plan_sources(
        self,
        plan: CopyPlan,
        keyword: str,
        sources: list[str],
        root: Path,
        keep_owner: bool = False,
        from_image: bool = False,
        downloads: dict[str, tuple[Path, str, float | None]] | None = None,
        add: bool = False,
    ) -> None:
        downloads = downloads or {}
        # (name as matched, path), or (URL, None) for a download.
        matched: list[tuple[str, Path | None]] = []
        for source in sources:
            if source in downloads:
                matched.append((source, None))
                continue
            try:
                if from_image:
                    found = match_sources(root, source.lstrip("/") or ".")
                else:
                    self.ctx.resolve(source)
                    found = match_sources(root, source)
            except CopyError:
                raise
            except EngineError as err:
                raise BuildError(f"{keyword} failed: {err.message}") from err
            if not found and GLOB_CHARS.search(source):
                raise BuildError(f"{keyword} failed: no source files were specified")
            if not found:
                where = (
                    "build context or excluded by .dockerignore"
                    if not from_image
                    else "source image"
                )
                raise BuildError(
                    f"{keyword} failed: file not found in {where}: stat {source}: file does not exist"
                )
            matched += [(rel, path) for path, rel in found]
        try:
            plan.check_many(len(matched), keyword)
        except CopyError as err:
            raise BuildError(err.message) from err
        for source, path in matched:
            if path is None:
                file_path, name, mtime = downloads[source]
                plan.add_file_as(file_path, name, 0o600, mtime)
            elif add and path.is_file() and not path.is_symlink() and is_archive(path):
                unpacked = Path(tempfile.mkdtemp(prefix="add-", dir=self.tmp))
                unpack_archive(path, unpacked)
                plan.add_tree_into_dest(unpacked, keep_owner=True)
            else:
                plan.add_source(path, keep_owner, posixpath.basename(source))

    async def _downloads(
        self, sources: list[str]
    ) -> dict[str, tuple[Path, str, float | None]]:
        found: dict[str, tuple[Path, str, float | None]] = {}
        for source in sources:
            if not source.startswith(("http://", "https://")):
                continue
            target = Path(tempfile.mkdtemp(prefix="url-", dir=self.tmp)) / "download"
            try:
                mtime = await asyncio.to_thread(fetch_url, source, target)
            except OSError as err:
                raise BuildError(f"ADD failed: downloading {source}: {err}") from err
            name = posixpath.basename(urllib.parse.urlsplit(source).path) or "download"
            found[source] = (target, name, mtime)
        return found

    async def _copy_from_root(self, name: str) -> imageops.RootfsView:
        wanted = name.lower()
        for stage in self.stages[:-1]:
            if stage.name == wanted or str(stage.index) == name:
                return imageops.RootfsView(self.daemon.images, stage.layers, self.tmp)
        if name.isdigit():
            raise BuildError(
                f"invalid from flag value {name}: refers to current build stage"
            )
        images = self.daemon.images
        try:
            image = await asyncio.to_thread(images.get, name)
        except NotFound:
            try:
                async for _ in self._pull(name):
                    pass
                image = await asyncio.to_thread(images.get, name)
            except EngineError as err:
                raise BuildError(
                    f"invalid from flag value {name}: {err.message}"
                ) from err
        return imageops.RootfsView(images, imageops.chain_ids(images, image), self.tmp)

    async def _finish_copy(
        self, stage: Stage, inst: Instruction, plan: CopyPlan, keyword: str
    ) -> AsyncIterator[dict[str, Any]]:
        digest = await asyncio.to_thread(plan.describe)
        key = step_key(stage.image_id, inst.cmd, digest, plan.target, plan.dest_is_dir)
        prefix = " ".join(stage.shell)
        created_by = f"{prefix} #(nop) {keyword} {digest} in {plan.dest} "
        cached = await self._cached(stage, key, created_by)
        if cached is not None:
            yield _out(" ---> Using cache\n")
            await self._adopt(stage, cached)
            yield _out(f" ---> {_short(stage.image_id)}\n")
            return
        tar_path = self.tmp / f"layer-{secrets.token_hex(4)}.tar"
        await asyncio.to_thread(plan.write_tar, tar_path)
        images = self.daemon.images
        layer = await asyncio.to_thread(
            images.add_layer, stage.layers[-1] if stage.layers else None, tar_path
        )
        tar_path.unlink(missing_ok=True)
        await self._commit(stage, created_by, layer, key)
        yield _out(f" ---> {_short(stage.image_id)}\n")

    # -- metadata --

    async def _metadata(
        self, stage: Stage, inst: Instruction
    ) -> AsyncIterator[dict[str, Any]]:
        env = self._expand_env(stage)
        config = stage.config
        cmd = inst.cmd
        comment = ""
        workdir = ""
        if cmd == "env":
            pairs = [expand(w, env, self.escape) for w in inst.args]
            for key, value in zip(pairs[::2], pairs[1::2], strict=False):
                stage.set_env(key, value)
            comment = "ENV " + " ".join(
                f"{k}={v}" for k, v in zip(pairs[::2], pairs[1::2], strict=False)
            )
        elif cmd == "label":
            pairs = [expand(w, env, self.escape) for w in inst.args]
            labels = dict(config.get("Labels") or {})
            for key, value in zip(pairs[::2], pairs[1::2], strict=False):
                labels[key] = value
            config["Labels"] = labels
            comment = "LABEL " + " ".join(
                f"{k}={v}" for k, v in zip(pairs[::2], pairs[1::2], strict=False)
            )
        elif cmd == "arg":
            shown = []
            for word in inst.args:
                name, arg_value = self._arg_value(word, env, self.meta_args)
                stage.args[name] = arg_value
                if "=" in word:
                    default = expand(word.partition("=")[2], env, self.escape)
                    shown.append(f"{name}={default}")
                else:
                    shown.append(name)
            comment = "ARG " + " ".join(shown)
        elif cmd == "maintainer":
            stage.image["author"] = inst.args[0]
            comment = f"MAINTAINER {inst.args[0]}"
        elif cmd in ("cmd", "entrypoint"):
            argv: list[str] = (
                list(inst.args)
                if inst.json
                else [*stage.shell, inst.args[0]]
                if inst.args
                else []
            )
            if cmd == "cmd":
                config["Cmd"] = argv
                stage.cmd_set = True
            else:
                config["Entrypoint"] = argv
                if not stage.cmd_set:
                    config["Cmd"] = None
            comment = f"{inst.keyword} {go_list(argv)}"
        elif cmd == "shell":
            config["Shell"] = list(inst.args)
            comment = "SHELL [" + " ".join(inst.args) + "]"
        elif cmd == "workdir":
            value = expand(inst.args[0], env, self.escape)
            if not value.startswith("/"):
                value = posixpath.join(config.get("WorkingDir") or "/", value)
            value = posixpath.normpath(value)
            config["WorkingDir"] = value
            workdir = value
            comment = f"WORKDIR {value}"
        elif cmd == "user":
            value = expand(inst.args[0], env, self.escape)
            config["User"] = value
            comment = f"USER {value}"
        elif cmd == "expose":
            ports = dict(config.get("ExposedPorts") or {})
            words = [expand(w, env, self.escape) for w in inst.args]
            for word in words:
                for port in expand_ports(word):
                    ports[port] = {}
            config["ExposedPorts"] = ports
            comment = "EXPOSE " + " ".join(words)
        elif cmd == "volume":
            volumes = dict(config.get("Volumes") or {})
            words = [expand(w, env, self.escape) for w in inst.args]
            for word in words:
                if not word.strip():
                    raise BuildError("VOLUME specified can not be an empty string")
                volumes[word] = {}
            config["Volumes"] = volumes
            comment = "VOLUME [" + " ".join(words) + "]"
        elif cmd == "stopsignal":
            value = expand(inst.args[0], env, self.escape)
            config["StopSignal"] = value
            comment = f"STOPSIGNAL {value}"
        elif cmd == "healthcheck":
            config["Healthcheck"] = healthcheck_config(inst)
            comment = "HEALTHCHECK " + health_history(config["Healthcheck"])
        elif cmd == "onbuild":
            assert inst.sub is not None
            triggers = list(config.get("OnBuild") or [])
            triggers.append(inst.args[0])
            config["OnBuild"] = triggers
            comment = f"ONBUILD {inst.args[0]}"
        else:
            raise DockerfileError(f"unknown instruction: {inst.keyword}")

        prefix = " ".join(stage.shell)
        created_by = (
            f"{prefix} #(nop) {comment}"
            if cmd == "workdir"
            else f"{prefix} #(nop)  {comment}"
        )
        key = step_key(
            stage.image_id,
            "meta",
            created_by,
            stage.image.get("config"),
            stage.image.get("author"),
        )
        cached = await self._cached(stage, key, created_by)
        if cached is not None:
            yield _out(" ---> Using cache\n")
            await self._adopt(stage, cached)
            yield _out(f" ---> {_short(stage.image_id)}\n")
            return
        layer = None
        # WORKDIR creates its directory when the image lacks it, in a layer
        # of its own (the same parent always gives the same answer).
        layer_tar = None
        if workdir:
            layer_tar = await asyncio.to_thread(self._workdir_layer, stage, workdir)
        if layer_tar is not None:
            layer = await asyncio.to_thread(
                self.daemon.images.add_layer,
                stage.layers[-1] if stage.layers else None,
                layer_tar,
            )
            layer_tar.unlink(missing_ok=True)
        await self._commit(stage, created_by, layer, key)
        yield _out(f" ---> {_short(stage.image_id)}\n")

    def _workdir_layer(self, stage: Stage, path: str) -> Path | None:
        """A layer creating the WORKDIR when the image lacks it, else None."""
        with imageops.RootfsView(self.daemon.images, stage.layers, self.tmp) as view:
            existing = view.lstat(path.lstrip("/"))
            if existing is not None:
                return None
            plan = CopyPlan(dest=path + "/", workdir="/", owner=None, lookup=view.lstat)
            plan.add_directories(plan.target)
            tar_path = self.tmp / f"workdir-{secrets.token_hex(4)}.tar"
            plan.write_tar(tar_path)
            return tar_path

    # -- images and cache --

    async def _cached(self, stage: Stage, key: str, created_by: str) -> str | None:
        """The image a step made before: from the index, else from --cache-from."""
        if self.options.nocache:
            return None
        images = self.daemon.images

        def exists(image_id: str) -> bool:
            try:
                images.get(image_id)
            except NotFound:
                return False
            return True

        found = await asyncio.to_thread(self.builder.cache.get, key, exists)
        if found is None and self.options.cache_from:
            found = await asyncio.to_thread(self._cache_from, stage, created_by)
            if found is not None:
                self.builder.cache.put(key, found)
        return found

    def _cache_from(self, stage: Stage, created_by: str) -> str | None:
        """A step's image rebuilt from a ``--cache-from`` image's history.

        A cache-from image qualifies when its history and layers start with
        the current image's and its next history entry is this step: the
        new image is the stage's config with that history and those layers,
        as dockerd's legacy builder restores one.
        """
        history = list(stage.image.get("history") or [])
        for ref in self.options.cache_from:
            try:
                source = self.daemon.images.get(ref)
            except NotFound:
                continue
            theirs = list(source.config.get("history") or [])
            if len(theirs) <= len(history):
                continue
            if any(
                _history_key(a) != _history_key(b)
                for a, b in zip(history, theirs, strict=False)
            ):
                continue
            if list(source.layers[: len(stage.layers)]) != stage.layers:
                continue
            entry = theirs[len(history)]
            if entry.get("created_by") != created_by:
                continue
            layers = list(stage.layers)
            if not entry.get("empty_layer"):
                if len(source.layers) <= len(layers):
                    continue
                layers.append(source.layers[len(layers)])
            config = copy.deepcopy(stage.image)
            config["history"] = theirs[: len(history) + 1]
            config["created"] = entry.get("created") or config.get("created")
            image = self.daemon.images.create_image(
                config, layers, parent=stage.image_id or None
            )
            return str(image.id)
        return None

    async def _adopt(self, stage: Stage, image_id: str) -> None:
        images = self.daemon.images
        image = await asyncio.to_thread(images.get, image_id)
        stage.image_id = image.id
        stage.image = copy.deepcopy(image.config)
        stage.layers = imageops.chain_ids(images, image)

    async def _commit(
        self, stage: Stage, created_by: str, layer: Any, key: str
    ) -> None:
        image = await asyncio.to_thread(
            imageops.commit,
            self.daemon.images,
            stage.image,
            stage.image_id,
            stage.layers,
            created_by,
            layer,
        )
        stage.image_id = image.id
        stage.image = copy.deepcopy(image.config)
        stage.layers = imageops.chain_ids(self.daemon.images, image)
        self.builder.cache.put(key, image.id)

    async def _cleanup(self) -> None:
        for container in list(self.containers):
            if self.options.rm or self.options.forcerm:
                await self._remove(container)
        shutil.rmtree(self.tmp, ignore_errors=True)
        await asyncio.to_thread(self.ctx.cleanup)


# -- helpers ---------------------------------------------------------------


def check_platform(value: str) -> None:
    """Refuse a target platform other than the engine's own.

    Raises Unsupported: RUN steps of another architecture would need
    emulation this engine does not set up.
    """
    if not value:
        return
    host = imageops.host_platform()
    parts = value.lower().split("/")
    wanted = parts[0], parts[1] if len(parts) > 1 else host[1]
    if wanted != host[:2]:
        raise Unsupported(
            f"building for platform {value} is not supported; this engine builds "
            f"for {host[0]}/{host[1]} only"
        )


def _history_key(entry: dict[str, Any]) -> tuple[str, bool]:
    return str(entry.get("created_by") or ""), bool(entry.get("empty_layer"))


def _out(text: str) -> dict[str, Any]:
    return {"stream": text}


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _stage_name(inst: Instruction) -> str:
    if len(inst.args) == 3 and inst.args[1].lower() == "as":
        return inst.args[2].lower()
    return ""


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value


class _LogTail:
    """Follows a conmon k8s-file log: ``<time> stdout|stderr F|P <text>``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.pending = b""

    def read(self, final: bool = False) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.pending + data
        lines = data.split(b"\n")
        self.pending = lines.pop()
        if final and self.pending:
            lines.append(self.pending)
            self.pending = b""
        messages: list[dict[str, Any]] = []
        for line in lines:
            parts = line.split(b" ", 3)
            if len(parts) < 3:
                continue
            text = (parts[3] if len(parts) == 4 else b"").decode(
                "utf-8", errors="replace"
            )
            if parts[2] == b"F":
                text += "\n"
            if parts[1] == b"stderr":
                text = f"{STDERR_START}{text}{STDERR_END}"
            messages.append({"stream": text})
        return messages
