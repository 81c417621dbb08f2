"""Start at login on Windows: a value under the user's ``Run`` key.

Explorer starts every command listed in
``HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run`` at sign-in.
"""

from __future__ import annotations

import logging
import subprocess
import sys

log = logging.getLogger(__name__)

RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
VALUE_NAME = "Dockyard"
LOCATION = rf"HKCU\{RUN_KEY}\{VALUE_NAME}"


def set_autostart(enabled: bool, command: list[str]) -> str:
    """Write or delete the Run value; raises OSError off Windows."""
    if sys.platform != "win32":
        raise OSError("the Run key exists only on Windows")
    import winreg

    with winreg.OpenKey(
        winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE
    ) as key:
        if enabled:
            value = subprocess.list2cmdline(command)
            winreg.SetValueEx(key, VALUE_NAME, 0, winreg.REG_SZ, value)
            log.info("start at login enabled (%s)", LOCATION)
        else:
            try:
                winreg.DeleteValue(key, VALUE_NAME)
            except FileNotFoundError:
                pass
            log.info("start at login disabled (%s removed)", LOCATION)
    return LOCATION


def is_enabled() -> bool:
    if sys.platform != "win32":
        return False
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
            winreg.QueryValueEx(key, VALUE_NAME)
    except FileNotFoundError:
        return False
    return True
