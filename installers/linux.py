"""Linux: the bundle as a .deb and as a tarball.

The .deb lays the bundle out as::

    /opt/dockyard/                              the bundle folder
    /usr/bin/dockyard -> ../../opt/dockyard/dockyard
    /usr/bin/dockyard-desktop -> ../../opt/dockyard/dockyard-desktop
    /usr/share/applications/dockyard-desktop.desktop
    /usr/share/icons/hicolor/scalable/apps/dockyard.svg

The links are relative so the tree also works where it is unpacked
somewhere else (``dpkg -x pkg.deb root/``, which the tests do). The
tarball holds the bundle folder alone, for any distribution:
``dockyard-0.1.0-linux-amd64/dockyard``.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import stat
import tarfile
from pathlib import Path

from installers.bundle import Bundle
from installers.errors import InstallerError
from installers.project import (
    GUI,
    INSTALLERS,
    MAINTAINER,
    PROGRAMS,
    SUMMARY,
    Project,
    debian_arch,
)
from installers.run import run_tool

log = logging.getLogger(__name__)

PREFIX = "opt/dockyard"
DESKTOP_FILE = INSTALLERS / "linux" / f"{GUI}.desktop"
POSTINST = INSTALLERS / "linux" / "postinst"
ICON_PATH = "usr/share/icons/hicolor/scalable/apps/dockyard.svg"
# Qt's xcb platform plugin loads these from the system; the bundle carries
# Qt itself. The CLI needs none of them, but one package serves both.
GUI_LIBRARIES = (
    "libegl1",
    "libgl1",
    "libfontconfig1",
    "libxkbcommon-x11-0",
    "libxcb-cursor0",
    "libdbus-1-3",
)
# What a machine needs on a Linux host (QEMU through libvirt, SSH) and the
# docker CLI the user drives it with.
RECOMMENDS = (
    "qemu-system-x86 | qemu-system-arm",
    "qemu-utils",
    "libvirt-daemon-system",
    "openssh-client",
    "docker-cli | docker.io",
)
DESCRIPTION = """\
 Dockyard runs a Docker-compatible engine in a small Linux virtual machine
 and forwards its API socket, published ports and shared folders to this
 host. It ships the `dockyard` command for machines and the
 `dockyard-desktop` tray app with a dashboard of containers, images and
 volumes."""


def deb_name(project: Project, arch: str) -> str:
    return f"{project.name}_{project.version}_{arch}.deb"


def libc_dependency() -> str:
    """``libc6 (>= X)`` for the glibc the bundle was built against."""
    name, version = platform.libc_ver()
    if name != "glibc" or not version:
        raise InstallerError("the bundle must be built on a glibc system")
    return f"libc6 (>= {version})"


def control(project: Project, arch: str, installed_kib: int) -> str:
    """The .deb's DEBIAN/control text."""
    depends = ", ".join([libc_dependency(), *GUI_LIBRARIES])
    return (
        f"Package: {project.name}\n"
        f"Version: {project.version}\n"
        f"Architecture: {arch}\n"
        f"Maintainer: {MAINTAINER}\n"
        f"Installed-Size: {installed_kib}\n"
        f"Depends: {depends}\n"
        f"Recommends: {', '.join(RECOMMENDS)}\n"
        "Section: admin\n"
        "Priority: optional\n"
        f"Description: {SUMMARY}\n"
        f"{DESCRIPTION}\n"
    )


def _normalise_modes(root: Path) -> None:
    # PyInstaller copies libraries with whatever mode the build machine
    # had (some group-writable); dpkg installs them as they are in the .deb.
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(Path(dirpath) / name, 0o755)
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                continue
            executable = path.stat().st_mode & stat.S_IXUSR
            path.chmod(0o755 if executable else 0o644)


def _installed_kib(root: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            size = (Path(dirpath) / name).lstat().st_size
            total += (size + 1023) // 1024
    return total


def stage_deb_root(project: Project, bundle: Bundle, root: Path) -> None:
    """Lay out the package's files under ``root`` (no DEBIAN/ yet)."""
    shutil.copytree(bundle.folder, root / PREFIX, symlinks=True)

    bin_dir = root / "usr" / "bin"
    bin_dir.mkdir(parents=True)
    for program in PROGRAMS:
        (bin_dir / program).symlink_to(f"../../{PREFIX}/{program}")

    applications = root / "usr" / "share" / "applications"
    applications.mkdir(parents=True)
    shutil.copy(DESKTOP_FILE, applications / DESKTOP_FILE.name)
    icon = root / ICON_PATH
    icon.parent.mkdir(parents=True)
    shutil.copy(project.app_icon, icon)

    _normalise_modes(root)


def dpkg_deb_command(root: Path, target: Path) -> list[str]:
    """The dpkg-deb command that packs the staged ``root`` into ``target``."""
    # gzip: every dpkg reads it, and xz takes minutes over Qt's libraries on
    # a small build machine to save a few megabytes.
    return [
        "dpkg-deb",
        "--root-owner-group",
        "-Zgzip",
        "--build",
        str(root),
        str(target),
    ]


def build_deb(
    project: Project, bundle: Bundle, output: Path, work: Path, arch: str | None = None
) -> Path:
    """Stage the package in ``work/deb-root``, build the .deb into ``output``.

    Raises InstallerError when dpkg-deb fails.
    """
    arch = arch or debian_arch()
    target = output / deb_name(project, arch)
    root = work / "deb-root"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(mode=0o755, parents=True)
    stage_deb_root(project, bundle, root)
    kib = _installed_kib(root)

    debian = root / "DEBIAN"
    debian.mkdir(mode=0o755)
    (debian / "control").write_text(control(project, arch, kib))
    shutil.copy(POSTINST, debian / "postinst")
    (debian / "postinst").chmod(0o755)

    run_tool("dpkg-deb", dpkg_deb_command(root, target))
    # The staged copy is as big as the bundle; the .deb is what is kept.
    shutil.rmtree(root, ignore_errors=True)
    log.info("built %s", target)
    return target


def tarball_name(project: Project, arch: str) -> str:
    return f"{project.name}-{project.version}-linux-{arch}.tar.gz"


def build_tarball(
    project: Project, bundle: Bundle, output: Path, arch: str | None = None
) -> Path:
    """Pack the bundle folder as ``<name>-<version>-linux-<arch>/``; return the path."""
    arch = arch or debian_arch()
    target = output / tarball_name(project, arch)
    top = target.name.removesuffix(".tar.gz")

    def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(target, "w:gz", compresslevel=6) as tar:
        tar.add(bundle.folder, arcname=top, filter=owned_by_root)
    log.info("built %s", target)
    return target


def package(project: Project, bundle: Bundle, output: Path, work: Path) -> list[Path]:
    """The .deb and the tarball of ``bundle`` in ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    return [
        build_deb(project, bundle, output, work),
        build_tarball(project, bundle, output),
    ]
