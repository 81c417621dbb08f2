"""Fixtures for the tray app's tests: offscreen Qt, private folders, an engine.

Every test here is marked ``gui`` and runs on Qt's offscreen platform. The
settings, logs and autostart entries go to a per-test folder (the XDG
variables platformdirs reads), never to the real home.

``gui_engine`` is a real engine: the session's ``engine`` (Dockyard's own),
or, when ``DOCKYARD_GUI_TEST_HOST`` names a socket, that engine (to run these
tests against a reference dockerd, e.g. while an endpoint of ours is
missing). Tests that need an API the engine does not serve yet skip and say
which.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from tests.support.images import BUSYBOX_REF

HOST_ENV = "DOCKYARD_GUI_TEST_HOST"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.gui)


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Config, data and log folders of this test's own."""
    home = tmp_path / "home"
    for name in (
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_STATE_HOME",
        "XDG_CACHE_HOME",
    ):
        path = home / name.lower()
        path.mkdir(parents=True)
        monkeypatch.setenv(name, str(path))
    return home


@dataclass
class ExternalEngine:
    """An engine someone else runs, reached through DOCKYARD_GUI_TEST_HOST."""

    host: str
    config_dir: Path

    def docker(
        self, *args: str, check: bool = False, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = dict(
            os.environ, DOCKER_HOST=self.host, DOCKER_CONFIG=str(self.config_dir)
        )
        env.pop("DOCKER_CONTEXT", None)
        result = subprocess.run(
            ["docker", *args], env=env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed:\n{result.stderr}")
        return result


@pytest.fixture(scope="session")
def gui_engine(request: pytest.FixtureRequest, busybox_tar: Path) -> Iterator[object]:
    """A real engine with the busybox test image loaded: the session's
    ``engine``, or the one DOCKYARD_GUI_TEST_HOST names."""
    external = os.environ.get(HOST_ENV)
    if not external:
        yield request.getfixturevalue("engine")
        return
    engine = ExternalEngine(external, Path(tempfile.mkdtemp(prefix="dygui-cfg-")))
    if engine.docker("image", "inspect", BUSYBOX_REF).returncode != 0:
        engine.docker("load", "-i", str(busybox_tar))
    yield engine
    labelled = engine.docker("ps", "-aq", "--filter", "label=dockyard-gui-test")
    if labelled.stdout.split():
        engine.docker("rm", "-f", "-v", *labelled.stdout.split())
    shutil.rmtree(engine.config_dir, ignore_errors=True)


def require(engine: object, *args: str, what: str) -> None:
    """Skip unless ``docker ARGS`` works on this engine (the API exists)."""
    result = engine.docker(*args)  # type: ignore[attr-defined]
    if result.returncode != 0:
        reason = f"engine does not serve {what} yet: {result.stderr.strip()[:200]}"
        print(reason)
        pytest.skip(reason)


@pytest.fixture
def busybox_image(gui_engine: object) -> str:
    require(gui_engine, "image", "inspect", BUSYBOX_REF, what="image load/inspect")
    return BUSYBOX_REF
