"""Start at login on Linux: an XDG autostart ``.desktop`` entry.

Desktops that follow the XDG autostart spec (GNOME, KDE, Xfce...) launch
every ``$XDG_CONFIG_HOME/autostart/*.desktop`` at login.
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "dockyard-desktop.desktop"


def entry_path(home: Path | None = None) -> Path:
    if home is not None:
        return home / ".config" / "autostart" / FILE_NAME
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "autostart" / FILE_NAME


def set_autostart(enabled: bool, command: list[str], home: Path | None = None) -> Path:
    path = entry_path(home)
    if not enabled:
        path.unlink(missing_ok=True)
        log.info("start at login disabled (%s removed)", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Name=Dockyard\n"
        "Comment=Linux containers on your desktop\n"
        f"Exec={shlex.join(command)}\n"
        "Icon=dockyard\n"
        "Terminal=false\n"
        "X-GNOME-Autostart-enabled=true\n"
    )
    log.info("start at login enabled (%s)", path)
    return path
