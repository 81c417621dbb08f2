"""Start at login: one small file (or registry value) per platform.

``set_autostart(True)`` writes what the desktop reads at login, and
``set_autostart(False)`` removes it. The variants are sibling modules:

- ``autostart_linux.py``: an XDG ``.desktop`` file in ``~/.config/autostart``
- ``autostart_macos.py``: a LaunchAgent plist in ``~/Library/LaunchAgents``
- ``autostart_windows.py``: a value under HKCU's ``...\\CurrentVersion\\Run``
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

log = logging.getLogger(__name__)

APP_ID = "io.dockyard.desktop"


def launch_command() -> list[str]:
    """How the login session should start the app (no dashboard, tray only)."""
    installed = shutil.which("dockyard-desktop")
    if installed:
        return [installed]
    return [sys.executable, "-m", "desktop.gui.app"]


def set_autostart(enabled: bool, home: Path | None = None) -> Path | str:
    """Create or remove the login entry; returns where it lives."""
    command = launch_command()
    if sys.platform == "win32":
        from desktop.gui import autostart_windows

        return autostart_windows.set_autostart(enabled, command)
    if sys.platform == "darwin":
        from desktop.gui import autostart_macos

        return autostart_macos.set_autostart(enabled, command, home)
    from desktop.gui import autostart_linux

    return autostart_linux.set_autostart(enabled, command, home)


def autostart_enabled(home: Path | None = None) -> bool:
    if sys.platform == "win32":
        from desktop.gui import autostart_windows

        return autostart_windows.is_enabled()
    if sys.platform == "darwin":
        from desktop.gui import autostart_macos

        return autostart_macos.entry_path(home).exists()
    from desktop.gui import autostart_linux

    return autostart_linux.entry_path(home).exists()
