"""The tray: icon states, the menu rebuilt on show, actions, notifications.

The machine is ``fakes.FakeManager``: booting real VMs belongs to the machine
layer's tests (see fakes.py). The engine-only tests use a real engine.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from desktop.gui import settings as settings_module
from desktop.gui.backend import EngineOnlyBackend, MachineBackend, MachineConfig, State
from desktop.gui.controller import MachineController
from desktop.gui.tray import Tray
from desktop.gui.workers import wait_for_tasks
from tests.desktop.gui.fakes import FakeManager

YES = QMessageBox.StandardButton.Yes
NO = QMessageBox.StandardButton.No
CANCEL = QMessageBox.StandardButton.Cancel


class Answers:
    """Plays the user: answers each question in turn, records them."""

    def __init__(self, *answers: QMessageBox.StandardButton) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    def __call__(
        self, title: str, text: str, buttons: object
    ) -> QMessageBox.StandardButton:
        self.asked.append(title)
        return self.answers.pop(0)


@pytest.fixture
def manager() -> FakeManager:
    return FakeManager()


@pytest.fixture
def controller(manager: FakeManager):
    controller = MachineController(MachineBackend(MachineConfig(), manager=manager))
    yield controller
    controller.shutdown()
    wait_for_tasks()


def make_tray(
    controller: MachineController, *answers: QMessageBox.StandardButton
) -> Tray:
    tray = Tray(
        controller, ask=Answers(*answers), settings_path=settings_module.config_path()
    )
    return tray


def open_menu(tray: Tray) -> dict[str, bool]:
    """What a user sees on opening the menu: action -> enabled."""
    tray.menu.aboutToShow.emit()
    return {key: action.isEnabled() for key, action in tray.actions.items()}


def test_start_from_the_menu_runs_off_the_gui_thread(
    qtbot, controller, manager
) -> None:
    tray = make_tray(controller)
    assert open_menu(tray)["start"] is True
    assert tray.current_icon == "tray-stopped"

    stages = []
    controller.stage.connect(stages.append)
    with qtbot.waitSignal(controller.started, timeout=10_000):
        tray.actions["start"].trigger()
        assert tray.current_icon == "tray-starting"

    machine = manager.machines["default"]
    assert machine.calls == ["start"]
    # Every call into the machine layer ran on a worker thread.
    assert machine.threads and manager.threads
    assert threading.main_thread().name not in machine.threads + manager.threads
    assert [s.stage for s in stages] == ["image", "boot", "ssh", "engine"]
    assert tray.current_icon == "tray-running"
    assert tray.notifications[-1][0] == "Dockyard is running"

    menu = open_menu(tray)
    assert menu["start"] is False
    assert menu["stop"] is True
    assert menu["restart"] is True
    assert "Running" in tray.actions["status"].text()


def test_stop_and_restart(qtbot, controller, manager) -> None:
    tray = make_tray(controller)
    with qtbot.waitSignal(controller.started, timeout=10_000):
        controller.start()

    with qtbot.waitSignal(controller.stopped, timeout=10_000):
        open_menu(tray)
        tray.actions["stop"].trigger()
    assert tray.current_icon == "tray-stopped"
    assert tray.notifications[-1][0] == "Dockyard stopped"
    assert open_menu(tray)["stop"] is False

    with qtbot.waitSignal(controller.started, timeout=10_000):
        controller.start()
    with qtbot.waitSignal(controller.started, timeout=10_000):
        open_menu(tray)
        tray.actions["restart"].trigger()
    assert manager.machines["default"].calls[-3:] == ["restart", "stop", "start"]


def test_failed_start_shows_the_error(qtbot, controller, manager) -> None:
    manager.create(MachineConfig())
    manager.machines["default"].fail_start = "SSH did not answer within 60 s"
    tray = make_tray(controller)

    with qtbot.waitSignal(controller.failed, timeout=10_000) as failed:
        tray.actions["start"].trigger()

    assert "SSH did not answer" in failed.args[0]
    assert tray.current_icon == "tray-error"
    assert tray.notifications[-1][0].startswith("Dockyard: something went wrong")
    assert open_menu(tray)["start"] is True  # one can try again


def test_menu_is_rebuilt_with_the_current_state(qtbot, controller) -> None:
    tray = make_tray(controller)
    first = tray.actions["start"]
    with qtbot.waitSignal(controller.started, timeout=10_000):
        controller.start()
    open_menu(tray)
    assert tray.actions["start"] is not first
    assert [a.objectName() for a in tray.menu.actions() if a.objectName()] == [
        "status",
        "start",
        "stop",
        "restart",
        "dashboard",
        "settings",
        "quit",
    ]
    trouble = [
        a.objectName()
        for a in tray.menu.findChild(type(tray.menu), "troubleshoot").actions()
    ]
    assert [n for n in trouble if n] == [
        "machine_log",
        "app_logs",
        "troubleshoot_restart",
        "reset",
    ]


def test_quit_asks_whether_to_stop_the_machine(qtbot, controller, manager) -> None:
    with qtbot.waitSignal(controller.started, timeout=10_000):
        controller.start()

    tray = make_tray(controller, CANCEL, NO, YES)
    quits = []
    tray.quitRequested.connect(lambda: quits.append(True))

    tray.actions["quit"].trigger()  # Cancel: stays
    assert quits == [] and controller.status.state is State.RUNNING

    tray.actions["quit"].trigger()  # No: quits, machine left running
    assert quits == [True] and manager.machines["default"].state == "running"

    with qtbot.waitSignal(tray.quitRequested, timeout=10_000):
        tray.actions["quit"].trigger()  # Yes: stops, then quits
    assert manager.machines["default"].state == "stopped"
    assert tray.ask.asked == ["Quit Dockyard"] * 3


def test_quit_does_not_ask_when_stopped(qtbot, controller) -> None:
    tray = make_tray(controller)
    with qtbot.waitSignal(tray.quitRequested, timeout=1000):
        tray.actions["quit"].trigger()
    assert tray.ask.asked == []


def test_reset_needs_confirmation(qtbot, controller, manager) -> None:
    manager.create(MachineConfig(cpus=1))
    settings_module.save(settings_module.Settings(cpus=1, memory_mib=1024))
    tray = make_tray(controller, CANCEL, YES)

    tray.actions["reset"].trigger()
    assert manager.removed == []

    with qtbot.waitSignal(controller.statusChanged, timeout=10_000):
        open_menu(tray)
        tray.actions["reset"].trigger()
    qtbot.waitUntil(lambda: not controller.busy, timeout=10_000)
    assert manager.removed == ["default"]
    assert manager.machines["default"].spec.cpus == settings_module.Settings().cpus
    assert settings_module.load() == settings_module.Settings()


def test_machine_log_opens_in_the_desktop(
    qtbot, controller, manager, monkeypatch, tmp_path: Path
) -> None:
    opened = []
    monkeypatch.setattr(
        "desktop.gui.tray.QDesktopServices.openUrl",
        lambda url: opened.append(url.toLocalFile()),
    )
    machine = manager.create(MachineConfig())
    machine.log_path = tmp_path / "machine.log"
    machine.log_path.write_text("boot ok\n")
    tray = make_tray(controller)
    tray.actions["machine_log"].trigger()
    qtbot.waitUntil(lambda: opened == [str(machine.log_path)], timeout=5000)


def test_engine_only_host_cannot_be_started_from_the_tray(qtbot, gui_engine) -> None:
    """A bare engine (Linux host) is watched, not driven: Start/Stop are off."""
    controller = MachineController(EngineOnlyBackend(gui_engine.host))
    try:
        tray = make_tray(controller)
        with qtbot.waitSignal(controller.statusChanged, timeout=10_000) as changed:
            controller.refresh()
        assert changed.args[0].state is State.RUNNING
        assert changed.args[0].cpus > 0
        menu = open_menu(tray)
        assert "start" not in menu and "stop" not in menu and "reset" not in menu
        assert menu["dashboard"] and menu["quit"]
        assert tray.current_icon == "tray-running"
        assert "Running" in tray.actions["status"].text()
    finally:
        controller.shutdown()
        wait_for_tasks()


def test_a_lost_engine_shows_in_the_tray_and_its_return_too(
    qtbot, fresh_engine
) -> None:
    """No polling: the dropped event stream is what makes the tray look again."""
    controller = MachineController(EngineOnlyBackend(fresh_engine.host))
    tray = make_tray(controller)
    try:
        with qtbot.waitSignal(controller.engineReady, timeout=10_000):
            controller.refresh()
        assert tray.current_icon == "tray-running"

        with qtbot.waitSignal(controller.engineLost, timeout=20_000):
            fresh_engine.stop()
        qtbot.waitUntil(
            lambda: controller.status.state is State.STOPPED, timeout=10_000
        )
        assert tray.current_icon == "tray-stopped"

        with qtbot.waitSignal(controller.engineReady, timeout=60_000):
            fresh_engine.start()
        qtbot.waitUntil(
            lambda: controller.status.state is State.RUNNING, timeout=10_000
        )
        assert tray.current_icon == "tray-running"
    finally:
        controller.shutdown()
        wait_for_tasks()
