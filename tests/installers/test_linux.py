"""The Linux build for real: PyInstaller bundle, .deb and tarball, then run.

The .deb is built once per session (``linux_build``), unpacked with
``dpkg -x`` into a temporary root, and its programs are started from there
with a bare environment, from a folder outside the checkout. The wheel it
carries for the guest is installed into a fresh virtual environment (pip
fetches the engine's dependencies from the package index).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from installers.linux import POSTINST
from installers.project import REPO
from tests.installers.conftest import LinuxBuild

pytestmark = pytest.mark.installers

CLI_SOURCE = REPO / "desktop" / "cli.py"


def bare_env(home: Path) -> dict[str, str]:
    """No PYTHONPATH, no virtual environment: what a user's login has."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def run_program(
    program: Path, *args: str, home: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(program), *args],
        cwd=home,
        env={**bare_env(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def need_cli() -> None:
    if not CLI_SOURCE.exists():
        pytest.skip("desktop/cli.py does not exist yet: the bundle has no CLI to run")


def test_deb_control_fields(linux_build: LinuxBuild) -> None:
    def field(name: str) -> str:
        return subprocess.run(
            ["dpkg-deb", "-f", str(linux_build.deb), name],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    assert field("Package") == "dockyard"
    assert field("Version") == linux_build.project.version
    assert field("Architecture") == "amd64"
    assert field("Depends").startswith("libc6 (>= ")
    assert "libxcb-cursor0" in field("Depends")
    assert "qemu-system-x86" in field("Recommends")


def test_deb_postinst_is_ours(linux_build: LinuxBuild, tmp_path: Path) -> None:
    subprocess.run(
        ["dpkg-deb", "-e", str(linux_build.deb), str(tmp_path / "DEBIAN")], check=True
    )
    postinst = tmp_path / "DEBIAN" / "postinst"
    assert postinst.read_text() == POSTINST.read_text()
    assert postinst.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in (tmp_path / "DEBIAN").iterdir()) == [
        "control",
        "postinst",
    ]


def test_deb_layout(installed_root: Path, linux_build: LinuxBuild) -> None:
    opt = installed_root / "opt" / "dockyard"
    for program in ("dockyard", "dockyard-desktop"):
        assert os.access(opt / program, os.X_OK)
        link = installed_root / "usr" / "bin" / program
        assert os.readlink(link) == f"../../opt/dockyard/{program}"
        assert link.resolve() == (opt / program).resolve()

    wheel = opt / "_internal" / "engine" / linux_build.project.wheel_name
    assert wheel.is_file()

    entry = installed_root / "usr/share/applications/dockyard-desktop.desktop"
    lines = entry.read_text().splitlines()
    assert "Exec=dockyard-desktop" in lines
    assert "Icon=dockyard" in lines
    icon = installed_root / "usr/share/icons/hicolor/scalable/apps/dockyard.svg"
    assert icon.read_bytes() == linux_build.project.app_icon.read_bytes()


def test_cli_help_from_the_package(installed_root: Path, tmp_path: Path) -> None:
    need_cli()
    proc = run_program(installed_root / "usr/bin/dockyard", "--help", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: dockyard")


def test_cli_error_from_the_package(installed_root: Path, tmp_path: Path) -> None:
    need_cli()
    proc = run_program(
        installed_root / "usr/bin/dockyard", "no-such-command", home=tmp_path
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr


def test_cli_reaches_the_machine_layer(installed_root: Path, tmp_path: Path) -> None:
    """``machine ls`` over an empty home: the frozen CLI loads the machine layer."""
    need_cli()
    proc = run_program(
        installed_root / "usr/bin/dockyard",
        "machine",
        "ls",
        home=tmp_path,
        DOCKYARD_HOME=str(tmp_path / "dockyard"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:2] == ["NAME", "STATE"]


def test_programs_run_modules_like_python(
    installed_root: Path, linux_build: LinuxBuild, tmp_path: Path
) -> None:
    """``sys.executable -m MODULE``, as the machine layer starts its forwarder."""
    bin_dir = installed_root / "usr/bin"
    proc = run_program(
        bin_dir / "dockyard", "-m", "engine.main", "--version", home=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"dockyard-engine {linux_build.project.version}"

    proc = run_program(
        bin_dir / "dockyard-desktop", "-m", "desktop.machine.forwarder", home=tmp_path
    )
    assert proc.returncode == 2
    assert "usage: python -m desktop.machine.forwarder" in proc.stderr

    # A package runs its __main__, as `python -m vmimage` does.
    proc = run_program(bin_dir / "dockyard", "-m", "vmimage", "--help", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m vmimage")

    proc = run_program(bin_dir / "dockyard", "-m", "os", home=tmp_path)
    assert proc.returncode == 2
    assert "-m runs only Dockyard's modules, not os" in proc.stderr


def test_gui_help_from_the_package(installed_root: Path, tmp_path: Path) -> None:
    proc = run_program(
        installed_root / "usr/bin/dockyard-desktop", "--help", home=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: dockyard-desktop")


def test_gui_paints_its_dashboard(installed_root: Path, tmp_path: Path) -> None:
    """The frozen app finds Qt and its plugins: it draws on the offscreen platform.

    Qt's offscreen platform stands in for a display; the engine socket it is
    given does not exist, so the dashboard shows a stopped engine.
    """
    painted = tmp_path / "painted"
    proc = run_program(
        installed_root / "usr/bin/dockyard-desktop",
        "--docker-host",
        f"unix://{tmp_path}/none.sock",
        home=tmp_path,
        QT_QPA_PLATFORM="offscreen",
        DOCKYARD_FIRST_PAINT_FILE=str(painted),
    )
    assert proc.returncode == 0, proc.stderr
    assert painted.read_text().strip()


def test_gui_paints_on_an_x_server(installed_root: Path, tmp_path: Path) -> None:
    """Under Xvfb through Qt's xcb plugin: the bundle's Qt with the system's X libraries."""
    if shutil.which("xvfb-run") is None:
        pytest.skip("needs xvfb-run (Debian's xvfb)")
    painted = tmp_path / "painted"
    program = installed_root / "usr/bin/dockyard-desktop"
    # xvfb-run sets DISPLAY and XAUTHORITY for its child only: pass them on
    # through the bare environment.
    script = (
        f"env -i PATH=/usr/bin:/bin HOME={tmp_path} LANG=C.UTF-8 "
        'DISPLAY="$DISPLAY" XAUTHORITY="$XAUTHORITY" QT_QPA_PLATFORM=xcb '
        f"DOCKYARD_FIRST_PAINT_FILE={painted} "
        f"{program} --docker-host unix://{tmp_path}/none.sock"
    )
    proc = subprocess.run(
        ["xvfb-run", "-a", "sh", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert painted.read_text().strip()


@pytest.mark.root
def test_programs_start_with_the_checkout_hidden(
    installed_root: Path, tmp_path: Path
) -> None:
    """With an empty tmpfs over the checkout (and so over .venv), both start."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to hide the checkout")
    programs = ["dockyard-desktop"] + (["dockyard"] if CLI_SOURCE.exists() else [])
    script = f"mount -t tmpfs dyhide {REPO} && test ! -e {REPO}/pyproject.toml"
    for program in programs:
        script += f" && {installed_root}/usr/bin/{program} --help"
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        cwd=tmp_path,
        env=bare_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("usage: dockyard") == len(programs)


def test_engine_wheel_installs_in_a_fresh_venv(
    installed_root: Path, linux_build: LinuxBuild, tmp_path: Path
) -> None:
    wheel = (
        installed_root
        / "opt/dockyard/_internal/engine"
        / linux_build.project.wheel_name
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr

    proc = run_program(venv / "bin/dockyard-engine", "--version", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"dockyard-engine {linux_build.project.version}"


def test_tarball_holds_the_bundle(linux_build: LinuxBuild) -> None:
    top = linux_build.tarball.name.removesuffix(".tar.gz")
    with tarfile.open(linux_build.tarball) as tar:
        members = {m.name: m for m in tar.getmembers()}
    for program in ("dockyard", "dockyard-desktop"):
        member = members[f"{top}/{program}"]
        assert member.isfile() and member.mode & 0o111
        assert member.uid == 0
    wheel = f"{top}/_internal/engine/{linux_build.project.wheel_name}"
    assert wheel in members
