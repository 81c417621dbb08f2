"""One build, start to finish: wheel, icon, bundle, then the platform's package.

    build(Project.load(), "linux", output=Path("dist"), work=Path("build/installers"))
    # -> [dist/dockyard_0.1.0_amd64.deb, dist/dockyard-0.1.0-linux-amd64.tar.gz]

PyInstaller builds only for the system it runs on, and ISCC, pkgbuild and
hdiutil exist only on theirs. ``plan()`` is the part that runs anywhere: it
writes the files a platform's build generates (the .iss, Info.plist, the
icons) and returns every command in the order ``build()`` would run them.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from installers import icons, linux, macos, windows
from installers.bundle import build_bundle, pyinstaller_command
from installers.errors import InstallerError
from installers.project import (
    APP_NAME,
    BUNDLE_NAME,
    Project,
    debian_arch,
    host_platform,
)
from installers.wheel import build_wheel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One command of a build, for ``--plan`` to print."""

    name: str
    argv: list[str]
    system: str

    def command_line(self) -> str:
        """The command as that platform's shell would take it."""
        if self.system == "windows":
            return subprocess.list2cmdline(self.argv)
        return shlex.join(self.argv)


def _icon(project: Project, system: str, work: Path) -> Path | None:
    # Linux takes the SVG as it is; the others want their own formats.
    if system == "windows":
        return icons.write_ico(project.app_icon, work / "icons" / "dockyard.ico")
    if system == "macos":
        return icons.write_icns(project.app_icon, work / "icons" / macos.ICON_FILE)
    return None


def _check_host(system: str) -> None:
    host = host_platform()
    if system != host:
        raise InstallerError(
            f"PyInstaller builds only for the system it runs on: build the {system} "
            f"installer on {system} (this is {host}), or add --plan to write its "
            "scripts and print its commands here"
        )


def build(project: Project, system: str, output: Path, work: Path) -> list[Path]:
    """Build ``system``'s packages into ``output``; return their paths.

    Raises InstallerError when ``system`` is not this one or a step fails.
    """
    _check_host(system)
    output = output.absolute()
    work = work.absolute()
    output.mkdir(parents=True, exist_ok=True)

    wheel = build_wheel(project, work / "wheel")
    icon = _icon(project, system, work)
    bundle = build_bundle(project, wheel, work, system, icon)

    if system == "linux":
        return linux.package(project, bundle, output, work)
    if system == "windows":
        assert icon is not None
        return windows.package(project, bundle.folder, output, icon)
    assert bundle.app is not None
    return macos.package(project.version, bundle.app, output)


def plan(project: Project, system: str, output: Path, work: Path) -> list[Step]:
    """Write ``system``'s generated files; return the commands its build runs.

    Runs on any platform and builds nothing: the steps are PyInstaller's
    and the packaging tools', the wheel before them being plain pip.
    """
    output = output.absolute()
    work = work.absolute()
    dist = work / "dist"
    wheel = work / "wheel" / project.wheel_name
    icon = _icon(project, system, work)

    # The wheel step runs pip in a scratch copy of the tree: see wheel.py.
    steps = [
        Step(
            "bundle",
            [
                "python",
                *pyinstaller_command(wheel, dist, work / "pyinstaller", icon)[1:],
            ],
            system,
        ),
    ]

    if system == "linux":
        arch = debian_arch()
        steps.append(
            Step(
                "deb",
                linux.dpkg_deb_command(
                    work / "deb-root", output / linux.deb_name(project, arch)
                ),
                system,
            )
        )
    elif system == "windows":
        assert icon is not None
        iss = windows.write_iss(
            project,
            dist / BUNDLE_NAME,
            output,
            icon,
            output / "windows" / windows.TEMPLATE.name,
        )
        steps.append(Step("installer", windows.iscc_command(iss), system))
    else:
        macos.write_info_plist(project.version, output / "macos" / "Info.plist")
        macos.write_scripts(output / "macos" / "scripts")
        app = dist / f"{APP_NAME}.app"
        names = ("pkg", "product", "dmg")
        for name, argv in zip(
            names, macos.commands(project.version, app, output), strict=True
        ):
            steps.append(Step(name, argv, system))
    return steps
