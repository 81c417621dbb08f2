"""The app icon in the formats Windows and macOS want, drawn from its SVG.

Windows takes a .ico and macOS a .icns; both formats may hold plain PNG
images, so the SVG is rendered once per size with Qt's SVG renderer (the
tray app already depends on it) and the PNGs are wrapped in each
container's small header::

    write_ico(svg, Path("dockyard.ico"))     # 16 .. 256 px
    write_icns(svg, Path("dockyard.icns"))   # 16 .. 1024 px
"""

from __future__ import annotations

import struct
from pathlib import Path

from installers.errors import InstallerError

ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
# .icns element types that hold a PNG, with the pixel size each must be.
ICNS_TYPES = (
    (b"icp4", 16),
    (b"icp5", 32),
    (b"ic11", 32),  # 16 pt at 2x
    (b"ic12", 64),  # 32 pt at 2x
    (b"ic07", 128),
    (b"ic08", 256),
    (b"ic13", 256),  # 128 pt at 2x
    (b"ic09", 512),
    (b"ic14", 512),  # 256 pt at 2x
    (b"ic10", 1024),  # 512 pt at 2x
)


def render_png(svg: Path, size: int) -> bytes:
    """``svg`` drawn into a transparent ``size`` x ``size`` PNG.

    Raises InstallerError when Qt cannot read the SVG.
    """
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise InstallerError(f"Qt cannot read the icon {svg}")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()

    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    # The stubs want bytes for the format; the binding only takes str.
    image.save(buffer, "PNG")  # type: ignore[call-overload]
    buffer.close()
    return bytes(data.data())


def ico_bytes(pngs: dict[int, bytes]) -> bytes:
    """A .ico holding one PNG per size (Windows Vista and later read these)."""
    header = struct.pack("<HHH", 0, 1, len(pngs))
    entries = b""
    images = b""
    offset = len(header) + 16 * len(pngs)
    for size, png in sorted(pngs.items()):
        # A width or height of 256 is written as 0: the field is one byte.
        side = 0 if size >= 256 else size
        entries += struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(png), offset)
        images += png
        offset += len(png)
    return header + entries + images


def icns_bytes(pngs: dict[int, bytes]) -> bytes:
    """A .icns with an element per type in ICNS_TYPES (all big-endian)."""
    body = b""
    for kind, size in ICNS_TYPES:
        png = pngs[size]
        body += kind + struct.pack(">I", 8 + len(png)) + png
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def write_ico(svg: Path, path: Path) -> Path:
    """Render ``svg`` into the .ico at ``path``; return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ico_bytes({size: render_png(svg, size) for size in ICO_SIZES}))
    return path


def write_icns(svg: Path, path: Path) -> Path:
    """Render ``svg`` into the .icns at ``path``; return it."""
    sizes = {size for _kind, size in ICNS_TYPES}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(icns_bytes({size: render_png(svg, size) for size in sizes}))
    return path
