"""The macOS packages at their boundary: Info.plist, the pkg script, commands.

PyInstaller's .app, pkgbuild, productbuild and hdiutil run only on macOS, so
these tests check what the build hands to them: the exact Info.plist, the
postinstall script and the exact command lines, in order.
"""

from __future__ import annotations

import plistlib
import subprocess
from pathlib import Path

from installers import macos
from installers.build import plan
from installers.project import REPO, Project


def test_info_plist(project: Project, tmp_path: Path) -> None:
    v = project.version
    expected = {
        "CFBundleName": "Dockyard",
        "CFBundleDisplayName": "Dockyard",
        "CFBundleIdentifier": "org.dockyard.Dockyard",
        "CFBundleExecutable": "dockyard-desktop",
        "CFBundleIconFile": "dockyard.icns",
        "CFBundlePackageType": "APPL",
        "CFBundleInfoDictionaryVersion": "6.0",
        "CFBundleShortVersionString": v,
        "CFBundleVersion": v,
        "LSMinimumSystemVersion": "11.0",
        "LSUIElement": True,
        "NSHighResolutionCapable": True,
    }
    assert macos.info_plist(v) == expected
    path = macos.write_info_plist(v, tmp_path / "Info.plist")
    with open(path, "rb") as f:
        assert plistlib.load(f) == expected
    assert path.read_text().startswith('<?xml version="1.0" encoding="UTF-8"?>')


def test_postinstall_links_the_cli(tmp_path: Path) -> None:
    folder = macos.write_scripts(tmp_path / "scripts")
    script = folder / "postinstall"
    assert script.stat().st_mode & 0o777 == 0o755
    assert script.read_text() == (
        "#!/bin/sh\n"
        "# Put the CLI on every user's PATH; the .app itself needs nothing else.\n"
        "set -e\n"
        "mkdir -p /usr/local/bin\n"
        'ln -sf "$2/Dockyard.app/Contents/MacOS/dockyard" /usr/local/bin/dockyard\n'
        "exit 0\n"
    )


def test_postinstall_runs_under_sh(tmp_path: Path) -> None:
    """Run by sh with a stand-in for /usr/local/bin: the link lands as written."""
    script = macos.write_scripts(tmp_path / "scripts") / "postinstall"
    bin_dir = tmp_path / "usr-local-bin"
    text = script.read_text().replace("/usr/local/bin", str(bin_dir))
    proc = subprocess.run(
        ["sh", "-c", text, "postinstall", "pkg", "/Applications"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    target = "/Applications/Dockyard.app/Contents/MacOS/dockyard"
    assert (bin_dir / "dockyard").readlink() == Path(target)


def test_commands(tmp_path: Path) -> None:
    app = tmp_path / "dist" / "Dockyard.app"
    out = tmp_path / "out"
    assert macos.commands("1.2.3", app, out) == [
        [
            "pkgbuild", "--component", str(app),
            "--install-location", "/Applications",
            "--identifier", "org.dockyard.Dockyard", "--version", "1.2.3",
            "--scripts", str(out / "macos" / "scripts"),
            str(out / "macos" / "Dockyard-component.pkg"),
        ],
        [
            "productbuild", "--package", str(out / "macos" / "Dockyard-component.pkg"),
            "--identifier", "org.dockyard.Dockyard.installer", "--version", "1.2.3",
            str(out / "Dockyard-1.2.3.pkg"),
        ],
        [
            "hdiutil", "create", "-volname", "Dockyard 1.2.3",
            "-srcfolder", str(out / "macos" / "dmg"), "-ov", "-format", "UDZO",
            str(out / "Dockyard-1.2.3.dmg"),
        ],
    ]  # fmt: skip


def test_stage_lays_out_the_dmg(tmp_path: Path) -> None:
    """A stand-in .app folder: the .dmg offers it beside a link to /Applications."""
    app = tmp_path / "dist" / "Dockyard.app"
    (app / "Contents" / "MacOS").mkdir(parents=True)
    (app / "Contents" / "MacOS" / "dockyard-desktop").write_text("")
    out = tmp_path / "out"
    macos.stage(app, out)
    dmg = out / "macos" / "dmg"
    assert sorted(p.name for p in dmg.iterdir()) == ["Applications", "Dockyard.app"]
    assert (dmg / "Applications").readlink() == Path("/Applications")
    assert (dmg / "Dockyard.app/Contents/MacOS/dockyard-desktop").exists()
    assert (out / "macos" / "scripts" / "postinstall").exists()


def test_plan(project: Project, tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    steps = plan(project, "macos", out, work)

    assert [s.name for s in steps] == ["bundle", "pkg", "product", "dmg"]
    assert steps[0].argv[-2:] == ["--icon", str(work / "icons" / "dockyard.icns")]
    assert steps[0].argv[-6] == str(REPO / "installers" / "dockyard.spec")
    app = work / "dist" / "Dockyard.app"
    assert [s.argv for s in steps[1:]] == macos.commands(project.version, app, out)
    assert (
        steps[3]
        .command_line()
        .startswith(f"hdiutil create -volname 'Dockyard {project.version}' -srcfolder ")
    )
    with open(out / "macos" / "Info.plist", "rb") as f:
        assert plistlib.load(f) == macos.info_plist(project.version)
    assert (work / "icons" / "dockyard.icns").read_bytes()[:4] == b"icns"
