"""The entry point: no-tray fallback, starting the machine at launch, logging."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication, QMessageBox, QSystemTrayIcon

from desktop.gui import app as app_module
from desktop.gui import settings as settings_module
from desktop.gui.backend import MachineBackend, MachineConfig, State
from desktop.gui.workers import wait_for_tasks
from tests.desktop.gui.fakes import FakeManager


@pytest.fixture
def no_app_quit(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record QApplication.quit instead of ending the test's Qt app."""
    quits: list[bool] = []
    monkeypatch.setattr(QApplication, "quit", staticmethod(lambda: quits.append(True)))
    return quits


def test_without_a_tray_the_dashboard_opens(
    qtbot, gui_engine, tmp_path: Path, no_app_quit
) -> None:
    if QSystemTrayIcon.isSystemTrayAvailable():
        pytest.skip(
            "this platform has a tray; the fallback is for desktops without one"
        )
    args = app_module.parse_args(["--docker-host", gui_engine.host])
    desktop = app_module.DesktopApp(args, tmp_path)
    try:
        with qtbot.waitSignal(desktop.controller.statusChanged, timeout=10_000):
            desktop.launch(show_dashboard=False)
        assert desktop.dashboard.isVisible()
        assert desktop.controller.status.state is State.RUNNING
    finally:
        desktop.quit()
        wait_for_tasks()
    assert no_app_quit == [True]
    assert not desktop.dashboard.isVisible()


def test_machine_starts_with_the_app_when_asked(
    qtbot, tmp_path: Path, no_app_quit
) -> None:
    """The machine is fakes.FakeManager's: see fakes.py for why."""
    settings_module.save(settings_module.Settings(start_machine=True))
    manager = FakeManager()
    backend = MachineBackend(MachineConfig(), manager=manager)
    desktop = app_module.DesktopApp(
        app_module.parse_args([]), tmp_path, backend=backend
    )
    try:
        with qtbot.waitSignal(desktop.controller.started, timeout=10_000):
            desktop.launch(show_dashboard=False)
        assert manager.machines["default"].calls == ["start"]
    finally:
        desktop.quit()
        wait_for_tasks()


def test_machine_stays_off_when_not_asked(qtbot, tmp_path: Path, no_app_quit) -> None:
    settings_module.save(settings_module.Settings(start_machine=False))
    manager = FakeManager()
    backend = MachineBackend(MachineConfig(), manager=manager)
    desktop = app_module.DesktopApp(
        app_module.parse_args([]), tmp_path, backend=backend
    )
    try:
        with qtbot.waitSignal(desktop.controller.statusChanged, timeout=10_000):
            desktop.launch(show_dashboard=False)
        assert desktop.controller.status.state is State.STOPPED
        assert manager.machines == {}
    finally:
        desktop.quit()
        wait_for_tasks()


def test_logs_go_to_a_rotating_file(tmp_path: Path) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        directory = app_module.setup_logging("info", tmp_path / "logs")
        logging.getLogger("desktop.gui.test").info("machine started")
        files = [
            h
            for h in root.handlers
            if isinstance(h, logging.handlers.RotatingFileHandler)
        ]
        assert files and files[0].maxBytes == app_module.LOG_BYTES
        for handler in files:
            handler.flush()
        assert "machine started" in (directory / app_module.LOG_FILE).read_text()
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)


def test_default_log_folder_is_the_platforms() -> None:
    folder = app_module.log_dir()
    assert folder.name == "log" or "Dockyard" in str(folder)
    assert "Dockyard" in str(folder)


def test_new_machine_settings_are_applied_with_a_restart_prompt(
    qtbot, tmp_path: Path, no_app_quit
) -> None:
    """The machine is fakes.FakeManager's: see fakes.py for why."""
    settings_module.save(settings_module.Settings(start_machine=True))
    manager = FakeManager()
    backend = MachineBackend(MachineConfig(), manager=manager)
    desktop = app_module.DesktopApp(
        app_module.parse_args([]), tmp_path, backend=backend
    )
    asked: list[str] = []

    def answer_yes(
        title: str, text: str, buttons: object
    ) -> QMessageBox.StandardButton:
        asked.append(title)
        return QMessageBox.StandardButton.Yes

    desktop.tray.ask = answer_yes
    try:
        with qtbot.waitSignal(desktop.controller.started, timeout=10_000):
            desktop.launch(show_dashboard=False)

        changed = settings_module.Settings(cpus=1, memory_mib=1024)
        with qtbot.waitSignal(desktop.controller.started, timeout=10_000):
            desktop._settings_saved(changed, True)
        machine = manager.machines["default"]
        assert asked == ["Restart the machine?"]
        assert machine.calls == ["start", "update", "restart", "stop", "start"]
        assert (machine.spec.cpus, machine.spec.memory_mib) == (1, 1024)
    finally:
        desktop.quit()
        wait_for_tasks()


def test_closing_the_window_without_a_tray_asks_and_can_be_cancelled(
    qtbot, tmp_path: Path, no_app_quit
) -> None:
    """The machine is fakes.FakeManager's: see fakes.py for why."""
    if QSystemTrayIcon.isSystemTrayAvailable():
        pytest.skip(
            "this platform has a tray; the fallback is for desktops without one"
        )
    settings_module.save(settings_module.Settings(start_machine=True))
    backend = MachineBackend(MachineConfig(), manager=FakeManager())
    desktop = app_module.DesktopApp(
        app_module.parse_args([]), tmp_path, backend=backend
    )
    answers = [QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.No]
    desktop.tray.ask = lambda title, text, buttons: answers.pop(0)
    try:
        with qtbot.waitSignal(desktop.controller.started, timeout=10_000):
            desktop.launch(show_dashboard=False)
        desktop.dashboard.close()
        QApplication.instance().lastWindowClosed.emit()
        assert desktop.dashboard.isVisible()  # cancelled: back on screen
        assert no_app_quit == []

        desktop.dashboard.close()
        QApplication.instance().lastWindowClosed.emit()
        assert no_app_quit == [True]  # No: quit, machine left running
        assert desktop.controller.status.state is State.RUNNING
    finally:
        desktop.quit()
        wait_for_tasks()
