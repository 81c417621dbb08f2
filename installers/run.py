"""Running the build tools (pip, PyInstaller, dpkg-deb) and reporting failures.

Every tool runs with its output captured; on failure the last lines of that
output go into the InstallerError, because the interesting line (a missing
module, a bad control field) is almost always near the end.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from installers.errors import InstallerError

log = logging.getLogger(__name__)

TAIL_LINES = 30


def run_tool(
    step: str,
    argv: Sequence[str | Path],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run ``argv`` and return its output; raises InstallerError naming ``step``."""
    args = [str(a) for a in argv]
    log.debug("%s: %s", step, shlex.join(args))
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
    except FileNotFoundError as err:
        raise InstallerError(f"{step}: {args[0]} is not installed") from err
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-TAIL_LINES:])
        raise InstallerError(f"{step} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout
