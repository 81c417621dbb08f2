"""The docker CLI's contexts: ``docker --context dockyard ps`` reaches a machine.

The CLI keeps one folder per context, named by the sha256 of the context's
name, under ``$DOCKER_CONFIG/contexts/meta`` (``~/.docker`` by default)::

    contexts/meta/<sha256("dockyard")>/meta.json
    {"Name": "dockyard", "Metadata": {"Description": ...},
     "Endpoints": {"docker": {"Host": "unix:///...", "SkipTLSVerify": false}}}
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path


def docker_config_dir() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG", str(Path.home() / ".docker")))


def context_dir(name: str) -> Path:
    return docker_config_dir() / "contexts" / "meta" / _digest(name)


def tls_dir(name: str) -> Path:
    """Where the CLI keeps the TLS files of context ``name`` (see contexts_tls)."""
    return docker_config_dir() / "contexts" / "tls" / _digest(name)


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def write_context(name: str, host: str, machine: str) -> Path:
    """Create or update the context ``name`` pointing at ``host``."""
    path = context_dir(name) / "meta.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "Name": name,
        "Metadata": {"Description": f"Dockyard machine {machine}"},
        "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}},
    }
    tmp = path.with_name("meta.json.tmp")
    tmp.write_text(json.dumps(meta))
    tmp.replace(path)
    return path


def remove_context(name: str) -> None:
    shutil.rmtree(context_dir(name), ignore_errors=True)
    shutil.rmtree(tls_dir(name), ignore_errors=True)
