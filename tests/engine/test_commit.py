"""docker commit: the container's changes become one layer, and only those."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

from tests.support.engine import EngineProcess


def _top_layer_names(archive: Path) -> set[str]:
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        top = manifest[0]["Layers"][-1]
        data = outer.extractfile(top).read()  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(data)) as layer:
        return {member.name.rstrip("/") for member in layer.getmembers()}


def test_commit_keeps_changes_and_leaves_mount_points_out(
    engine: EngineProcess, busybox: str, tmp_path: Path
) -> None:
    name = f"commit-{uuid.uuid4().hex[:8]}"
    ref = f"dockyard-test/committed:{name}"
    engine.docker(
        "run", "--name", name, busybox, "sh", "-c", "echo hello > /made-here",
        check=True,
    )  # fmt: skip
    try:
        engine.docker("commit", "-c", "CMD cat /made-here", name, ref, check=True)
        out = engine.docker("run", "--rm", ref, check=True)
        assert out.stdout == "hello\n"

        engine.docker("save", "-o", str(tmp_path / "c.tar"), ref, check=True)
        names = _top_layer_names(tmp_path / "c.tar")
        assert "made-here" in names
        # The runtime's bind-mount targets are not the container's work.
        assert not names & {"etc/hosts", "etc/hostname", "etc/resolv.conf"}
    finally:
        engine.docker("rm", "-f", name)
        engine.docker("rmi", ref)


def test_commit_repo_with_tag_and_unknown_container(
    engine: EngineProcess, busybox: str
) -> None:
    name = f"commit-{uuid.uuid4().hex[:8]}"
    engine.docker("create", "--name", name, busybox, "true", check=True)
    try:
        status, body = engine.request(
            "POST", f"/v1.47/commit?container={name}&repo=dockyard-test/ct:v9"
        )
        assert status == 201, body
        tags = engine.docker("image", "inspect", "--format", "{{json .RepoTags}}",
                             "dockyard-test/ct:v9", check=True)  # fmt: skip
        assert "dockyard-test/ct:v9" in json.loads(tags.stdout)
        engine.docker("rmi", "dockyard-test/ct:v9", check=True)
    finally:
        engine.docker("rm", "-f", name)
    missing = engine.docker("commit", "no-such-container-here", "x:1")
    assert missing.returncode != 0
    assert "No such container: no-such-container-here" in missing.stderr
