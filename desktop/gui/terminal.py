"""A terminal into a container: the platform's terminal running ``docker exec``.

An interactive shell needs a real TTY (job control, line editing, curses
programs), which the desktop's own terminal already does well, so the
dashboard opens one running::

    docker --host unix:///.../docker.sock exec -it web sh -c 'bash || sh'
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import sys

log = logging.getLogger(__name__)

# Tried in order on Linux; each takes the command after the given flag.
LINUX_TERMINALS = [
    ("x-terminal-emulator", ["-e"]),
    ("gnome-terminal", ["--"]),
    ("konsole", ["-e"]),
    ("xfce4-terminal", ["-x"]),
    ("kitty", []),
    ("alacritty", ["-e"]),
    ("xterm", ["-e"]),
]


class TerminalError(Exception):
    """No terminal could be opened; the message says what to install."""


def exec_command(docker_host: str, container: str) -> list[str]:
    """The ``docker exec`` argv that opens a shell in ``container``."""
    docker = shutil.which("docker") or "docker"
    shell = "command -v bash >/dev/null && exec bash || exec sh"
    return [docker, "--host", docker_host, "exec", "-it", container, "sh", "-c", shell]


def terminal_command(command: list[str]) -> list[str]:
    """Wrap ``command`` so it runs in a new terminal window on this platform."""
    if sys.platform == "win32":
        return ["cmd.exe", "/c", "start", "Dockyard", *command]
    if sys.platform == "darwin":
        script = shlex.join(command).replace("\\", "\\\\").replace('"', '\\"')
        return [
            "osascript",
            "-e",
            f'tell application "Terminal" to do script "{script}"',
        ]
    for name, flag in LINUX_TERMINALS:
        path = shutil.which(name)
        if path:
            return [path, *flag, *command]
    raise TerminalError(
        "No terminal program found; install one (xterm, gnome-terminal, konsole) "
        f"or run: {shlex.join(command)}"
    )


def open_terminal(docker_host: str, container: str) -> list[str]:
    """Open a terminal window with a shell in ``container``; returns its argv."""
    argv = terminal_command(exec_command(docker_host, container))
    log.info("opening a terminal into %s", container)
    try:
        subprocess.Popen(argv, start_new_session=True)
    except OSError as err:
        raise TerminalError(f"Could not start {argv[0]}: {err}") from err
    return argv
