"""Start at login on macOS: a per-user LaunchAgent.

launchd loads every plist in ``~/Library/LaunchAgents`` at login;
``RunAtLoad`` starts the program then, and no ``KeepAlive`` lets a user's
Quit stick.
"""

from __future__ import annotations

import logging
import plistlib
from pathlib import Path

log = logging.getLogger(__name__)

LABEL = "io.dockyard.desktop"


def entry_path(home: Path | None = None) -> Path:
    return (home or Path.home()) / "Library" / "LaunchAgents" / f"{LABEL}.plist"


def set_autostart(enabled: bool, command: list[str], home: Path | None = None) -> Path:
    path = entry_path(home)
    if not enabled:
        path.unlink(missing_ok=True)
        log.info("start at login disabled (%s removed)", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    agent = {
        "Label": LABEL,
        "ProgramArguments": command,
        "RunAtLoad": True,
        "ProcessType": "Interactive",
    }
    with open(path, "wb") as f:
        plistlib.dump(agent, f)
    log.info("start at login enabled (%s)", path)
    return path
