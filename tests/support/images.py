"""Test images built offline from Debian's busybox-static.

``busybox_archive(path)`` writes a docker-archive tar (what ``docker save``
produces) holding one image, ``dockyard-test/busybox:latest``, whose single
layer has ``/bin/busybox`` and a link per applet, plus ``/etc/passwd``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
BUSYBOX_REF = "dockyard-test/busybox:latest"
EPOCH = 1700000000


def _add(
    tar: tarfile.TarFile, name: str, data: bytes | None = None, **kw: object
) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = EPOCH
    for key, value in kw.items():
        setattr(info, key, value)
    if data is not None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def busybox_rootfs_tar() -> bytes:
    """An uncompressed rootfs tar: busybox, its applets, /etc basics."""
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in (
            "bin",
            "etc",
            "tmp",
            "root",
            "proc",
            "sys",
            "dev",
            "var",
            "usr",
            "usr/bin",
        ):
            _add(tar, d, type=tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755)
        _add(tar, "bin/busybox", BUSYBOX.read_bytes(), mode=0o755)
        for applet in applets:
            if applet != "busybox":
                _add(
                    tar,
                    f"bin/{applet}",
                    type=tarfile.LNKTYPE,
                    linkname="bin/busybox",
                    mode=0o755,
                )
        _add(
            tar,
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
            mode=0o644,
        )
        _add(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n", mode=0o644)
    return buf.getvalue()


def busybox_archive(path: Path, ref: str = BUSYBOX_REF) -> Path:
    """Write a docker-archive tar of the busybox image to ``path``."""
    layer = busybox_rootfs_tar()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64" if os.uname().machine == "x86_64" else "arm64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {
            "Env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            ],
            "Cmd": ["sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {
                "created": "2023-11-14T22:13:20Z",
                "created_by": "busybox-static from Debian",
            }
        ],
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    config_hex = hashlib.sha256(config_bytes).hexdigest()
    layer_name = f"{diff_id[7:]}/layer.tar"
    manifest = [
        {"Config": f"{config_hex}.json", "RepoTags": [ref], "Layers": [layer_name]}
    ]
    with tarfile.open(path, "w") as tar:
        _add(tar, f"{config_hex}.json", config_bytes, mode=0o644)
        _add(tar, f"{diff_id[7:]}", type=tarfile.DIRTYPE, mode=0o755)
        _add(tar, layer_name, layer, mode=0o644)
        _add(tar, "manifest.json", json.dumps(manifest).encode(), mode=0o644)
    return path


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)
