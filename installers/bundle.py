"""The PyInstaller step: the wheel plus ``dockyard.spec`` make the bundle folder.

    bundle = build_bundle(project, wheel, work=Path("build/installers"))
    bundle.folder        # .../dist/dockyard (the one folder)
    bundle.program("dockyard")

PyInstaller only builds for the system it runs on, so this step runs on
Linux for the .deb, on Windows for the installer and on macOS for the .app.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from installers.errors import InstallerError
from installers.project import (
    APP_NAME,
    BUNDLE_NAME,
    ENGINE_WHEEL_DIR,
    INSTALLERS,
    Project,
)
from installers.run import run_tool

log = logging.getLogger(__name__)

SPEC = INSTALLERS / "dockyard.spec"
# PyInstaller 6 puts everything but the programs in this folder.
CONTENTS = "_internal"


@dataclass(frozen=True)
class Bundle:
    """A built bundle folder (and on macOS the .app made from it)."""

    folder: Path
    system: str
    app: Path | None = None

    def program(self, name: str) -> Path:
        """Path of one of the bundle's programs."""
        suffix = ".exe" if self.system == "windows" else ""
        return self.folder / f"{name}{suffix}"

    @property
    def contents(self) -> Path:
        """The folder the programs see as ``sys._MEIPASS``."""
        return self.folder / CONTENTS

    def engine_wheel(self, project: Project) -> Path:
        """Where the guest's wheel sits inside the bundle."""
        return self.contents / ENGINE_WHEEL_DIR / project.wheel_name


def pyinstaller_command(
    wheel: Path, dist: Path, work: Path, icon: Path | None = None
) -> list[str]:
    """The PyInstaller command line that builds the bundle into ``dist``."""
    argv = [
        sys.executable, "-m", "PyInstaller", "--noconfirm",
        "--log-level", "WARN", "--distpath", str(dist), "--workpath", str(work),
        str(SPEC), "--", "--wheel", str(wheel),
    ]  # fmt: skip
    if icon is not None:
        argv += ["--icon", str(icon)]
    return argv


def build_bundle(
    project: Project, wheel: Path, work: Path, system: str, icon: Path | None = None
) -> Bundle:
    """Run PyInstaller over the spec; return the bundle it made.

    Raises InstallerError when PyInstaller is missing or fails.
    """
    try:
        import PyInstaller  # noqa: F401
    except ImportError as err:
        raise InstallerError(
            "PyInstaller is not installed: pip install -e '.[installers]'"
        ) from err

    dist = work / "dist"
    folder = dist / BUNDLE_NAME
    shutil.rmtree(folder, ignore_errors=True)
    # The spec imports installers.*; keep the checkout first on its path.
    env = dict(os.environ, PYTHONPATH=str(project.root))
    log.info("running PyInstaller (this takes a minute or two)")
    run_tool(
        "PyInstaller",
        pyinstaller_command(wheel, dist, work / "pyinstaller", icon),
        cwd=project.root,
        env=env,
    )

    bundle = Bundle(
        folder=folder,
        system=system,
        app=dist / f"{APP_NAME}.app" if system == "macos" else None,
    )
    if not bundle.engine_wheel(project).exists():
        raise InstallerError(f"PyInstaller made no {bundle.engine_wheel(project)}")
    log.info("bundled %s", folder)
    return bundle
