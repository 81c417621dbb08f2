"""Dockerfile-style changes to an image's runtime config.

``docker commit --change`` and ``docker import --change`` take Dockerfile
instructions that touch only the config, never the filesystem::

    apply_changes({"Cmd": ["sh"]}, ['CMD ["httpd", "-f"]', "ENV A=1 B=2", "EXPOSE 80"])
    # {"Cmd": ["httpd", "-f"], "Env": ["A=1", "B=2"], "ExposedPorts": {"80/tcp": {}}}

Supported: CMD ENTRYPOINT ENV EXPOSE LABEL USER VOLUME WORKDIR ONBUILD
STOPSIGNAL. Anything else is an InvalidParameter naming the instruction.
"""

from __future__ import annotations

import copy
import json
import posixpath
import shlex
from typing import Any

from engine.errors import InvalidParameter

ALLOWED = (
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "ONBUILD",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)
DEFAULT_SHELL = ["/bin/sh", "-c"]


def _json_list(text: str) -> list[str] | None:
    """The exec form (``["a", "b"]``) as a list, or None for the shell form."""
    stripped = text.strip()
    if not stripped.startswith("["):
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _command(text: str, shell: list[str]) -> list[str]:
    exec_form = _json_list(text)
    if exec_form is not None:
        return exec_form
    return [*shell, text.strip()]


def _pairs(instruction: str, text: str) -> list[tuple[str, str]]:
    """``K=V K2="v 2"`` pairs, or the legacy ``K value with spaces`` form."""
    try:
        words = shlex.split(text)
    except ValueError as err:
        raise InvalidParameter(f"{instruction}: {err}") from None
    if not words:
        raise InvalidParameter(f"{instruction} requires at least one argument")
    if "=" not in words[0]:
        if len(words) < 2:
            raise InvalidParameter(f"{instruction} {text.strip()}: missing value")
        key, _, value = text.strip().partition(" ")
        return [(key, value.strip())]
    pairs = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise InvalidParameter(f"{instruction}: invalid key=value pair {word!r}")
        pairs.append((key, value))
    return pairs


def _ports(text: str) -> list[str]:
    ports = []
    for word in text.split():
        number, _, proto = word.partition("/")
        proto = (proto or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise InvalidParameter(f"EXPOSE: invalid protocol in {word!r}")
        low, _, high = number.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise InvalidParameter(f"EXPOSE: invalid port {word!r}") from None
        if not 0 < first <= last <= 65535:
            raise InvalidParameter(f"EXPOSE: invalid port {word!r}")
        ports += [f"{p}/{proto}" for p in range(first, last + 1)]
    return ports


def apply_changes(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """A copy of the runtime ``config`` with each change applied in order.

    Raises InvalidParameter for an instruction that is not allowed here or
    whose arguments do not parse.
    """
    out = copy.deepcopy(config)
    for change in changes:
        # The CLI sends each --change as one argument; a multi-line one holds several.
        for line in change.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                _apply_one(out, line.strip())
    return out


def _apply_one(config: dict[str, Any], line: str) -> None:
    word, _, rest = line.partition(" ")
    instruction = word.upper()
    rest = rest.strip()
    if instruction not in ALLOWED:
        raise InvalidParameter(f"{word} is not a valid change command")
    shell = config.get("Shell") or DEFAULT_SHELL

    if instruction == "CMD":
        config["Cmd"] = _command(rest, shell)
    elif instruction == "ENTRYPOINT":
        config["Entrypoint"] = _command(rest, shell) if rest else None
    elif instruction == "ENV":
        env = list(config.get("Env") or [])
        for key, value in _pairs(instruction, rest):
            env = [e for e in env if e.partition("=")[0] != key]
            env.append(f"{key}={value}")
        config["Env"] = env
    elif instruction == "LABEL":
        labels = dict(config.get("Labels") or {})
        for key, value in _pairs(instruction, rest):
            labels[key] = value
        config["Labels"] = labels
    elif instruction == "EXPOSE":
        exposed = dict(config.get("ExposedPorts") or {})
        for port in _ports(rest):
            exposed[port] = {}
        config["ExposedPorts"] = exposed
    elif instruction == "VOLUME":
        volumes = dict(config.get("Volumes") or {})
        paths = _json_list(rest)
        for path in paths if paths is not None else rest.split():
            volumes[path] = {}
        config["Volumes"] = volumes
    elif instruction == "USER":
        if not rest:
            raise InvalidParameter("USER requires exactly one argument")
        config["User"] = rest
    elif instruction == "WORKDIR":
        if not rest:
            raise InvalidParameter("WORKDIR requires exactly one argument")
        base = config.get("WorkingDir") or "/"
        config["WorkingDir"] = posixpath.normpath(posixpath.join(base, rest))
    elif instruction == "ONBUILD":
        inner = rest.split(" ", 1)[0].upper()
        if inner in ("ONBUILD", "FROM", "MAINTAINER"):
            raise InvalidParameter(f"{inner} isn't allowed as an ONBUILD trigger")
        config["OnBuild"] = [*(config.get("OnBuild") or []), rest]
    elif instruction == "STOPSIGNAL":
        if not rest:
            raise InvalidParameter("STOPSIGNAL requires exactly one argument")
        config["StopSignal"] = rest
