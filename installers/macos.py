"""macOS: the .app PyInstaller makes, in a .pkg and a .dmg.

The .app is ``Dockyard.app`` with both programs in ``Contents/MacOS``; the
tray app is its main executable and it has no Dock icon (``LSUIElement``).
The .pkg installs the .app into /Applications and links the CLI into
/usr/local/bin; the .dmg offers the .app beside a link to /Applications for
those who drag and drop.

pkgbuild, productbuild and hdiutil exist only on macOS: ``commands()``
returns their exact command lines, which ``--plan`` prints anywhere.
"""

from __future__ import annotations

import plistlib
import shutil
from pathlib import Path
from typing import Any

from installers.project import APP_ID, APP_NAME, CLI, GUI
from installers.run import run_tool

ICON_FILE = "dockyard.icns"
INSTALL_LOCATION = "/Applications"
CLI_LINK_DIR = "/usr/local/bin"
MINIMUM_MACOS = "11.0"

POSTINSTALL = f"""\
#!/bin/sh
# Put the CLI on every user's PATH; the .app itself needs nothing else.
set -e
mkdir -p {CLI_LINK_DIR}
ln -sf "$2/{APP_NAME}.app/Contents/MacOS/{CLI}" {CLI_LINK_DIR}/{CLI}
exit 0
"""


def info_plist(version: str) -> dict[str, Any]:
    """The .app's Info.plist as a dict (PyInstaller's BUNDLE writes it)."""
    return {
        "CFBundleName": APP_NAME,
        "CFBundleDisplayName": APP_NAME,
        "CFBundleIdentifier": APP_ID,
        "CFBundleExecutable": GUI,
        "CFBundleIconFile": ICON_FILE,
        "CFBundlePackageType": "APPL",
        "CFBundleInfoDictionaryVersion": "6.0",
        "CFBundleShortVersionString": version,
        "CFBundleVersion": version,
        "LSMinimumSystemVersion": MINIMUM_MACOS,
        # A tray app: a menu-bar icon, no Dock tile.
        "LSUIElement": True,
        "NSHighResolutionCapable": True,
    }


def write_info_plist(version: str, path: Path) -> Path:
    """Write ``info_plist(version)`` as an XML plist at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        plistlib.dump(info_plist(version), f, sort_keys=True)
    return path


def write_scripts(folder: Path) -> Path:
    """Write the .pkg's postinstall script into ``folder``; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "postinstall"
    script.write_text(POSTINSTALL)
    script.chmod(0o755)
    return folder


def commands(version: str, app: Path, output: Path) -> list[list[str]]:
    """pkgbuild, productbuild and hdiutil command lines, in the order to run.

    ``app`` is PyInstaller's Dockyard.app; everything is written under
    ``output`` (``output/macos`` for the intermediate files).
    """
    work = output / "macos"
    component = work / f"{APP_NAME}-component.pkg"
    dmg_root = work / "dmg"
    return [
        [
            "pkgbuild", "--component", str(app),
            "--install-location", INSTALL_LOCATION,
            "--identifier", APP_ID, "--version", version,
            "--scripts", str(work / "scripts"), str(component),
        ],
        [
            "productbuild", "--package", str(component),
            "--identifier", f"{APP_ID}.installer", "--version", version,
            str(output / f"{APP_NAME}-{version}.pkg"),
        ],
        [
            "hdiutil", "create", "-volname", f"{APP_NAME} {version}",
            "-srcfolder", str(dmg_root), "-ov", "-format", "UDZO",
            str(output / f"{APP_NAME}-{version}.dmg"),
        ],
    ]  # fmt: skip


def stage(app: Path, output: Path) -> None:
    """Write the .pkg's scripts and lay out the .dmg's folder under ``output``."""
    work = output / "macos"
    write_scripts(work / "scripts")
    dmg_root = work / "dmg"
    shutil.rmtree(dmg_root, ignore_errors=True)
    dmg_root.mkdir(parents=True)
    shutil.copytree(app, dmg_root / app.name, symlinks=True)
    (dmg_root / "Applications").symlink_to(INSTALL_LOCATION)


def package(version: str, app: Path, output: Path) -> list[Path]:
    """Build the .pkg and the .dmg from ``app``; return both.

    Only on macOS; raises InstallerError when a tool fails.
    """
    stage(app, output)
    for argv in commands(version, app, output):
        run_tool(argv[0], argv)
    return [
        output / f"{APP_NAME}-{version}.pkg",
        output / f"{APP_NAME}-{version}.dmg",
    ]
