"""Shared fixtures: one real engine per session, a busybox image built offline."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.network.cleanup import remove_host_state
from tests.support.engine import EngineProcess
from tests.support.images import BUSYBOX_REF, busybox_archive

BRIDGE_LOCKS = Path("/run/dockyard-test-bridges")
# Bridge numbers held by this process: number -> open lock file.
_bridge_locks: dict[int, int] = {}


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the engine creates namespaces, mounts and bridges")


def _unmount_under(root: Path) -> None:
    mounts = []
    with open("/proc/self/mounts") as f:
        for line in f:
            target = line.split()[1].replace("\\040", " ")
            if target.startswith(str(root) + "/"):
                mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


def _claim_bridge_number() -> int:
    """A bridge number no other test process (this session's or another's) holds.

    Engines of concurrent pytest runs must not share a bridge or nft table:
    one engine's stop would delete them from under the other.
    """
    BRIDGE_LOCKS.mkdir(parents=True, exist_ok=True)
    for number in range(10, 250):
        if number in _bridge_locks:
            continue
        fd = os.open(BRIDGE_LOCKS / str(number), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _bridge_locks[number] = fd
        return number
    raise RuntimeError("no free test bridge number in 10-249")


def _release_bridge_number(number: int) -> None:
    fd = _bridge_locks.pop(number, None)
    if fd is not None:
        os.close(fd)


def make_engine(root: Path, *extra: str) -> EngineProcess:
    number = _claim_bridge_number()
    args = ["--bridge-name", f"dyt{number}", "--bip", f"172.29.{number}.1/24", *extra]
    engine = EngineProcess(root=root, extra_args=args)
    engine.bridge_number = number
    return engine


def cleanup_engine(engine: EngineProcess) -> None:
    if engine.proc is not None and engine.ping():
        ids = engine.docker("ps", "-aq").stdout.split()
        if ids:
            engine.docker("rm", "-f", "-v", *ids)
    engine.stop()
    # Whatever conmon still watches (tests that killed the engine) ends here.
    subprocess.run(["pkill", "-f", f"conmon.*{engine.root}"], check=False)
    number = engine.bridge_number
    if number is not None:
        remove_host_state(engine.root / "data", engine.root / "run", f"dyt{number}")
    _unmount_under(engine.root)
    shutil.rmtree(engine.root, ignore_errors=True)
    if number is not None:
        _release_bridge_number(number)


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not Path("/bin/busybox").exists():
        pytest.skip("needs Debian's busybox-static (/bin/busybox)")
    return busybox_archive(tmp_path_factory.mktemp("images") / "busybox.tar")


@contextlib.contextmanager
def running_engine(
    busybox_tar: Path, prefix: str = "dyeng-"
) -> Iterator[EngineProcess]:
    """A started engine with the busybox image loaded; removed afterwards."""
    need_root()
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    eng = make_engine(root)
    try:
        eng.start()
        eng.docker("load", "-i", str(busybox_tar), check=True)
        yield eng
    finally:
        cleanup_engine(eng)


@pytest.fixture(scope="session")
def engine(busybox_tar: Path) -> Iterator[EngineProcess]:
    """One engine for the session, with the busybox image loaded."""
    with running_engine(busybox_tar) as eng:
        yield eng


@pytest.fixture
def fresh_engine(busybox_tar: Path) -> Iterator[EngineProcess]:
    """An engine of its own, for tests that stop, kill or restart it."""
    with running_engine(busybox_tar) as eng:
        yield eng


@pytest.fixture(scope="session")
def busybox() -> str:
    return BUSYBOX_REF
