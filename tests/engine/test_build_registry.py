"""``docker build`` whose FROM image comes from a registry.

The registries are Debian's ``docker-registry`` on loopback, open and with
htpasswd auth; the CLI passes its stored logins in ``X-Registry-Config``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.engine import EngineProcess
from tests.support.registry import REGISTRY_BIN, RegistryProcess

pytestmark = [pytest.mark.registry, pytest.mark.root]


@pytest.fixture(scope="module")
def registry_root() -> Iterator[Path]:
    if not REGISTRY_BIN.exists():
        pytest.skip("needs Debian's docker-registry (/usr/bin/docker-registry)")
    root = Path(tempfile.mkdtemp(prefix="dybuildreg-", dir="/var/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def ok(engine: EngineProcess, *args: str) -> str:
    result = engine.docker(*args, timeout=300)
    assert result.returncode == 0, f"docker {' '.join(args)}:\n{result.stderr}"
    return result.stdout


def build(
    engine: EngineProcess, ctx: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {**engine.env(), "DOCKER_BUILDKIT": "0"}
    return subprocess.run(
        ["docker", "build", *args, str(ctx)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def publish(engine: EngineProcess, busybox: str, name: str) -> None:
    """Push the busybox image as ``name`` and drop the local copy."""
    ok(engine, "tag", busybox, name)
    ok(engine, "push", name)
    ok(engine, "rmi", name)


def test_from_pulls_a_missing_base(
    engine: EngineProcess, busybox: str, registry_root: Path, tmp_path: Path
) -> None:
    with RegistryProcess(registry_root / "open") as reg:
        base = f"{reg.host}/build/base:1"
        publish(engine, busybox, base)
        (tmp_path / "Dockerfile").write_text(f"FROM {base}\nLABEL pulled=yes\n")
        result = build(engine, tmp_path, "-t", "frompull:1")
        assert result.returncode == 0, result.stderr
        assert f"Step 1/2 : FROM {base}" in result.stdout
        assert "Successfully tagged frompull:1" in result.stdout
        assert engine.docker("image", "inspect", base).returncode == 0

        # --pull asks the registry again even though the image is here now.
        again = build(engine, tmp_path, "--pull", "-t", "frompull:1")
        assert again.returncode == 0, again.stderr
        assert "Using cache" in again.stdout


def test_private_base_uses_registry_config(
    engine: EngineProcess, busybox: str, registry_root: Path, tmp_path: Path
) -> None:
    with RegistryProcess(registry_root / "basic", users={"builder": "s3cret"}) as reg:
        ok(engine, "login", reg.host, "-u", "builder", "-p", "s3cret")
        base = f"{reg.host}/private/base:1"
        publish(engine, busybox, base)
        (tmp_path / "Dockerfile").write_text(f'FROM {base}\nCMD ["true"]\n')
        result = build(engine, tmp_path, "-t", "private:1")
        assert result.returncode == 0, result.stderr

        ok(engine, "rmi", base)
        ok(engine, "logout", reg.host)
        denied = build(engine, tmp_path, "-t", "private:2")
        assert denied.returncode != 0
        assert engine.docker("image", "inspect", "private:2").returncode != 0
