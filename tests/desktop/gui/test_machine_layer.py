"""The tray over the real machine layer, for everything short of a boot.

Creating, updating, resetting and reading a machine's status are file and
disk work that run here in milliseconds; booting its VM (15 s or more under
TCG) is left to the machine layer's own tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from desktop.gui import settings as settings_module
from desktop.gui.backend import MachineBackend, MachineConfig, State
from desktop.gui.controller import MachineController
from desktop.gui.tray import Tray
from desktop.gui.workers import wait_for_tasks
from desktop.machine import MachineManager, MachineSpec


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[object]:
    manager = MachineManager(home=tmp_path / "dockyard")
    yield manager
    for status in manager.list():
        manager.remove(status.name, force=True)


@pytest.fixture
def controller(manager: object, tmp_path: Path) -> Iterator[MachineController]:
    config = MachineConfig(shares=[str(tmp_path)])
    controller = MachineController(MachineBackend(config, manager=manager))
    yield controller
    controller.shutdown()
    wait_for_tasks()


def test_a_machine_not_created_yet_shows_as_stopped(qtbot, controller) -> None:
    tray = Tray(controller)
    with qtbot.waitSignal(controller.statusChanged, timeout=10_000) as changed:
        controller.refresh()
    assert changed.args[0].state is State.STOPPED
    tray.menu.aboutToShow.emit()
    assert tray.actions["start"].isEnabled()
    assert not tray.actions["stop"].isEnabled()
    assert tray.current_icon == "tray-stopped"


def test_reset_from_the_tray_recreates_the_machine(
    qtbot, controller, manager, tmp_path
) -> None:
    manager.create(MachineSpec(cpus=1, shares=[str(tmp_path)]))
    settings_module.save(settings_module.Settings(cpus=1))
    tray = Tray(
        controller,
        ask=lambda title, text, buttons: QMessageBox.StandardButton.Yes,
    )
    with qtbot.waitSignal(controller.statusChanged, timeout=10_000):
        controller.refresh()
    tray.menu.aboutToShow.emit()
    with qtbot.waitSignal(controller.stopped, timeout=30_000):
        tray.actions["reset"].trigger()

    defaults = settings_module.Settings()
    assert settings_module.load() == defaults
    status = controller.status
    assert status.state is State.STOPPED
    assert status.cpus == defaults.cpus
    assert status.log_path is not None
    assert manager.get("default").spec.cpus == defaults.cpus
    assert tray.notifications[-1][0] == "Dockyard stopped"


def test_new_settings_reach_a_stopped_machine_without_a_restart(
    qtbot, controller, manager, tmp_path
) -> None:
    manager.create(MachineSpec(shares=[str(tmp_path)]))
    config = MachineConfig(cpus=1, memory_mib=1024, shares=[str(tmp_path)])
    with qtbot.waitSignal(controller.applied, timeout=10_000) as applied:
        controller.apply(config)
    assert applied.args == [False]  # stopped: the next start uses it
    spec = manager.get("default").spec
    assert (spec.cpus, spec.memory_mib) == (1, 1024)


def test_the_machine_layer_refuses_a_smaller_disk(
    qtbot, controller, manager, tmp_path
) -> None:
    manager.create(MachineSpec(disk_gib=20, shares=[str(tmp_path)]))
    with qtbot.waitSignal(controller.failed, timeout=10_000) as failed:
        controller.apply(MachineConfig(disk_gib=10, shares=[str(tmp_path)]))
    assert "Could not apply the settings" in failed.args[0]


@pytest.mark.vm
@pytest.mark.root
def test_start_and_stop_a_real_machine_from_the_tray(
    qtbot, controller, manager
) -> None:
    """Boots a real VM (about 25 s under TCG): the whole tray path once."""
    from desktop.machine.manager import default_image_dir

    if not (default_image_dir() / "manifest.json").exists():
        pytest.skip(f"no guest image in {default_image_dir()} (python -m vmimage)")
    from desktop.gui.dashboard import DashboardWindow

    tray = Tray(controller)
    window = DashboardWindow(controller)
    qtbot.addWidget(window)
    window.show()
    stages: list[str] = []
    controller.stage.connect(lambda stage: stages.append(stage.stage))
    try:
        with qtbot.waitSignal(controller.statusChanged, timeout=10_000):
            controller.refresh()
        tray.menu.aboutToShow.emit()
        with qtbot.waitSignals(
            [controller.started, window.volumesLoaded], timeout=300_000
        ):
            tray.actions["start"].trigger()
        assert stages[-1] == "ready"
        assert tray.current_icon == "tray-running"
        assert window.client is not None
        assert window.client.host == manager.get("default").docker_host

        tray.menu.aboutToShow.emit()
        with qtbot.waitSignal(controller.stopped, timeout=120_000):
            tray.actions["stop"].trigger()
        assert tray.current_icon == "tray-stopped"
    finally:
        window.close()
