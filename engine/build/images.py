"""What the builder asks of the image store and the container manager.

Kept in one place so the builder's steps read as Dockerfile semantics:
a new image from the stage's config plus a history entry (:func:`commit`),
the create body of a RUN container (:func:`run_body`), a read-only view of
an image's files for COPY's destination checks and ``COPY --from``
(:class:`RootfsView`), and ``--chown`` names looked up in that view::

    with RootfsView(store, layers, tmp) as view:
        view.lstat("app")          # os.stat_result or None, no mount needed
        resolve_owner("nobody", view.path)   # -> (65534, 65534)
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import os
import platform
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from engine.containers.model import now_rfc3339
from engine.containers.overlay import mount_rootfs, umount_rootfs
from engine.errors import InvalidParameter
from engine.images.reference import parse as parse_reference

log = logging.getLogger(__name__)

ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


def normalize_tag(tag: str) -> str:
    """``name`` -> ``name:latest``, as ``Successfully tagged`` shows it.

    Raises InvalidParameter for a malformed reference.
    """
    ref = parse_reference(tag)
    if ref.digest:
        raise InvalidParameter(
            f"invalid tag {tag!r}: a build can only be tagged by name"
        )
    return ref.familiar


def host_platform() -> tuple[str, str]:
    machine = platform.machine()
    return "linux", ARCHITECTURES.get(machine, machine)


def scratch_config() -> dict[str, Any]:
    machine = platform.machine()
    return {
        "architecture": ARCHITECTURES.get(machine, machine),
        "os": "linux",
        "config": {},
        "history": [],
        "rootfs": {"type": "layers", "diff_ids": []},
    }


def chain_ids(store: Any, image: Any) -> list[str]:
    """The image's layers as chain ids, base first."""
    return list(image.layers)


def commit(
    store: Any,
    image_config: dict[str, Any],
    parent_id: str,
    layers: list[str],
    created_by: str,
    layer: Any,
) -> Any:
    """A new image: the stage's config, one more history entry, maybe a layer."""
    config = copy.deepcopy(image_config)
    # These describe how the parent was made, not this step.
    for key in ("container", "container_config", "docker_version", "id", "parent"):
        config.pop(key, None)
    created = now_rfc3339()
    config["created"] = created
    entry: dict[str, Any] = {"created": created, "created_by": created_by}
    chains = list(layers)
    if layer is None:
        entry["empty_layer"] = True
    else:
        chains.append(layer.chain_id)
    config["history"] = [*(config.get("history") or []), entry]
    return store.create_image(config, chains, parent=parent_id or None)


def run_body(
    image_id: str,
    argv: list[str],
    env: list[str],
    config: dict[str, Any],
    network_mode: str,
    shm_size: int,
    extra_hosts: list[str],
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The container create body of a RUN step.

    ``Entrypoint: [""]`` drops the image's ENTRYPOINT, as dockerd's builder
    does: RUN runs its own command line, never wrapped.
    """
    host_config: dict[str, Any] = {
        "NetworkMode": network_mode or "default",
        **(resources or {}),
    }
    if shm_size:
        host_config["ShmSize"] = shm_size
    if extra_hosts:
        host_config["ExtraHosts"] = list(extra_hosts)
    return {
        "Image": image_id,
        "Entrypoint": [""],
        "Cmd": argv,
        "Env": env,
        "User": config.get("User") or "",
        "WorkingDir": config.get("WorkingDir") or "",
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": False,
        "OpenStdin": False,
        "Labels": {},
        "HostConfig": host_config,
    }


def auth_header(configs: dict[str, Any], domain: str) -> str:
    """The X-Registry-Auth value for ``domain`` out of X-Registry-Config."""
    candidates = [domain]
    if domain in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        candidates += [
            "https://index.docker.io/v1/",
            "index.docker.io",
            "docker.io",
            "registry-1.docker.io",
        ]
    for key in candidates:
        for name in (key, f"https://{key}", f"http://{key}"):
            if name in configs:
                raw = json.dumps(configs[name]).encode()
                return base64.urlsafe_b64encode(raw).decode()
    return ""


def resolve_owner(spec: str, root_of: Callable[[], Path]) -> tuple[int, int]:
    """``--chown=user:group`` to ids, names looked up in the image's /etc files.

    ``root_of`` gives the image's root directory, asked only for names.
    Raises InvalidParameter for a name the image does not know.
    """
    user, _, group = spec.partition(":")
    # Without a group docker looks up a group of the user's own name.
    group = group or user
    root = None if user.isdigit() and group.isdigit() else root_of()
    uid, _primary = _lookup_user(user, root)
    return uid, _lookup_group(group, root)


def _lookup_user(name: str, root: Path | None) -> tuple[int, int]:
    if name.isdigit():
        return int(name), int(name)
    for fields in _entries(root, "etc/passwd"):
        if len(fields) > 3 and fields[0] == name:
            return int(fields[2]), int(fields[3])
    raise InvalidParameter(
        f"unable to convert uid/gid chown string to host mapping: can't find uid for user {name}: no such user: {name}"
    )


def _lookup_group(name: str, root: Path | None) -> int:
    if name.isdigit():
        return int(name)
    for fields in _entries(root, "etc/group"):
        if len(fields) > 2 and fields[0] == name:
            return int(fields[2])
    raise InvalidParameter(
        f"unable to convert uid/gid chown string to host mapping: can't find gid for group {name}: no such group: {name}"
    )


def _entries(root: Path | None, rel: str) -> list[list[str]]:
    if root is None:
        return []
    path = root / rel
    try:
        if path.is_symlink():
            return []
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [
        line.split(":")
        for line in text.splitlines()
        if line and not line.startswith("#")
    ]


class RootfsView:
    """An image's files, read-only, as its stacked layers show them.

    :meth:`lstat` answers from the layer directories themselves (top layer
    first, honouring whiteouts and opaque directories), which costs no
    mount. :attr:`path`, for reading files, is the layer's own directory
    for a one-layer image, else an overlay mounted in a scratch directory
    on first use and unmounted on exit. Nothing written there reaches a
    layer.
    """

    def __init__(self, store: Any, layers: list[str], tmp: Path) -> None:
        self.store = store
        self.layers = layers
        self.tmp = tmp
        self.dirs: list[Path] = []
        self._path: Path | None = None
        self._scratch: Path | None = None
        self._mounted = False

    def __enter__(self) -> RootfsView:
        self.dirs = [
            self.store.layer(chain).diff_dir for chain in reversed(self.layers)
        ]
        return self

    @property
    def path(self) -> Path:
        if self._path is not None:
            return self._path
        if len(self.dirs) == 1:
            self._path = self.dirs[0]
            return self._path
        self._scratch = Path(tempfile.mkdtemp(prefix="view-", dir=self.tmp))
        if not self.dirs:
            self._path = self._scratch / "empty"
            self._path.mkdir()
            return self._path
        merged = self._scratch / "merged"
        mount_rootfs(merged, self.dirs, self._scratch / "upper", self._scratch / "work")
        self._mounted = True
        self._path = merged
        return merged

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._mounted and self._path is not None:
            umount_rootfs(self._path)
            self._mounted = False
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def lstat(self, rel: str) -> os.stat_result | None:
        """The entry at ``rel`` (no leading slash), not following a last symlink."""
        parts = [p for p in rel.split("/") if p and p != "."]
        for layer in self.dirs:
            hidden = False
            # An ancestor deleted or made opaque in this layer hides the
            # layers below for the whole subtree.
            for depth in range(1, len(parts)):
                try:
                    st = os.lstat(layer.joinpath(*parts[:depth]))
                except OSError:
                    continue
                if _is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                    return None
                if _opaque(layer.joinpath(*parts[:depth])):
                    hidden = True
            try:
                found = os.lstat(layer.joinpath(*parts)) if parts else os.lstat(layer)
            except OSError:
                if hidden:
                    return None
                continue
            return None if _is_whiteout(found) else found
        return None


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


# Mount targets the runtime creates in a container's upper directory when
# the image lacks them; they are not the RUN step's doing, so they stay out
# of its layer (dockerd keeps them in a separate init layer instead).
PLACEHOLDER_FILES = ("etc/hosts", "etc/hostname", "etc/resolv.conf", ".dockerenv")
PLACEHOLDER_DIRS = ("dev/pts", "dev/shm", "dev/mqueue", "dev", "proc", "sys")


def prune_upper(upper: Path, view: RootfsView) -> None:
    """Drop runtime placeholders and untouched copied-up directories from ``upper``."""
    for rel in PLACEHOLDER_FILES:
        path = upper / rel
        try:
            st = path.lstat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size == 0:
            path.unlink()
    for rel in PLACEHOLDER_DIRS:
        path = upper / rel
        if path.is_symlink() or not path.is_dir() or view.lstat(rel) is not None:
            continue
        if not any(path.iterdir()):
            path.rmdir()
    for dirpath, _dirnames, _files in os.walk(upper, topdown=False):
        path = Path(dirpath)
        if path == upper:
            continue
        rel = str(path.relative_to(upper))
        below = view.lstat(rel)
        if below is None or not stat.S_ISDIR(below.st_mode):
            continue
        try:
            st = path.lstat()
            if any(path.iterdir()) or _opaque(path):
                continue
        except OSError:
            continue
        same = (
            stat.S_IMODE(st.st_mode) == stat.S_IMODE(below.st_mode)
            and st.st_uid == below.st_uid
            and st.st_gid == below.st_gid
        )
        if same:
            path.rmdir()


def _opaque(path: Path) -> bool:
    for name in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False
