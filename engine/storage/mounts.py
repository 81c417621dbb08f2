"""A container's mounts: binds, volumes and tmpfs, from every way to ask.

The API has four ways to mount something into a container, and the image
adds a fifth; :func:`resolve_mounts` turns them into one list of
:class:`Mount`, checked the way dockerd checks them::

    HostConfig.Binds     ["/srv/site:/usr/share/nginx/html:ro", "db:/var/lib/db"]
    HostConfig.Mounts    [{"Type": "tmpfs", "Target": "/run", ...}]   (--mount)
    HostConfig.Tmpfs     {"/tmp": "size=64m"}                         (--tmpfs)
    HostConfig.VolumesFrom ["other:ro"]
    image Volumes        {"/data": {}}       -> an anonymous volume each

An explicit mount wins over an image volume at the same destination; two
explicit mounts at one destination are an error ("Duplicate mount point").
Named volumes are created on first use; a missing ``-v`` bind source is
created as a directory (``--mount type=bind`` refuses it instead), as
dockerd does.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.errors import InvalidParameter, NotFound

log = logging.getLogger(__name__)

PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
CONSISTENCIES = ("consistent", "cached", "delegated", "default")
TMPFS_DEFAULTS = ["noexec", "nosuid", "nodev"]


@dataclass
class Mount:
    type: str  # bind, volume or tmpfs
    destination: str
    source: str = ""  # host path; the volume's _data; "" for tmpfs
    rw: bool = True
    mode: str = ""  # what the user wrote: "ro,z", ...
    propagation: str = ""
    name: str = ""  # volume name
    driver: str = ""
    nocopy: bool = False
    anonymous: bool = False
    recursive: bool = True
    tmpfs_options: list[str] = field(default_factory=list)
    listed: bool = True  # shown in inspect's Mounts (--tmpfs is not)

    @property
    def needs_copy_up(self) -> bool:
        return self.type == "volume" and not self.nocopy

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Mount:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def to_oci(self) -> dict[str, Any]:
        """The OCI runtime spec's mount entry."""
        if self.type == "tmpfs":
            options = list(self.tmpfs_options)
            if not self.rw:
                options.append("ro")
            return {
                "destination": self.destination,
                "type": "tmpfs",
                "source": "tmpfs",
                "options": options,
            }
        options = ["rbind" if self.recursive else "bind", "rw" if self.rw else "ro"]
        options.append(self.propagation or "rprivate")
        return {
            "destination": self.destination,
            "type": "bind",
            "source": self.source,
            "options": options,
        }

    def inspect(self) -> dict[str, Any]:
        """The API's MountPoint, for ``Mounts`` in container inspect."""
        body: dict[str, Any] = {"Type": self.type}
        if self.type == "volume":
            body["Name"] = self.name
        body.update(
            Source=self.source if self.type != "tmpfs" else "",
            Destination=self.destination,
        )
        if self.type == "volume":
            body["Driver"] = self.driver or "local"
        body.update(
            Mode=self.mode,
            RW=self.rw,
            Propagation=self.propagation if self.type == "bind" else "",
        )
        return body


def inspect_mounts(mounts: list[Mount]) -> list[dict[str, Any]]:
    """Inspect's ``Mounts``: every mount but ``--tmpfs`` ones, as dockerd."""
    return [m.inspect() for m in mounts if m.listed]


def _invalid_spec(raw: str, why: str = "") -> InvalidParameter:
    if why:
        return InvalidParameter(f"invalid volume specification: '{raw}': {why}")
    return InvalidParameter(f"invalid volume specification: '{raw}'")


def _mount_error(kind: str, why: str) -> InvalidParameter:
    return InvalidParameter(f'invalid mount config for type "{kind}": {why}')


def _parse_mode(raw: str, mode: str) -> tuple[bool, str, bool]:
    """A ``-v`` mode string into (rw, propagation, nocopy).

    Raises InvalidParameter("invalid mode: ...") for unknown or repeated
    parts.
    """
    rw = True
    propagation = ""
    nocopy = False
    seen: set[str] = set()
    for part in mode.split(",") if mode else []:
        if part in ("rw", "ro"):
            group = "rw"
            rw = part == "rw"
        elif part in ("z", "Z"):
            group = "label"
        elif part in PROPAGATIONS:
            group = "propagation"
            propagation = part
        elif part == "nocopy":
            group = "copy"
            nocopy = True
        elif part in CONSISTENCIES:
            group = "consistency"
        else:
            raise InvalidParameter(f"invalid mode: {mode}")
        if group in seen:
            raise InvalidParameter(f"invalid mode: {mode}")
        seen.add(group)
    return rw, propagation, nocopy


def _check_destination(kind: str, raw: str, target: str, from_bind: bool) -> str:
    if not target:
        if from_bind:
            raise _invalid_spec(raw)
        raise _mount_error(kind, "field Target must not be empty")
    if not os.path.isabs(target):
        why = f"invalid mount path: '{target}' mount path must be absolute"
        if from_bind:
            raise _invalid_spec(raw, f'invalid mount config for type "{kind}": {why}')
        raise _mount_error(kind, why)
    clean = os.path.normpath(target)
    if clean == "/":
        why = "invalid specification: destination can't be '/'"
        if from_bind:
            raise _invalid_spec(raw, f'invalid mount config for type "{kind}": {why}')
        raise _mount_error(kind, why)
    return clean


def parse_bind(raw: str) -> Mount:
    """One ``HostConfig.Binds`` entry: ``[source:]dest[:mode]``.

    The volume is not created here; ``name`` is empty for an anonymous one.
    """
    if not isinstance(raw, str) or not raw:
        raise _invalid_spec(str(raw))
    parts = raw.split(":")
    if len(parts) == 1:
        source, target, mode = "", parts[0], ""
    elif len(parts) == 2:
        if _is_mode(parts[1]):
            raise _invalid_spec(raw)
        source, target, mode = parts[0], parts[1], ""
    elif len(parts) == 3:
        source, target, mode = parts
    else:
        raise _invalid_spec(raw)
    if len(parts) > 1 and not source:
        raise _invalid_spec(raw)
    rw, propagation, nocopy = _parse_mode(raw, mode)
    kind = "bind" if os.path.isabs(source) else "volume"
    destination = _check_destination(kind, raw, target, from_bind=True)
    if kind == "bind":
        if nocopy:
            raise InvalidParameter(f"invalid mode: {mode}")
        return Mount(
            "bind",
            destination,
            source=os.path.normpath(source),
            rw=rw,
            mode=mode,
            propagation=propagation or "rprivate",
        )
    if propagation:
        raise InvalidParameter(f"invalid mode: {mode}")
    return Mount(
        "volume",
        destination,
        rw=rw,
        mode=mode or ("z" if source else ""),
        name=source,
        driver="local",
        nocopy=nocopy,
        anonymous=not source,
    )


def _is_mode(text: str) -> bool:
    try:
        _parse_mode(text, text)
    except InvalidParameter:
        return False
    return True


def parse_mount(spec: dict[str, Any]) -> tuple[Mount, dict[str, Any]]:
    """One ``HostConfig.Mounts`` entry (``--mount``).

    Returns the mount and, for volumes, the VolumeOptions (labels, driver)
    to create it with.
    """
    if not isinstance(spec, dict):
        raise InvalidParameter("invalid mount config: each mount must be an object")
    kind = spec.get("Type") or ""
    source = spec.get("Source") or ""
    target = spec.get("Target") or ""
    read_only = bool(spec.get("ReadOnly"))
    bind_options = spec.get("BindOptions")
    volume_options = spec.get("VolumeOptions")
    tmpfs_options = spec.get("TmpfsOptions")
    if kind not in ("bind", "volume", "tmpfs"):
        if kind in ("npipe", "cluster", "image"):
            raise InvalidParameter(
                f'invalid mount config for type "{kind}": mount type not supported by Dockyard'
            )
        raise InvalidParameter(
            f'invalid mount config for type "{kind}": mount type unknown'
        )
    destination = _check_destination(kind, "", target, from_bind=False)
    if kind != "bind" and bind_options:
        raise _mount_error(kind, "field BindOptions must not be specified")
    if kind != "volume" and volume_options:
        raise _mount_error(kind, "field VolumeOptions must not be specified")
    if kind != "tmpfs" and tmpfs_options:
        raise _mount_error(kind, "field TmpfsOptions must not be specified")

    if kind == "bind":
        options = bind_options or {}
        if not source:
            raise _mount_error(kind, "field Source must not be empty")
        if not os.path.isabs(source):
            raise _mount_error(
                kind, f"invalid mount path: '{source}' mount path must be absolute"
            )
        propagation = options.get("Propagation") or "rprivate"
        if propagation not in PROPAGATIONS:
            raise _mount_error(kind, f"invalid propagation mode: {propagation}")
        if not os.path.exists(source) and not options.get("CreateMountpoint"):
            raise _mount_error(kind, f"bind source path does not exist: {source}")
        mount = Mount(
            "bind",
            destination,
            source=os.path.normpath(source),
            rw=not read_only,
            propagation=propagation,
            recursive=not options.get("NonRecursive"),
        )
        if options.get("CreateMountpoint"):
            mount.mode = "create"
        return mount, {}

    if kind == "volume":
        options = volume_options or {}
        if source and ("/" in source or source.startswith(".")):
            raise _mount_error(kind, f"invalid volume name {source!r}")
        driver = ((options.get("DriverConfig") or {}).get("Name")) or "local"
        mount = Mount(
            "volume",
            destination,
            rw=not read_only,
            name=source,
            driver=driver,
            nocopy=bool(options.get("NoCopy")),
            anonymous=not source,
        )
        return mount, options

    if source:
        raise _mount_error(kind, "field Source must not be specified")
    options = tmpfs_options or {}
    extra = list(TMPFS_DEFAULTS)
    size = options.get("SizeBytes")
    if size:
        if not isinstance(size, int) or size < 0:
            raise _mount_error(kind, f"invalid tmpfs size: {size!r}")
        extra.append(f"size={size}")
    mode = options.get("Mode")
    if mode:
        if not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise _mount_error(kind, f"invalid tmpfs mode: {mode!r}")
        extra.append(f"mode={mode:o}")
    for item in options.get("Options") or []:
        if isinstance(item, list) and item:
            extra.append("=".join(str(x) for x in item))
    return Mount("tmpfs", destination, rw=not read_only, tmpfs_options=extra), {}


def parse_tmpfs(destination: str, options: str) -> Mount:
    """One ``HostConfig.Tmpfs`` entry (``--tmpfs /run:size=64m``)."""
    clean = _check_destination("tmpfs", destination, destination, from_bind=False)
    user = [o for o in (options or "").split(",") if o]
    rw = "ro" not in user
    merged = [o for o in TMPFS_DEFAULTS if _opposite(o) not in user]
    for item in user:
        if item in ("ro", "rw"):
            continue
        if item not in merged:
            merged.append(item)
    return Mount("tmpfs", clean, rw=rw, tmpfs_options=merged, listed=False)


def _opposite(option: str) -> str:
    return option[2:] if option.startswith("no") else "no" + option


def validate_mounts(host_config: dict[str, Any]) -> list[Mount]:
    """Parse every explicit mount and check for duplicates; create nothing.

    Raises InvalidParameter with dockerd's wording.
    """
    mounts: list[Mount] = []
    for raw in host_config.get("Binds") or []:
        mounts.append(parse_bind(raw))
    for spec in host_config.get("Mounts") or []:
        mounts.append(parse_mount(spec)[0])
    tmpfs = host_config.get("Tmpfs") or {}
    if not isinstance(tmpfs, dict):
        raise InvalidParameter("invalid Tmpfs: must be an object")
    for destination, options in tmpfs.items():
        mounts.append(parse_tmpfs(destination, options))
    seen: set[str] = set()
    for m in mounts:
        if m.destination in seen:
            raise InvalidParameter(f"Duplicate mount point: {m.destination}")
        seen.add(m.destination)
    return mounts


def resolve_mounts(
    daemon: Any, container: Any, image_config: dict[str, Any] | None = None
) -> list[Mount]:
    """Every mount of the container, volumes created, sources checked.

    ``image_config`` is the image's runtime config (the ``config`` object of
    the image JSON, with ``Volumes``). Raises InvalidParameter and NotFound
    (a VolumesFrom container).
    """
    host_config = getattr(container, "host_config", None) or {}
    if image_config is None:
        image_config = _image_config(daemon, container)
    explicit = validate_mounts(host_config)
    volume_options: dict[str, dict[str, Any]] = {}
    for spec in host_config.get("Mounts") or []:
        mount, options = parse_mount(spec)
        if mount.type == "volume" and options:
            volume_options[mount.destination] = options

    mounts: list[Mount] = []
    taken = {m.destination for m in explicit}
    for entry in host_config.get("VolumesFrom") or []:
        for m in _volumes_from(daemon, entry):
            if m.destination not in taken:
                mounts.append(m)
                taken.add(m.destination)
    for m in explicit:
        if m.type == "volume":
            options = volume_options.get(m.destination, {})
            driver_config = options.get("DriverConfig") or {}
            volume = daemon.volumes.create(
                m.name or None,
                driver=driver_config.get("Name") or "local",
                labels=options.get("Labels") or None,
                driver_opts=driver_config.get("Options") or None,
            )
            m.name = volume.name
            m.source = str(volume.mountpoint)
            m.driver = volume.driver
        elif m.type == "bind" and not os.path.exists(m.source):
            # -v creates a missing source; --mount only with CreateMountpoint.
            try:
                os.makedirs(m.source, mode=0o755, exist_ok=True)
            except OSError as err:
                raise InvalidParameter(
                    f"error while creating mount source path '{m.source}': {err.strerror}"
                ) from err
        mounts.append(m)
    for destination in sorted((image_config or {}).get("Volumes") or {}):
        clean = os.path.normpath(destination)
        if not os.path.isabs(clean) or clean in taken:
            continue
        volume = daemon.volumes.create(None)
        mounts.append(
            Mount(
                "volume",
                clean,
                source=str(volume.mountpoint),
                name=volume.name,
                driver="local",
                anonymous=True,
            )
        )
        taken.add(clean)
    return mounts


def _image_config(daemon: Any, container: Any) -> dict[str, Any]:
    ref = getattr(container, "image_id", None) or (container.config or {}).get("Image")
    if not ref:
        return {}
    try:
        image = daemon.images.get(ref)
    except NotFound:
        return {}
    config = getattr(image, "config", None) or {}
    return config.get("config") or config.get("Config") or {}


def _volumes_from(daemon: Any, entry: str) -> list[Mount]:
    """The mounts of another container (``--volumes-from name[:ro|rw]``)."""
    name, _, mode = entry.partition(":")
    if mode not in ("", "ro", "rw"):
        raise InvalidParameter(f"invalid mode for volumes-from: {mode}")
    other = daemon.containers.get(name)
    specs = (getattr(other, "extra", None) or {}).get("MountSpecs")
    if specs:
        found = [Mount.from_dict(d) for d in specs]
    else:
        found = [_from_inspect(d) for d in getattr(other, "mounts", None) or []]
    out = []
    for m in found:
        if m.type == "tmpfs":
            continue
        if mode:
            m.rw = mode == "rw"
        out.append(m)
    return out


def _from_inspect(d: dict[str, Any]) -> Mount:
    return Mount(
        type=d.get("Type", "bind"),
        destination=d.get("Destination", ""),
        source=d.get("Source", ""),
        rw=bool(d.get("RW", True)),
        mode=d.get("Mode", ""),
        propagation=d.get("Propagation", ""),
        name=d.get("Name", ""),
        driver=d.get("Driver", ""),
    )
