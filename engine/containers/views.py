"""What ``GET /containers/json`` shows of a container, and its filters.

rows = [summary(manager, c, size=False) for c in select(manager, filters)]
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from engine.containers.health import STATUSES as HEALTH_STATUSES
from engine.containers.health import status_of
from engine.containers.model import Container, parse_rfc3339
from engine.errors import InvalidParameter, NotFound

if TYPE_CHECKING:
    from engine.containers.manager import ContainerManager

FILTERS = {
    "id", "name", "label", "status", "ancestor", "exited", "before", "since",
    "network", "volume", "publish", "expose", "health", "is-task", "isolation",
    "until",
}  # fmt: skip
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def graph_driver(c: Container, lower: list[str]) -> dict[str, Any]:
    return {
        "Name": "overlay2",
        "Data": {
            "LowerDir": ":".join(lower),
            "MergedDir": str(c.rootfs),
            "UpperDir": str(c.upper),
            "WorkDir": str(c.work),
        },
    }


def ports(c: Container) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    # Only what the network reports: a created or exited container lists
    # no ports, as with dockerd (its Ports map is empty until it runs).
    bound = (c.network_settings or {}).get("Ports") or {}
    for key in sorted(bound):
        number, _, proto = key.partition("/")
        if not number.isdigit():
            continue
        bindings = bound.get(key) or []
        if not bindings:
            out.append({"PrivatePort": int(number), "Type": proto or "tcp"})
        for b in bindings:
            row: dict[str, Any] = {"PrivatePort": int(number), "Type": proto or "tcp"}
            if b.get("HostPort"):
                row["PublicPort"] = int(b["HostPort"])
                row["IP"] = b.get("HostIp") or "0.0.0.0"
            out.append(row)
    return out


def summary(
    manager: ContainerManager, c: Container, size: bool = False
) -> dict[str, Any]:
    settings = c.network_settings or {}
    row: dict[str, Any] = {
        "Id": c.id,
        "Names": ["/" + c.name],
        "Image": c.image_ref,
        "ImageID": c.image_id,
        "Command": c.command(),
        "Created": int(parse_rfc3339(c.created)),
        "Ports": ports(c),
        "Labels": c.labels,
        "State": c.status,
        "Status": c.status_text(),
        "HostConfig": {"NetworkMode": c.host_config.get("NetworkMode") or "default"},
        "NetworkSettings": {"Networks": settings.get("Networks") or {}},
        "Mounts": c.mounts,
    }
    if size:
        row["SizeRw"] = manager.size_rw(c)
        row["SizeRootFs"] = manager.size_root_fs(c)
    return row


def label_matches(c: Container, filters: dict[str, list[str]]) -> bool:
    labels = c.labels
    for wanted in filters.get("label", []):
        key, eq, value = wanted.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    for wanted in filters.get("label!", []):
        key, eq, value = wanted.partition("=")
        if key in labels and (not eq or labels[key] == value):
            return False
    return True


def until_matches(c: Container, filters: dict[str, list[str]]) -> bool:
    for value in filters.get("until", []):
        try:
            limit = float(value)
        except ValueError:
            raise InvalidParameter(f"invalid until filter: {value}") from None
        if parse_rfc3339(c.created) >= limit:
            return False
    return True


def _port_matches(spec: str, keys: list[str]) -> bool:
    number, _, proto = spec.partition("/")
    low, _, high = number.partition("-")
    if not low.isdigit() or (high and not high.isdigit()):
        raise InvalidParameter(f"invalid port filter: {spec}")
    lo, hi = int(low), int(high or low)
    for key in keys:
        kport, _, kproto = key.partition("/")
        if (
            kport.isdigit()
            and lo <= int(kport) <= hi
            and (not proto or proto == (kproto or "tcp"))
        ):
            return True
    return False


def select(
    manager: ContainerManager,
    filters: dict[str, list[str]],
    all_: bool,
    limit: int | None,
) -> list[Container]:
    """The containers ``docker ps`` shows. Raises InvalidParameter for a bad filter."""
    for key in filters:
        if key not in FILTERS and key != "label!":
            raise InvalidParameter(f"invalid filter '{key}'")
    for status in filters.get("status", []):
        if status not in STATUSES:
            raise InvalidParameter(f"invalid filter 'status={status}'")
    for value in filters.get("health", []):
        if value not in HEALTH_STATUSES:
            raise InvalidParameter(f"Unrecognised filter value for health: {value}")
    containers = manager.list()
    before = _pivot(manager, filters.get("before"))
    since = _pivot(manager, filters.get("since"))
    if filters.get("status") or filters.get("exited") or before or since:
        all_ = True
    if limit is not None and limit > 0:
        all_ = True
    out = []
    for c in containers:
        if not all_ and not c.running:
            continue
        if not _matches(manager, c, filters, before, since):
            continue
        out.append(c)
        if limit is not None and 0 < limit <= len(out):
            break
    return out


def _pivot(manager: ContainerManager, values: list[str] | None) -> Container | None:
    if not values:
        return None
    try:
        return manager.get(values[-1])
    except NotFound:
        raise InvalidParameter(f"No such container: {values[-1]}") from None


def _matches(
    manager: ContainerManager,
    c: Container,
    filters: dict[str, list[str]],
    before: Container | None,
    since: Container | None,
) -> bool:
    if filters.get("id") and not any(c.id.startswith(v) for v in filters["id"]):
        return False
    if filters.get("name") and not any(
        re.search(v.lstrip("/"), c.name) or v == "/" + c.name for v in filters["name"]
    ):
        return False
    if not label_matches(c, filters) or not until_matches(c, filters):
        return False
    if filters.get("status") and c.status not in filters["status"]:
        return False
    if filters.get("exited"):
        if c.status != "exited":
            return False
        codes = []
        for v in filters["exited"]:
            if not v.lstrip("-").isdigit():
                raise InvalidParameter(f"invalid filter 'exited={v}'")
            codes.append(int(v))
        if c.exit_code not in codes:
            return False
    if before and c.created >= before.created:
        return False
    if since and c.created <= since.created:
        return False
    if filters.get("ancestor") and not _ancestor_matches(
        manager, c, filters["ancestor"]
    ):
        return False
    if filters.get("network"):
        networks = (c.network_settings or {}).get("Networks") or {}
        ids = {n.get("NetworkID", "") for n in networks.values()}
        if not any(
            v in networks or any(i and i.startswith(v) for i in ids)
            for v in filters["network"]
        ):
            return False
    if filters.get("volume"):
        names = {m.get("Name") for m in c.mounts} | {
            m.get("Destination") for m in c.mounts
        }
        if not names & set(filters["volume"]):
            return False
    if filters.get("publish"):
        published = [
            f"{b.get('HostPort')}/{key.partition('/')[2] or 'tcp'}"
            for key, bs in ((c.network_settings or {}).get("Ports") or {}).items()
            for b in bs or []
            if b.get("HostPort")
        ]
        if not any(_port_matches(v, published) for v in filters["publish"]):
            return False
    if filters.get("expose"):
        exposed = list((c.config.get("ExposedPorts") or {}).keys())
        if not any(_port_matches(v, exposed) for v in filters["expose"]):
            return False
    if filters.get("health") and status_of(c) not in filters["health"]:
        return False
    # No swarm here: no container is a task.
    return "true" not in filters.get("is-task", [])


def _ancestor_matches(
    manager: ContainerManager, c: Container, values: list[str]
) -> bool:
    images = manager.daemon.images
    for value in values:
        if value in (c.image_ref, c.image_id) or (
            c.image_id.startswith(value.removeprefix("sha256:")) and len(value) >= 4
        ):
            return True
        try:
            image = images.get(value)
        except Exception:
            continue
        if image.id == c.image_id:
            return True
    return False


def age(c: Container) -> float:
    return time.time() - parse_rfc3339(c.created)
