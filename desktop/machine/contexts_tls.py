"""Docker contexts for the TLS and named-pipe endpoints of a machine.

``contexts.write_context`` covers a unix socket. A TLS endpoint also needs
the client's certificates, which the CLI keeps beside the context's
metadata, in a folder named by the same sha256 of the context's name::

    contexts/meta/<sha256(name)>/meta.json
        {"Name": ..., "Endpoints": {"docker": {"Host": "tcp://127.0.0.1:PORT",
                                               "SkipTLSVerify": false}}}
    contexts/tls/<sha256(name)>/docker/ca.pem cert.pem key.pem

(the layout ``docker context create NAME --docker host=...,ca=...,cert=...,
key=...`` writes, with the tls folders 0700 and the files 0600). The CLI
copies the files at create time and so does this module: a context keeps
working if the machine's folder moves, and is rewritten at each start.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from desktop.machine import api_listener_windows, contexts
from desktop.machine.api_listener import Endpoint

TLS_FILES = ("ca.pem", "cert.pem", "key.pem")


def write_tls_context(name: str, host: str, cert_path: Path, machine: str) -> Path:
    """Create or update ``name`` for ``host`` with the client files in ``cert_path``.

    Raises ``OSError`` when a file cannot be read or written.
    """
    material = {f: (cert_path / f).read_bytes() for f in TLS_FILES}
    folder = contexts.tls_dir(name) / "docker"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for part in (folder.parent.parent, folder.parent, folder):
        os.chmod(part, 0o700)
    for filename, data in material.items():
        tmp = folder / f".{filename}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, folder / filename)
    return contexts.write_context(name, host, machine)


def write_npipe_context(name: str, machine: str) -> Path:
    """Create or update ``name`` for the machine's named pipe (Windows)."""
    remove_tls(name)
    return contexts.write_context(
        name, api_listener_windows.docker_host(machine), machine
    )


def write_endpoint_context(name: str, endpoint: Endpoint, machine: str) -> Path:
    """The context for whatever kind of endpoint the forwarder serves."""
    if endpoint.cert_path:
        return write_tls_context(name, endpoint.host, Path(endpoint.cert_path), machine)
    remove_tls(name)
    return contexts.write_context(name, endpoint.host, machine)


def remove_tls(name: str) -> None:
    """Drop the context's TLS files (a context that moved off TLS keeps none)."""
    shutil.rmtree(contexts.tls_dir(name), ignore_errors=True)


def write_machine_context(
    name: str, machine_root: Path, fallback_host: str, machine: str
) -> Path:
    """The context for what the forwarder serves, as its ``api.json`` says.

    ``fallback_host`` (the unix socket) is used when there is no ``api.json``,
    as with a forwarder from before the listeners existed.
    """
    endpoint = Endpoint.load(machine_root / "api.json") or Endpoint(
        "unix", fallback_host
    )
    return write_endpoint_context(name, endpoint, machine)
