"""The wheel of this repository that the bundle carries for the guest.

The guest runs the engine from ``dockyard-<version>-py3-none-any.whl``, the
same wheel ``pip wheel .`` makes. It is built from a copy of the packages
in a scratch folder, not in the checkout: setuptools leaves ``build/`` and
``*.egg-info`` behind, and other work may be reading the tree meanwhile.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

from installers.errors import InstallerError
from installers.project import Project
from installers.run import run_tool

log = logging.getLogger(__name__)

PACKAGES = ("engine", "desktop", "vmimage")
TOP_FILES = ("pyproject.toml", "README.md")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def build_wheel(project: Project, output: Path) -> Path:
    """Build the project's wheel into ``output``; return its path.

    Raises InstallerError when pip fails or makes a wheel of another name.
    """
    output.mkdir(parents=True, exist_ok=True)
    target = output / project.wheel_name
    target.unlink(missing_ok=True)

    with tempfile.TemporaryDirectory(prefix="dockyard-wheel-") as scratch:
        source = Path(scratch) / "src"
        source.mkdir()
        for name in TOP_FILES:
            shutil.copy2(project.root / name, source / name)
        for name in PACKAGES:
            shutil.copytree(project.root / name, source / name, ignore=SKIP)
        # No build isolation: the build backend comes from the installers
        # extra, so an offline machine builds the same wheel.
        run_tool(
            "building the wheel",
            [
                sys.executable, "-m", "pip", "wheel", "--no-deps",
                "--no-build-isolation", "--wheel-dir", output, source,
            ],
        )  # fmt: skip

    if not target.exists():
        found = ", ".join(p.name for p in output.glob("*.whl")) or "nothing"
        raise InstallerError(f"pip built {found}, not {project.wheel_name}")
    log.info("built %s", target)
    return target
