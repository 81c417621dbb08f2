"""What every installer needs to know about the project: names, version, paths.

    project = Project.load()            # reads pyproject.toml at the repo root
    project.version                     # "0.1.0"
    project.wheel_name                  # "dockyard-0.1.0-py3-none-any.whl"

The version comes from ``pyproject.toml`` alone, so a release changes one
line. Names that a user or an operating system sees (the app's id, the
install folder, the programs) are constants here and nowhere else.
"""

from __future__ import annotations

import platform
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from installers.errors import InstallerError

REPO = Path(__file__).resolve().parent.parent
INSTALLERS = REPO / "installers"

APP_NAME = "Dockyard"
# Reverse-DNS id for macOS (CFBundleIdentifier, pkg identifier); Windows
# keys its uninstall entry on APP_GUID instead.
APP_ID = "org.dockyard.Dockyard"
APP_GUID = "{6F3B2C1E-8A4D-4E7B-9C55-2D0A9E6B7F13}"
PUBLISHER = "The Dockyard authors"
MAINTAINER = "Dockyard maintainers <maintainers@dockyard.invalid>"
SUMMARY = "Linux containers on any desktop, driven by the docker CLI"

# The bundle's folder and its two programs, with the module:function each runs.
BUNDLE_NAME = "dockyard"
PROGRAMS = {
    "dockyard": "desktop.cli:main",
    "dockyard-desktop": "desktop.gui.app:main",
}
CLI = "dockyard"
GUI = "dockyard-desktop"
# Inside the bundle's contents folder (sys._MEIPASS): the wheel the host
# copies into the guest. docs/INSTALLERS.md has the lookup.
ENGINE_WHEEL_DIR = "engine"

# The GUI helper's icon when it exists, else the installers' own.
APP_ICONS = (
    REPO / "desktop" / "gui" / "icons" / "app.svg",
    INSTALLERS / "assets" / "dockyard.svg",
)

PLATFORMS = ("linux", "windows", "macos")


def host_platform() -> str:
    """The platform name (one of PLATFORMS) of the system running this."""
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "win32":
        return "windows"
    if sys.platform == "darwin":
        return "macos"
    raise InstallerError(f"no installer for this system ({sys.platform})")


def debian_arch(machine: str | None = None) -> str:
    """Debian's name for this machine's architecture (amd64, arm64)."""
    machine = (machine or platform.machine()).lower()
    names = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
    if machine not in names:
        raise InstallerError(f"no Debian architecture known for {machine!r}")
    return names[machine]


@dataclass(frozen=True)
class Project:
    """The project being packaged: its checkout and its version."""

    root: Path
    name: str
    version: str

    @classmethod
    def load(cls, root: Path = REPO) -> Project:
        """Read name and version from ``root/pyproject.toml``.

        Raises InstallerError when the file is missing or has no version.
        """
        try:
            with open(root / "pyproject.toml", "rb") as f:
                meta = tomllib.load(f)["project"]
            return cls(root=root, name=meta["name"], version=meta["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError) as err:
            raise InstallerError(
                f"cannot read the project's name and version from {root}/pyproject.toml: {err}"
            ) from err

    @property
    def wheel_name(self) -> str:
        """The wheel pip builds for this pure-Python project."""
        return f"{self.name}-{self.version}-py3-none-any.whl"

    @property
    def app_icon(self) -> Path:
        """The app's SVG icon: the GUI's own when present."""
        for icon in APP_ICONS:
            if icon.exists():
                return icon
        raise InstallerError("no app icon: installers/assets/dockyard.svg is missing")
