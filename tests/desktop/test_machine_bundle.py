"""The engine wheel the host uploads to a machine: from the sources or the bundle.

The source path packs this checkout's ``engine`` for real. The frozen path
is faked at one boundary only: PyInstaller's bootloader is what sets
``sys.frozen`` and ``sys._MEIPASS``, and building a bundle takes minutes
(``tests/installers`` does that). Here those two attributes point at a
folder laid out like the bundle's ``_internal/`` that holds the real wheel
``installers.wheel`` builds, the same file the bundle ships.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import engine
from desktop.machine import bundle
from desktop.machine.errors import MachineError


def _unpack_like_the_guest(wheel: Path, target: Path) -> Path:
    """What the host runs in the guest: unzip into a folder put on PYTHONPATH."""
    zipfile.ZipFile(wheel).extractall(target)
    return target


def _import_engine_from(folder: Path, cwd: Path) -> str:
    """``engine.__file__`` as a fresh Python importing from ``folder`` sees it."""
    env = dict(os.environ, PYTHONPATH=str(folder))
    out = subprocess.run(
        [sys.executable, "-c", "import engine.main; print(engine.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Look like a PyInstaller bundle whose ``_internal`` is the returned folder."""
    internal = tmp_path / "_internal"
    (internal / bundle.SHIPPED_WHEEL_DIR).mkdir(parents=True)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(internal), raising=False)
    return internal


def test_source_wheel_packs_the_running_engine(tmp_path: Path) -> None:
    version = bundle.engine_version()
    assert version.startswith(f"{engine.__version__}+g")
    assert bundle.engine_version() == version

    wheel = bundle.build_wheel(tmp_path / "cache")
    assert wheel.parent == tmp_path / "cache"
    assert version in wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert "engine/main.py" in names
    assert any(n.startswith("engine/__pycache__/main.") for n in names)
    record = f"dockyard_engine-{version}.dist-info/VERSION"
    assert zipfile.ZipFile(wheel).read(record).decode().strip() == version
    # The same sources give the same file, without packing again.
    assert bundle.build_wheel(tmp_path / "cache") == wheel

    root = _unpack_like_the_guest(wheel, tmp_path / "guest")
    assert _import_engine_from(root, tmp_path) == str(root / "engine/__init__.py")


def test_frozen_uses_the_wheel_the_bundle_ships(frozen: Path, tmp_path: Path) -> None:
    from installers.project import Project
    from installers.wheel import build_wheel as build_project_wheel

    shipped = build_project_wheel(Project.load(), frozen / bundle.SHIPPED_WHEEL_DIR)
    digest = hashlib.sha256(shipped.read_bytes()).hexdigest()

    assert bundle.shipped_wheel() == shipped
    assert bundle.engine_version() == f"{engine.__version__}+w{digest[:12]}"
    cache = tmp_path / "cache"
    assert bundle.build_wheel(cache) == shipped
    assert not cache.exists(), "nothing is packed from the (absent) sources"

    root = _unpack_like_the_guest(shipped, tmp_path / "guest")
    assert _import_engine_from(root, tmp_path) == str(root / "engine/__init__.py")


def test_frozen_version_follows_the_wheel_file(frozen: Path) -> None:
    folder = frozen / bundle.SHIPPED_WHEEL_DIR
    wheel = folder / "dockyard-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"first build")
    first = bundle.engine_version()
    wheel.write_bytes(b"second build")
    assert bundle.engine_version() != first


def test_frozen_without_a_wheel_says_to_reinstall(frozen: Path, tmp_path: Path) -> None:
    with pytest.raises(MachineError, match=r"no engine wheel .* reinstall Dockyard"):
        bundle.engine_version()
    with pytest.raises(MachineError, match="reinstall Dockyard"):
        bundle.build_wheel(tmp_path / "cache")
