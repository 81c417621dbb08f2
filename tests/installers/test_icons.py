"""The .ico and .icns drawn from the app's SVG: real files, parsed back."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from installers import icons
from installers.errors import InstallerError
from installers.project import Project


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def test_ico_holds_a_png_per_size(project: Project, tmp_path: Path) -> None:
    data = icons.write_ico(project.app_icon, tmp_path / "dockyard.ico").read_bytes()
    reserved, kind, count = struct.unpack("<HHH", data[:6])
    assert (reserved, kind, count) == (0, 1, len(icons.ICO_SIZES))
    for i, size in enumerate(icons.ICO_SIZES):
        entry = data[6 + 16 * i : 22 + 16 * i]
        width, height, _, _, planes, bits, length, offset = struct.unpack(
            "<BBBBHHII", entry
        )
        assert (width or 256, height or 256, planes, bits) == (size, size, 1, 32)
        assert png_size(data[offset : offset + length]) == (size, size)


def test_icns_holds_every_type(project: Project, tmp_path: Path) -> None:
    data = icons.write_icns(project.app_icon, tmp_path / "dockyard.icns").read_bytes()
    assert data[:4] == b"icns"
    assert struct.unpack(">I", data[4:8])[0] == len(data)
    found = {}
    at = 8
    while at < len(data):
        kind = data[at : at + 4]
        (length,) = struct.unpack(">I", data[at + 4 : at + 8])
        found[kind] = png_size(data[at + 8 : at + length])
        at += length
    assert found == {kind: (size, size) for kind, size in icons.ICNS_TYPES}


def test_the_icon_is_drawn(project: Project) -> None:
    """The middle of the rendered icon is not transparent: the SVG was drawn."""
    from PySide6.QtGui import QImage

    image = QImage.fromData(icons.render_png(project.app_icon, 64))
    assert image.width() == 64
    assert image.pixelColor(32, 32).alpha() == 255
    assert image.pixelColor(0, 0).alpha() == 0


def test_unreadable_svg_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.svg"
    bad.write_text("not an svg")
    with pytest.raises(InstallerError, match="cannot read the icon"):
        icons.render_png(bad, 32)
