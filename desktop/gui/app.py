"""``dockyard-desktop [--show-dashboard]``: the tray app's entry point.

Starts in the tray. Where the desktop has no tray (a plain X server, some
Wayland shells) the dashboard opens instead and closing it quits.

Wiring, in order: logging (a rotating file in the platform's log folder),
the settings, the backend they name (a machine, or ``--docker-host`` / the
"host" backend for an engine on this Linux host), one ``MachineController``,
then the tray and the dashboard over it. The machine's status is asked for
once at launch; everything after comes from actions and engine events.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from desktop.gui.backend import Backend

LAUNCHED = time.monotonic()

log = logging.getLogger("desktop.gui")

LOG_FILE = "desktop.log"
LOG_BYTES = 1_000_000
LOG_BACKUPS = 5
# Set by bench/desktop_first_paint.py: write the wall time of the first paint
# to this file, then quit.
FIRST_PAINT_ENV = "DOCKYARD_FIRST_PAINT_FILE"


def log_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_log_dir("Dockyard", appauthor=False))


def setup_logging(level: str = "info", directory: Path | None = None) -> Path:
    """Log to a rotating file (and warnings to stderr); returns the folder."""
    directory = directory or log_dir()
    directory.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        directory / LOG_FILE,
        maxBytes=LOG_BYTES,
        backupCount=LOG_BACKUPS,
        encoding="utf-8",
    )
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("dockyard-desktop: %(message)s"))
    root = logging.getLogger()
    root.setLevel(level.upper())
    root.addHandler(handler)
    root.addHandler(console)
    # docker-py's urllib3 logs every request at debug.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    return directory


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="dockyard-desktop", description="Dockyard's tray app and dashboard."
    )
    parser.add_argument(
        "--show-dashboard", action="store_true", help="open the dashboard at launch"
    )
    parser.add_argument(
        "--docker-host",
        metavar="URL",
        help="use this engine socket, with no machine (an engine on this Linux host)",
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning")
    return parser.parse_args(argv)


class DesktopApp:
    """Everything the running app holds: controller, tray, windows."""

    def __init__(
        self,
        args: argparse.Namespace,
        app_log_dir: Path | None,
        backend: Backend | None = None,
    ) -> None:
        from PySide6.QtWidgets import QSystemTrayIcon

        from desktop.gui import settings as settings_module
        from desktop.gui.backend import EngineOnlyBackend, MachineBackend
        from desktop.gui.controller import MachineController
        from desktop.gui.dashboard import DashboardWindow
        from desktop.gui.tray import Tray

        self.settings = settings_module.load()
        if backend is None and (args.docker_host or self.settings.backend == "host"):
            host = args.docker_host or self.settings.docker_host or None
            backend = EngineOnlyBackend(host)
        elif backend is None:
            backend = MachineBackend(self.settings.machine_config())
        log.info("dockyard-desktop starting: %s", backend.description)

        self.controller = MachineController(backend)
        self.tray = Tray(self.controller, app_log_dir=app_log_dir)
        self.dashboard = DashboardWindow(self.controller)
        self.has_tray = QSystemTrayIcon.isSystemTrayAvailable()

        self.tray.dashboardRequested.connect(self.show_dashboard)
        self.tray.settingsRequested.connect(self.show_settings)
        self.tray.quitRequested.connect(self.quit)
        self.controller.applied.connect(self._settings_applied)
        self._quitting = False
        self._closing_quits = False
        self._autostart_pending = self.settings.start_machine and backend.controllable
        self.controller.statusChanged.connect(self._first_status)

    def launch(self, show_dashboard: bool) -> None:
        from PySide6.QtWidgets import QApplication

        app = QApplication.instance()
        assert isinstance(app, QApplication)
        if self.has_tray:
            self.tray.show()
            app.setQuitOnLastWindowClosed(False)
        else:
            log.info("no system tray here: showing the dashboard instead")
            show_dashboard = True
            app.setQuitOnLastWindowClosed(False)
            app.lastWindowClosed.connect(self._last_window_closed)
            self._closing_quits = True
        if show_dashboard:
            self.show_dashboard()
        self.controller.refresh()

    def _last_window_closed(self) -> None:
        # Without a tray the dashboard is the app: a cancelled Quit brings
        # it back rather than leaving a process with no window.
        if not self._quitting and not self.tray.quit():
            self.show_dashboard()

    def _first_status(self, status: object) -> None:
        from desktop.gui.backend import State, Status

        assert isinstance(status, Status)
        if not self._autostart_pending or self.controller.busy:
            return
        self._autostart_pending = False
        if status.state in (State.STOPPED, State.CRASHED):
            log.info("starting the machine (start_machine is on)")
            self.controller.start()

    def show_dashboard(self) -> None:
        self.dashboard.show()
        self.dashboard.raise_()
        self.dashboard.activateWindow()

    def show_settings(self) -> None:
        from desktop.gui.backend import State
        from desktop.gui.settings import SettingsDialog

        status = self.controller.status
        running = status.state is State.RUNNING
        dialog = SettingsDialog(
            self.settings,
            machine_running=running,
            current_disk_gib=status.disk_gib or None,
        )
        dialog.saved.connect(self._settings_saved)
        dialog.exec()

    def _settings_saved(self, settings: object, restart: bool) -> None:
        from PySide6.QtWidgets import QMessageBox

        from desktop.gui.settings import Settings

        assert isinstance(settings, Settings)
        old, self.settings = self.settings, settings
        if (old.backend == "host") != (settings.backend == "host"):
            QMessageBox.information(
                None,
                "Dockyard",
                "The new backend is used the next time Dockyard starts.",
            )
            return
        if self.controller.backend.controllable:
            self.controller.apply(settings.machine_config())

    def _settings_applied(self, needs_restart: bool) -> None:
        from desktop.gui.tray import NO, YES

        if not needs_restart:
            return
        answer = self.tray.ask(
            "Restart the machine?",
            "The new CPU, memory, disk or folder settings take effect when the "
            "machine restarts. Restart it now?",
            YES | NO,
        )
        if answer == YES:
            self.controller.restart()

    def quit(self) -> None:
        from PySide6.QtWidgets import QApplication

        if self._quitting:
            return
        self._quitting = True
        log.info("dockyard-desktop quitting")
        app = QApplication.instance()
        if self._closing_quits and isinstance(app, QApplication):
            app.lastWindowClosed.disconnect(self._last_window_closed)
            self._closing_quits = False
        self.controller.shutdown()
        self.dashboard.close()
        self.tray.icon.hide()
        QApplication.quit()


def _report_first_paint(app: DesktopApp, target: str) -> None:
    from PySide6.QtCore import QTimer

    def painted() -> None:
        Path(target).write_text(f"{time.time():.6f}\n")
        log.info(
            "first paint %.0f ms after main()", (time.monotonic() - LAUNCHED) * 1000
        )
        QTimer.singleShot(0, app.quit)

    app.dashboard.firstPaint.connect(painted)


def check_bindings() -> None:
    """Warn about a PySide6 release that crashes this app on Python 3.11."""
    import PySide6

    if PySide6.__version__ == "6.12.0" and sys.version_info < (3, 12):
        log.warning(
            "PySide6 6.12.0 miscounts references on Python %d.%d and aborts the app "
            "after a few hundred signals; install PySide6-Essentials 6.11",
            *sys.version_info[:2],
        )


def main(argv: list[str] | None = None) -> int:
    """Run the tray app until Quit; returns the exit status."""
    args = parse_args(argv)
    directory = setup_logging(args.log_level)
    check_bindings()

    from PySide6.QtWidgets import QApplication

    from desktop.gui.style import STYLESHEET, app_icon

    app = QApplication(sys.argv[:1])
    app.setApplicationName("Dockyard")
    app.setApplicationDisplayName("Dockyard")
    app.setOrganizationName("Dockyard")
    app.setDesktopFileName("dockyard-desktop")
    app.setStyle("Fusion")
    app.setStyleSheet(STYLESHEET)
    app.setWindowIcon(app_icon())

    desktop = DesktopApp(args, directory)
    target = os.environ.get(FIRST_PAINT_ENV)
    if target:
        _report_first_paint(desktop, target)
        args.show_dashboard = True
    desktop.launch(args.show_dashboard)
    code = app.exec()

    from desktop.gui.workers import wait_for_tasks

    desktop.controller.shutdown()
    wait_for_tasks()
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
