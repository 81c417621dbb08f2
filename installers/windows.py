"""Windows: the bundle in an Inno Setup installer.

``installers/windows/dockyard.iss`` is a template whose ``${...}`` fields
(version, where the bundle is, where the installer goes, the icon) are
filled in here. The result installs the bundle into Program Files, adds
``dockyard`` to the system PATH (and takes it back on uninstall), and puts
Dockyard in the Start menu. ISCC exists only on Windows: ``iscc_command()``
gives the exact command line, which ``--plan`` prints anywhere.
"""

from __future__ import annotations

import logging
import shutil
import string
from pathlib import Path, PureWindowsPath

from installers.errors import InstallerError
from installers.project import (
    APP_GUID,
    APP_NAME,
    CLI,
    GUI,
    INSTALLERS,
    PUBLISHER,
    Project,
)
from installers.run import run_tool

log = logging.getLogger(__name__)

TEMPLATE = INSTALLERS / "windows" / "dockyard.iss"
# Where the Inno Setup 6 installer puts its compiler when ISCC is not on PATH.
DEFAULT_ISCC = PureWindowsPath(r"C:\Program Files (x86)\Inno Setup 6\ISCC.exe")


def installer_name(project: Project) -> str:
    return f"{APP_NAME}-{project.version}-setup.exe"


def render_iss(project: Project, bundle_dir: Path, output_dir: Path, icon: Path) -> str:
    """The template with every field filled in.

    Raises InstallerError when the template names a field this does not fill.
    """
    # Inno's `{{` escapes a literal brace: AppId={{GUID} yields {GUID}.
    fields = {
        "app_guid": APP_GUID.lstrip("{"),
        "app_name": APP_NAME,
        "version": project.version,
        "publisher": PUBLISHER,
        "bundle_dir": str(bundle_dir),
        "output_dir": str(output_dir),
        "icon": str(icon),
        "gui": GUI,
        "cli": CLI,
    }
    try:
        return string.Template(TEMPLATE.read_text()).substitute(fields)
    except (KeyError, ValueError) as err:
        raise InstallerError(
            f"{TEMPLATE} has a field that is not filled: {err}"
        ) from err


def write_iss(
    project: Project, bundle_dir: Path, output_dir: Path, icon: Path, path: Path
) -> Path:
    """Write the filled-in script to ``path``; return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # ISCC reads a script without a BOM as the system code page; all of
    # ours is ASCII, so the encoding never matters.
    path.write_text(render_iss(project, bundle_dir, output_dir, icon), encoding="ascii")
    log.info("wrote %s", path)
    return path


def iscc_path() -> str:
    """ISCC from PATH, else where Inno Setup 6 installs it."""
    return shutil.which("ISCC") or str(DEFAULT_ISCC)


def iscc_command(iss: Path, iscc: str | None = None) -> list[str]:
    """The command that compiles ``iss`` into the setup program."""
    # /Qp: quiet except for progress and errors, so a CI log stays short.
    return [iscc or iscc_path(), "/Qp", str(iss)]


def package(project: Project, bundle_dir: Path, output: Path, icon: Path) -> list[Path]:
    """Write the script and compile the setup program; return it.

    Only on Windows, with Inno Setup 6 installed; raises InstallerError
    otherwise or when ISCC fails.
    """
    iss = write_iss(
        project, bundle_dir, output, icon, output / "windows" / TEMPLATE.name
    )
    run_tool("ISCC", iscc_command(iss))
    return [output / installer_name(project)]
