"""The Windows installer at its boundary: the generated .iss and ISCC's command.

Inno Setup's compiler, PyInstaller's Windows bootloader and Windows itself
cannot run here, so these tests check what the build hands to them: the
filled-in script, line by line where it matters, and the exact command
lines. The installer is only built on Windows.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from installers import windows
from installers.build import plan
from installers.errors import InstallerError
from installers.project import REPO, Project


@pytest.fixture
def iss_text(project: Project, tmp_path: Path) -> str:
    return windows.render_iss(
        project,
        bundle_dir=Path("C:/build/dist/dockyard"),
        output_dir=Path("C:/build/out"),
        icon=Path("C:/build/icons/dockyard.ico"),
    )


def test_iss_fills_every_field(iss_text: str) -> None:
    assert "${" not in iss_text
    assert "$" not in iss_text


def test_iss_setup_section(project: Project, iss_text: str) -> None:
    lines = iss_text.splitlines()
    v = project.version
    for expected in [
        "AppId={{6F3B2C1E-8A4D-4E7B-9C55-2D0A9E6B7F13}",
        "AppName=Dockyard",
        f"AppVersion={v}",
        f"AppVerName=Dockyard {v}",
        f"VersionInfoVersion={v}",
        "DefaultDirName={autopf}\\Dockyard",
        "OutputDir=C:/build/out",
        f"OutputBaseFilename=Dockyard-{v}-setup",
        "SetupIconFile=C:/build/icons/dockyard.ico",
        "UninstallDisplayIcon={app}\\dockyard-desktop.exe",
        "ArchitecturesInstallIn64BitMode=x64compatible",
        "ChangesEnvironment=yes",
    ]:
        assert expected in lines


def test_iss_installs_the_bundle_and_its_shortcuts(iss_text: str) -> None:
    lines = iss_text.splitlines()
    assert (
        'Source: "C:/build/dist/dockyard\\*"; DestDir: "{app}"; '
        "Flags: ignoreversion recursesubdirs createallsubdirs"
    ) in lines
    assert (
        'Name: "{autoprograms}\\Dockyard"; Filename: "{app}\\dockyard-desktop.exe"'
    ) in lines
    assert 'Name: "path"; Description: "Add the dockyard command to PATH"' in lines


def test_iss_path_entry_is_added_and_taken_back(iss_text: str) -> None:
    registry = [line for line in iss_text.splitlines() if line.startswith("Root: HKLM")]
    assert registry == [
        'Root: HKLM; Subkey: "SYSTEM\\CurrentControlSet\\Control\\Session Manager'
        '\\Environment"; ValueType: expandsz; ValueName: "Path"; '
        "ValueData: \"{olddata};{app}\"; Tasks: path; Check: PathLacks(ExpandConstant('{app}'))"
    ]
    assert (
        "procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);"
        in iss_text
    )
    assert re.search(
        r"RegWriteExpandStringValue\(HKLM, EnvKey, 'Path', Current\)", iss_text
    )


def test_unknown_template_field_is_an_error(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = tmp_path / "dockyard.iss"
    template.write_text("AppName=${app_name}\nAppMutex=${mutex}\n")
    monkeypatch.setattr(windows, "TEMPLATE", template)
    with pytest.raises(InstallerError, match="not filled"):
        windows.render_iss(project, tmp_path, tmp_path, tmp_path / "x.ico")


def test_iscc_command(tmp_path: Path) -> None:
    iss = tmp_path / "dockyard.iss"
    assert windows.iscc_command(iss, iscc="ISCC.exe") == ["ISCC.exe", "/Qp", str(iss)]
    # No Inno Setup here: the command names where its installer puts ISCC.
    assert windows.iscc_command(iss) == [
        "C:\\Program Files (x86)\\Inno Setup 6\\ISCC.exe",
        "/Qp",
        str(iss),
    ]


def test_plan_writes_the_script_and_prints_the_commands(
    project: Project, tmp_path: Path
) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    steps = plan(project, "windows", out, work)

    assert [s.name for s in steps] == ["bundle", "installer"]
    wheel = work / "wheel" / project.wheel_name
    assert steps[0].argv == [
        "python", "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
        "--distpath", str(work / "dist"), "--workpath", str(work / "pyinstaller"),
        str(REPO / "installers" / "dockyard.spec"), "--",
        "--wheel", str(wheel), "--icon", str(work / "icons" / "dockyard.ico"),
    ]  # fmt: skip
    iss = out / "windows" / "dockyard.iss"
    assert steps[1].command_line() == (
        f'"C:\\Program Files (x86)\\Inno Setup 6\\ISCC.exe" /Qp {iss}'
    )
    assert iss.read_text() == windows.render_iss(
        project, work / "dist" / "dockyard", out, work / "icons" / "dockyard.ico"
    )
    assert (work / "icons" / "dockyard.ico").read_bytes()[:4] == b"\0\0\1\0"


def test_build_for_windows_here_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "installers", "build", "--platform", "windows",
         "--output", str(tmp_path / "out"), "--work", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "PyInstaller builds only for the system it runs on" in proc.stderr
    assert "--plan" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
