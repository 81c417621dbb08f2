"""The tray icon: the machine's state at a glance and a menu to drive it.

The icon follows ``MachineController.statusChanged`` (stopped, starting,
running, error). The menu is rebuilt each time it opens, so it always shows
the current state and only the actions that make sense now::

    ● Machine "default": Running
    Start / Stop / Restart
    Dashboard
    Settings…
    Troubleshoot ▸  Open machine log · Open app logs · Restart · Reset…
    Quit Dockyard

Questions to the user (quit: stop the machine too? reset: sure?) go through
``ask``, which tests replace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices
from PySide6.QtWidgets import QMenu, QMessageBox, QSystemTrayIcon

from desktop.gui import settings as settings_module
from desktop.gui.backend import State, Status
from desktop.gui.controller import MachineController
from desktop.gui.style import STATE_ICONS, STATE_LABELS, app_icon, icon, state_icon

log = logging.getLogger(__name__)

# ask(title, text, buttons) -> the button pressed
Ask = Callable[[str, str, QMessageBox.StandardButton], QMessageBox.StandardButton]

YES = QMessageBox.StandardButton.Yes
NO = QMessageBox.StandardButton.No
CANCEL = QMessageBox.StandardButton.Cancel


def ask_with_dialog(
    title: str, text: str, buttons: QMessageBox.StandardButton
) -> QMessageBox.StandardButton:
    box = QMessageBox(QMessageBox.Icon.Question, title, text, buttons)
    box.setWindowIcon(app_icon())
    return QMessageBox.StandardButton(box.exec())


class Tray(QObject):
    """The tray icon and its menu, over one ``MachineController``."""

    dashboardRequested = Signal()
    settingsRequested = Signal()
    quitRequested = Signal()

    def __init__(
        self,
        controller: MachineController,
        app_log_dir: Path | None = None,
        settings_path: Path | None = None,
        ask: Ask = ask_with_dialog,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.controller = controller
        self.app_log_dir = app_log_dir
        self.settings_path = settings_path
        self.ask = ask
        self.actions: dict[str, QAction] = {}
        self.notifications: list[tuple[str, str]] = []
        self._quitting = False
        self.current_icon = STATE_ICONS[State.STOPPED]

        # tray
        self.icon = QSystemTrayIcon(state_icon(State.STOPPED), self)
        self.icon.activated.connect(self._activated)

        # menu
        self.menu = QMenu()
        self.menu.setObjectName("trayMenu")
        self.menu.aboutToShow.connect(self.rebuild_menu)
        self.icon.setContextMenu(self.menu)
        self.rebuild_menu()

        # status
        controller.statusChanged.connect(self._show_status)
        # Bound methods, not lambdas: Qt drops them when the tray goes.
        controller.stage.connect(self._update_tooltip)
        controller.started.connect(self._started)
        controller.stopped.connect(self._stopped)
        controller.failed.connect(self._failed)
        self._show_status(controller.status)

    # icon and notifications

    def show(self) -> None:
        self.icon.show()

    def _show_status(self, status: Status) -> None:
        self.current_icon = STATE_ICONS[status.state]
        self.icon.setIcon(state_icon(status.state))
        self._update_tooltip()
        if self._quitting and status.state in (
            State.STOPPED,
            State.ERROR,
            State.CRASHED,
        ):
            self.quitRequested.emit()

    def _started(self) -> None:
        self.notify("Dockyard is running", "The machine started; docker is ready.")

    def _stopped(self) -> None:
        self.notify("Dockyard stopped", "The machine is shut down.")

    def _update_tooltip(self, stage: object = None) -> None:
        self.icon.setToolTip(f"Dockyard: {self.status_text()}")

    def status_text(self) -> str:
        status = self.controller.status
        what = self.controller.backend.description or "Machine"
        text = f"{what}: {STATE_LABELS[status.state]}"
        stage = self.controller.last_stage
        if status.state is State.STARTING and stage is not None and stage.message:
            text += f" ({stage.message})"
        return text

    def notify(self, title: str, message: str, error: bool = False) -> None:
        self.notifications.append((title, message))
        log.info("notification: %s: %s", title, message)
        if self.icon.isVisible() and QSystemTrayIcon.supportsMessages():
            kind = QSystemTrayIcon.MessageIcon
            self.icon.showMessage(
                title, message, kind.Critical if error else kind.Information
            )

    def _failed(self, message: str) -> None:
        self.notify("Dockyard: something went wrong", message, error=True)
        if self._quitting:
            self.quitRequested.emit()

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self.dashboardRequested.emit()

    # menu

    def _add(
        self,
        menu: QMenu,
        key: str,
        text: str,
        slot: Callable[[], object],
        icon_name: str = "",
    ) -> QAction:
        action = QAction(text, menu)
        if icon_name:
            action.setIcon(icon(icon_name))
        # Not connect(slot): PySide6 6.12 mis-counts the references of the
        # `checked` bool when triggered(bool) drives a zero-argument
        # Signal.emit, and the interpreter aborts later; a lambda is safe.
        action.triggered.connect(lambda: slot())
        action.setObjectName(key)
        menu.addAction(action)
        self.actions[key] = action
        return action

    def rebuild_menu(self) -> None:
        """Fill the menu for the current state (runs each time it opens)."""
        menu = self.menu
        menu.clear()
        self.actions = {}
        state = self.controller.status.state
        can = self.controller.backend.controllable
        busy = self.controller.busy

        # Enabled, so its state icon keeps its colour; it opens the dashboard.
        status = QAction(state_icon(state), self.status_text(), menu)
        status.triggered.connect(lambda: self.dashboardRequested.emit())
        status.setObjectName("status")
        menu.addAction(status)
        self.actions["status"] = status
        menu.addSeparator()

        # A bare engine is not ours to start or stop: no machine actions.
        if can:
            start = self._add(menu, "start", "Start", self.controller.start, "start")
            stop = self._add(menu, "stop", "Stop", self.controller.stop, "stop")
            restart = self._add(
                menu, "restart", "Restart", self.controller.restart, "restart"
            )
            start.setEnabled(not busy and state is not State.RUNNING)
            stop.setEnabled(not busy and state is State.RUNNING)
            restart.setEnabled(not busy and state is State.RUNNING)
            menu.addSeparator()

        self._add(
            menu, "dashboard", "Dashboard", self.dashboardRequested.emit, "dashboard"
        )
        self._add(
            menu, "settings", "Settings…", self.settingsRequested.emit, "settings"
        )

        trouble = menu.addMenu(icon("troubleshoot"), "Troubleshoot")
        trouble.setObjectName("troubleshoot")
        log_name = "Open machine log" if can else "Open engine log"
        self._add(trouble, "machine_log", log_name, self.open_machine_log, "logs")
        self._add(trouble, "app_logs", "Open app logs", self.open_app_logs, "logs")
        if can:
            trouble.addSeparator()
            restart_again = self._add(
                trouble,
                "troubleshoot_restart",
                "Restart the machine",
                self.controller.restart,
                "restart",
            )
            reset = self._add(
                trouble,
                "reset",
                "Reset to factory defaults…",
                self.reset_to_defaults,
                "delete",
            )
            restart_again.setEnabled(not busy)
            reset.setEnabled(not busy)

        menu.addSeparator()
        self._add(menu, "quit", "Quit Dockyard", self.quit, "quit")
        menu.adjustSize()

    # actions

    def open_machine_log(self) -> None:
        path = self.controller.status.log_path
        if path is None:
            from desktop.gui.workers import submit

            submit(self.controller.backend.log_path, done=self._open_log)
        else:
            self._open_log(path)

    def _open_log(self, path: Path | None) -> None:
        if path is None:
            self.notify("No machine log", "The machine has not written a log yet.")
            return
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))

    def open_app_logs(self) -> None:
        if self.app_log_dir is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.app_log_dir)))

    def reset_to_defaults(self) -> None:
        answer = self.ask(
            "Reset Dockyard?",
            "This deletes the machine with its containers, images and volumes, "
            "and restores the default settings. It cannot be undone.",
            YES | CANCEL,
        )
        if answer != YES:
            log.info("reset cancelled")
            return
        defaults = settings_module.Settings()
        settings_module.save(defaults, self.settings_path)
        self.controller.reset(defaults.machine_config())

    def quit(self) -> bool:
        """Quit, after asking whether the machine should stop too.

        Returns False when the user cancelled.
        """
        running = self.controller.status.state in (State.RUNNING, State.STARTING)
        if not (running and self.controller.backend.controllable):
            self.quitRequested.emit()
            return True
        answer = self.ask(
            "Quit Dockyard",
            "Stop the machine too? Containers keep running if you leave it on.",
            YES | NO | CANCEL,
        )
        if answer == CANCEL:
            return False
        if answer == NO:
            self.quitRequested.emit()
            return True
        self._quitting = True
        self.controller.stop()
        return True
