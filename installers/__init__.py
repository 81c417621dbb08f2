"""Dockyard's installers: one PyInstaller bundle, then a package per platform.

The bundle is a single folder holding two programs, ``dockyard`` (the CLI)
and ``dockyard-desktop`` (the tray app), over one shared ``_internal/``
folder of Python, Qt and their libraries. Beside them, as a data file, is a
wheel of this repository that the host copies into the guest to run the
engine::

    dockyard/
      dockyard                  the CLI
      dockyard-desktop          the tray app
      _internal/engine/dockyard-0.1.0-py3-none-any.whl

``python -m installers build`` makes the wheel, the bundle and the
platform's package: a .deb and a tarball on Linux, an Inno Setup installer
on Windows, a .app in a .pkg and a .dmg on macOS. PyInstaller cannot build
for another system, so ``--plan`` writes the generated scripts for any
platform and prints the commands that would run, without running them.
"""

from installers.errors import InstallerError
from installers.project import Project

__all__ = ["InstallerError", "Project"]
