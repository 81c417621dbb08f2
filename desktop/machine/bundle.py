"""The engine as a wheel the guest can install without a network or pip.

Two sources, one shape (a pure wheel is a zip of the installed tree, so the
guest unpacks it next to Debian's python3-pyroute2 and python3-zstandard):

- run from a checkout or a pip install, the host packs the ``engine``
  package it runs from into ``dockyard_engine-0.1.0+g1a2b3c4d5e6f-py3-none-any.whl``,
  the version carrying a hash of the engine's files;
- run from the PyInstaller bundle, there are no ``.py`` files beside
  ``engine.__file__`` (the package lives in PyInstaller's archive), so the
  wheel the bundle ships (``_internal/engine/dockyard-<version>-py3-none-any.whl``,
  see docs/INSTALLERS.md) is used as it is, and its version is
  ``0.1.0+w<hash of the wheel file>``: every build of the bundle differs.

The host reinstalls the engine whenever that version differs from the one the
guest reports::

    if guest_version != engine_version():
        upload(build_wheel(cache_dir))
"""

from __future__ import annotations

import base64
import hashlib
import py_compile
import sys
import tempfile
import zipfile
from pathlib import Path

import engine
from desktop.machine.errors import MachineError

PACKAGE_DATA = (".py", ".json", ".sh", ".xml")
# Where the installers put the guest's wheel, under sys._MEIPASS.
SHIPPED_WHEEL_DIR = "engine"
SHIPPED_WHEEL_GLOB = "dockyard-*-py3-none-any.whl"


def shipped_wheel() -> Path | None:
    """The wheel inside a PyInstaller bundle; None when not frozen.

    Raises ``MachineError`` when the bundle carries none (a broken install).
    """
    if not getattr(sys, "frozen", False):
        return None
    folder = Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent)) / (
        SHIPPED_WHEEL_DIR
    )
    wheels = sorted(folder.glob(SHIPPED_WHEEL_GLOB))
    if not wheels:
        raise MachineError(
            f"this Dockyard bundle carries no engine wheel in {folder}: reinstall Dockyard"
        )
    return wheels[-1]


def engine_files() -> list[tuple[str, Path]]:
    """(archive name, path) of every file of the engine package."""
    root = Path(engine.__file__).parent
    files = []
    for path in sorted(root.rglob("*")):
        if (
            path.is_file()
            and path.suffix in PACKAGE_DATA
            and "__pycache__" not in path.parts
        ):
            files.append((f"engine/{path.relative_to(root).as_posix()}", path))
    return files


def engine_version() -> str:
    """The version the guest must report: changes with any edit or new bundle.

    ``<engine version>+g<hash of the sources>``, or ``+w<hash of the wheel>``
    in a bundle. Raises ``MachineError`` for a bundle without its wheel.
    """
    base = getattr(engine, "__version__", "0")
    wheel = shipped_wheel()
    if wheel is not None:
        digest = hashlib.sha256()
        with wheel.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return f"{base}+w{digest.hexdigest()[:12]}"
    digest = hashlib.sha256()
    for name, path in engine_files():
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return f"{base}+g{digest.hexdigest()[:12]}"


def _compiled(path: Path, name: str) -> tuple[str, bytes] | None:
    """Bytecode for the guest, so its first engine start skips compiling.

    Unchecked-hash pycs never look at the source's mtime (unzipping resets
    it); they cannot go stale because any edit changes the engine version
    and so reinstalls. The cache tag keeps a different guest Python away.
    """
    cache_tag = sys.implementation.cache_tag
    if cache_tag is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "out.pyc"
        try:
            py_compile.compile(
                str(path),
                cfile=str(target),
                dfile=name,
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
        except py_compile.PyCompileError:
            return None
        parent, _, leaf = name.rpartition("/")
        stem = leaf.removesuffix(".py")
        return f"{parent}/__pycache__/{stem}.{cache_tag}.pyc", target.read_bytes()


def build_wheel(out_dir: Path) -> Path:
    """The engine wheel to upload: the bundle's own, or one packed into ``out_dir``.

    A packed wheel is reused while the sources are unchanged. The bundle's
    wheel has no bytecode (pip does not add it); the guest's Python writes
    it beside the sources on the data disk at the engine's first start.
    Raises ``MachineError`` for a bundle without its wheel.
    """
    shipped = shipped_wheel()
    if shipped is not None:
        return shipped
    version = engine_version()
    dist = f"dockyard_engine-{version}"
    target = out_dir / f"{dist}-py3-none-any.whl"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as whl:

        def add(name: str, data: bytes) -> None:
            whl.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(
                b"="
            )
            records.append(f"{name},sha256={digest.decode()},{len(data)}")

        for name, path in engine_files():
            add(name, path.read_bytes())
            if name.endswith(".py"):
                pyc = _compiled(path, name)
                if pyc is not None:
                    add(*pyc)
        info = f"{dist}.dist-info"
        add(
            f"{info}/METADATA",
            f"Metadata-Version: 2.1\nName: dockyard-engine\nVersion: {version}\n".encode(),
        )
        add(
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: dockyard\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        add(
            f"{info}/entry_points.txt",
            b"[console_scripts]\ndockyard-engine = engine.main:main\n",
        )
        add(f"{info}/VERSION", version.encode() + b"\n")
        records.append(f"{info}/RECORD,,")
        whl.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    tmp.replace(target)
    for old in out_dir.glob("dockyard_engine-*.whl"):
        if old != target:
            old.unlink(missing_ok=True)
    return target
