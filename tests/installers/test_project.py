"""The project's name, version and the names the packages use."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from installers.errors import InstallerError
from installers.project import REPO, Project, debian_arch
from installers.wheel import build_wheel


def test_version_comes_from_pyproject(project: Project) -> None:
    assert project.root == REPO
    assert project.name == "dockyard"
    assert project.wheel_name == f"dockyard-{project.version}-py3-none-any.whl"
    assert f'version = "{project.version}"' in (REPO / "pyproject.toml").read_text()


def test_missing_pyproject_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InstallerError, match="cannot read the project's name"):
        Project.load(tmp_path)


def test_debian_arch() -> None:
    assert debian_arch("x86_64") == "amd64"
    assert debian_arch("aarch64") == "arm64"
    with pytest.raises(
        InstallerError, match="no Debian architecture known for 'sparc'"
    ):
        debian_arch("sparc")


@pytest.mark.installers
def test_wheel_holds_the_engine(project: Project, tmp_path: Path) -> None:
    wheel = build_wheel(project, tmp_path)
    assert wheel == tmp_path / project.wheel_name
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        entry_points = whl.read(
            f"dockyard-{project.version}.dist-info/entry_points.txt"
        )
    assert {
        "engine/main.py",
        "engine/__init__.py",
        "desktop/gui/icons/app.svg",
    } <= names
    assert b"dockyard-engine = engine.main:main" in entry_points


@pytest.mark.installers
def test_wheel_of_another_name_is_an_error(project: Project, tmp_path: Path) -> None:
    """A project whose pyproject says one version and pip builds another."""
    wrong = Project(root=project.root, name=project.name, version="9.9.9")
    with pytest.raises(InstallerError, match=f"pip built {project.wheel_name}, not"):
        build_wheel(wrong, tmp_path)
