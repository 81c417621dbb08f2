"""Fixtures for the installers' tests: one real Linux build per session.

``linux_build`` runs ``python -m installers build`` once (wheel, PyInstaller
bundle, .deb, tarball) into a temporary folder and yields where things
landed; ``installed_root`` unpacks the .deb into a temporary root with
``dpkg -x``, as a user's ``apt install`` would lay it out, minus the
scripts. Both are removed afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from installers.project import REPO, Project, debian_arch


@dataclass(frozen=True)
class LinuxBuild:
    project: Project
    output: Path
    work: Path
    deb: Path
    tarball: Path


@pytest.fixture(scope="session")
def project() -> Project:
    return Project.load()


@pytest.fixture(scope="session")
def linux_build(project: Project) -> Iterator[LinuxBuild]:
    """The real Linux build, once per session (about a minute)."""
    pytest.importorskip("PyInstaller", reason="needs the installers extra")
    if shutil.which("dpkg-deb") is None:
        pytest.skip("needs dpkg-deb")
    scratch = Path(tempfile.mkdtemp(prefix="dyinst-", dir="/var/tmp"))
    output, work = scratch / "out", scratch / "work"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "installers", "build",
             "--output", str(output), "--work", str(work)],
            cwd=REPO, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        arch = debian_arch()
        yield LinuxBuild(
            project=project,
            output=output,
            work=work,
            deb=output / f"{project.name}_{project.version}_{arch}.deb",
            tarball=output / f"{project.name}-{project.version}-linux-{arch}.tar.gz",
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="session")
def installed_root(linux_build: LinuxBuild) -> Iterator[Path]:
    """The .deb's files unpacked under a temporary root."""
    root = Path(tempfile.mkdtemp(prefix="dyroot-", dir="/var/tmp"))
    try:
        subprocess.run(["dpkg", "-x", str(linux_build.deb), str(root)], check=True)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
