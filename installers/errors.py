"""The installers' one root exception.

A failed step (the wheel, PyInstaller, dpkg-deb) raises ``InstallerError``
with a sentence that names the step and, where a tool failed, the tail of
its output, so ``python -m installers build`` can print it without a
traceback.
"""

from __future__ import annotations


class InstallerError(Exception):
    """A build step failed; ``str(err)`` says which and why."""
