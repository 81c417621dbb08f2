"""The dashboard: the machine card and the engine's containers, images, volumes.

The window shows what the engine says and changes only when it says
something new: ``MachineController.engineEvent`` (one ``/events`` message)
marks a table stale, and a short single-shot timer folds a burst of events
(``docker compose up`` sends dozens) into one reload on the thread pool.
Only CPU and memory need sampling (and the "Up 5 minutes" text with them);
that runs every few seconds while the containers page is on screen with
containers running, and never otherwise.

Every engine call goes through ``workers.submit``; the tables are filled in
the callbacks, on the GUI thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QFont, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.gui.backend import State, Status, uptime_text
from desktop.gui.controller import MachineController
from desktop.gui.engine_client import (
    ContainerRow,
    EngineClient,
    ImageRow,
    VolumeRow,
    human_size,
)
from desktop.gui.style import (
    MARGIN,
    SPACING,
    STATE_COLORS,
    STATE_LABELS,
    app_icon,
    icon,
)
from desktop.gui.tray import CANCEL, YES, Ask, ask_with_dialog
from desktop.gui.workers import LogFollower, submit

log = logging.getLogger(__name__)

# Events closer together than this become one reload.
DEBOUNCE_MS = 150
# CPU and memory sampling, only while someone looks at running containers.
STATS_INTERVAL_MS = 5000
UPTIME_TICK_MS = 30_000

CONTAINER_STATE_COLORS = {
    "running": "#2e9d4f",
    "restarting": "#b07800",
    "paused": "#b07800",
    "created": "#6b7580",
    "exited": "#6b7580",
    "dead": "#d93025",
}


def dot(color: str, size: int = 10) -> QIcon:
    pixmap = QPixmap(size * 2, size * 2)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(QColor(color))
    painter.setPen(Qt.PenStyle.NoPen)
    painter.drawEllipse(4, 4, size * 2 - 8, size * 2 - 8)
    painter.end()
    return QIcon(pixmap)


def tool_button(text: str, icon_name: str, slot: Callable[[], object]) -> QToolButton:
    button = QToolButton()
    button.setText(text)
    button.setIcon(icon(icon_name))
    button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    button.setAutoRaise(True)
    button.clicked.connect(slot)
    button.setObjectName(f"{icon_name}Button")
    return button


def make_table(headers: list[str], stretch: int = 0) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setAlternatingRowColors(True)
    table.setShowGrid(False)
    table.setWordWrap(False)
    table.verticalHeader().hide()
    table.verticalHeader().setDefaultSectionSize(30)
    header = table.horizontalHeader()
    header.setHighlightSections(False)
    header.setDefaultAlignment(
        Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
    )
    for column in range(len(headers)):
        header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
    return table


def cell(text: str, data: Any = None, align_right: bool = False) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    if data is not None:
        item.setData(Qt.ItemDataRole.UserRole, data)
    if align_right:
        item.setTextAlignment(
            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        )
    item.setToolTip(text)
    return item


class Metric(QWidget):
    """A number with its name under it, in the machine card."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.value = QLabel("—")
        self.value.setObjectName("metricValue")
        label = QLabel(name)
        label.setObjectName("metricName")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.value)
        layout.addWidget(label)

    def set(self, text: str) -> None:
        self.value.setText(text)


class MachineCard(QFrame):
    """State, size and uptime of the machine, with Start/Stop."""

    def __init__(self, controller: MachineController) -> None:
        super().__init__()
        self.setObjectName("card")
        self.controller = controller
        self._uptime_base: float | None = None

        # header: icon, title, state badge, buttons
        picture = QLabel()
        picture.setPixmap(app_icon().pixmap(40, 40))
        self.title = QLabel(controller.backend.description or "Machine")
        self.title.setObjectName("cardTitle")
        self.badge = QLabel()
        self.badge.setObjectName("stateBadge")
        self.detail = QLabel()
        self.detail.setObjectName("metricName")
        self.detail.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
        )
        titles = QVBoxLayout()
        titles.setSpacing(2)
        title_row = QHBoxLayout()
        title_row.setSpacing(SPACING)
        title_row.addWidget(self.title)
        title_row.addWidget(self.badge)
        title_row.addStretch()
        titles.addLayout(title_row)
        titles.addWidget(self.detail)

        self.start_stop = QPushButton()
        self.start_stop.setObjectName("startStop")
        self.start_stop.setMinimumWidth(96)
        self.start_stop.clicked.connect(self._start_or_stop)
        self.restart = QPushButton(icon("restart"), "Restart")
        self.restart.setObjectName("restartMachine")
        self.restart.clicked.connect(controller.restart)

        header = QHBoxLayout()
        header.setSpacing(SPACING)
        header.addWidget(picture)
        header.addLayout(titles, 1)
        header.addWidget(self.restart)
        header.addWidget(self.start_stop)

        # metrics
        self.cpus = Metric("CPUs")
        self.memory = Metric("Memory")
        self.disk = Metric("Disk used")
        self.uptime = Metric("Uptime")
        metrics = QHBoxLayout()
        metrics.setSpacing(SPACING * 3)
        for metric in (self.cpus, self.memory, self.disk, self.uptime):
            metrics.addWidget(metric)
        metrics.addStretch()

        # errors and progress
        self.banner = QLabel()
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.hide()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(MARGIN, MARGIN, MARGIN, MARGIN)
        layout.setSpacing(SPACING)
        layout.addLayout(header)
        layout.addLayout(metrics)
        layout.addWidget(self.banner)

        self._tick = QTimer(self)
        self._tick.setInterval(UPTIME_TICK_MS)
        self._tick.timeout.connect(self._show_uptime)

        controller.statusChanged.connect(self.show_status)
        controller.stage.connect(self._show_stage)
        self.show_status(controller.status)

    def show_status(self, status: Status) -> None:
        state = status.state
        self.title.setText(
            self.controller.backend.description or f"Machine {status.name}"
        )
        self.badge.setText(STATE_LABELS[state])
        self.badge.setStyleSheet(f"background: {STATE_COLORS[state]};")
        stage = self.controller.last_stage
        if state is State.STARTING and stage is not None:
            self.detail.setText(f"{stage.message} ({stage.elapsed:.0f} s)")
        else:
            self.detail.setText(status.docker_host or "")

        self.cpus.set(str(status.cpus) if status.cpus else "—")
        self.memory.set(
            f"{status.memory_mib / 1024:.1f} GiB" if status.memory_mib else "—"
        )
        disk = human_size(status.disk_used_bytes)
        if status.disk_gib and status.disk_used_bytes is not None:
            disk += f" of {status.disk_gib} GiB"
        self.disk.set(disk)
        if status.uptime_seconds is not None and state is State.RUNNING:
            self._uptime_base = time.monotonic() - status.uptime_seconds
            self._tick.start()
        else:
            self._uptime_base = None
            self._tick.stop()
        self._show_uptime()

        # A running machine can carry a warning too ("the forwarder is not
        # running"); a stopped one the reason it is not reachable.
        if status.error and not state.busy:
            self.banner.setText(status.error)
            self.banner.show()
        else:
            self.banner.hide()

        can = self.controller.backend.controllable
        busy = self.controller.busy
        running = state is State.RUNNING
        self.start_stop.setText(
            "Stop" if running or state is State.STOPPING else "Start"
        )
        self.start_stop.setIcon(icon("stop" if running else "start"))
        self.start_stop.setEnabled(can and not busy)
        self.restart.setEnabled(can and not busy and running)
        self.start_stop.setVisible(can)
        self.restart.setVisible(can)

    def _show_stage(self, stage: object) -> None:
        self.show_status(self.controller.status)

    def _show_uptime(self) -> None:
        if self._uptime_base is None:
            self.uptime.set("—")
        else:
            self.uptime.set(uptime_text(time.monotonic() - self._uptime_base))

    def _start_or_stop(self) -> None:
        if self.controller.status.state is State.RUNNING:
            self.controller.stop()
        else:
            self.controller.start()


class LogsWindow(QDialog):
    """A container's log, followed as it grows."""

    def __init__(
        self, client: EngineClient, row: ContainerRow, parent: QWidget | None = None
    ):
        super().__init__(parent)
        self.setWindowTitle(f"Logs: {row.name}")
        self.resize(820, 520)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(20_000)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        mono = QFont("Monospace")
        mono.setStyleHint(QFont.StyleHint.TypeWriter)
        self.text.setFont(mono)
        title = QLabel(row.name)
        title.setObjectName("cardTitle")
        image = QLabel(row.image)
        image.setObjectName("metricName")
        header = QHBoxLayout()
        header.setSpacing(SPACING)
        header.addWidget(title)
        header.addWidget(image)
        header.addStretch()
        self.follow = QCheckBox("Follow")
        self.follow.setChecked(True)
        self.state = QLabel("Following…")
        self.state.setObjectName("metricName")
        bottom = QHBoxLayout()
        bottom.addWidget(self.follow)
        bottom.addStretch()
        bottom.addWidget(self.state)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(MARGIN, MARGIN, MARGIN, MARGIN)
        layout.setSpacing(SPACING)
        layout.addLayout(header)
        layout.addWidget(self.text)
        layout.addLayout(bottom)

        self.follower = LogFollower(client, row.id, self)
        self.follower.text.connect(self.append)
        self.follower.ended.connect(
            lambda reason: self.state.setText(f"Stopped: {reason}")
        )
        self.follower.start()
        self.finished.connect(lambda _: self.follower.stop())

    def append(self, text: str) -> None:
        bar = self.text.verticalScrollBar()
        cursor = self.text.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(text)
        if self.follow.isChecked():
            bar.setValue(bar.maximum())

    def closeEvent(self, event: Any) -> None:
        self.follower.stop()
        super().closeEvent(event)


class Page(QWidget):
    """A tab: a row of buttons over a table."""

    def __init__(self, table: QTableWidget, buttons: Sequence[QWidget]) -> None:
        super().__init__()
        self.table = table
        self.bar = QHBoxLayout()
        self.bar.setSpacing(4)
        for button in buttons:
            self.bar.addWidget(button)
        self.bar.addStretch()
        self.empty = QLabel()
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setObjectName("metricName")
        self.empty.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, SPACING, 0, 0)
        layout.setSpacing(8)
        layout.addLayout(self.bar)
        layout.addWidget(table, 1)
        layout.addWidget(self.empty, 1)
        self.buttons = buttons
        table.itemSelectionChanged.connect(self.update_buttons)
        self.update_buttons()

    def selected(self) -> Any:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        item = self.table.item(rows[0].row(), 0)
        return item.data(Qt.ItemDataRole.UserRole) if item else None

    def update_buttons(self) -> None:
        has = self.selected() is not None
        for button in self.buttons:
            if button.property("needsSelection"):
                button.setEnabled(has)

    def select_key(self, key: str | None) -> None:
        if key is None:
            return
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 0)
            if item and _key(item.data(Qt.ItemDataRole.UserRole)) == key:
                self.table.selectRow(row)
                return


def _key(record: Any) -> str | None:
    if record is None:
        return None
    # An image has a row per tag: the id alone would pick the first of them.
    return f"{getattr(record, 'id', '')}|{getattr(record, 'name', '')}"


class DashboardWindow(QMainWindow):
    """The main window; fed by the controller's engine and machine signals."""

    containersLoaded = Signal(list)
    imagesLoaded = Signal(list)
    volumesLoaded = Signal(list)
    statsLoaded = Signal(dict)
    pullFinished = Signal(str, str)
    actionDone = Signal(str)
    errorShown = Signal(str)
    firstPaint = Signal()

    def __init__(
        self, controller: MachineController, ask: Ask = ask_with_dialog
    ) -> None:
        super().__init__()
        self.controller = controller
        self.ask = ask
        self.client: EngineClient | None = controller.client
        self.last_error = ""
        self.logs_windows: list[LogsWindow] = []
        self._painted = False
        self._stats_running = False
        self._rows: list[ContainerRow] = []
        self.setWindowTitle("Dockyard")
        self.setWindowIcon(app_icon())
        self.resize(960, 640)
        self.setMinimumSize(720, 480)

        # machine
        self.card = MachineCard(controller)

        # containers
        self.containers = make_table(
            ["Name", "Image", "Status", "Ports", "CPU", "Memory"], 1
        )
        container_buttons = [
            tool_button("Start", "start", lambda: self._container_action("start")),
            tool_button("Stop", "stop", lambda: self._container_action("stop")),
            tool_button(
                "Restart", "restart", lambda: self._container_action("restart")
            ),
            tool_button("Logs", "logs", self.open_logs),
            tool_button("Terminal", "terminal", self.open_terminal),
            tool_button("Delete", "delete", self.delete_container),
        ]
        for button in container_buttons:
            button.setProperty("needsSelection", True)
        self.containers_page = Page(self.containers, container_buttons)
        self.containers.doubleClicked.connect(lambda _: self.open_logs())

        # images
        self.images = make_table(["Image", "ID", "Size", "Created"], 0)
        self.pull_field = QLineEdit()
        self.pull_field.setPlaceholderText("Image to pull, e.g. alpine:3.20")
        self.pull_field.setMinimumWidth(260)
        self.pull_field.setMaximumWidth(340)
        self.pull_field.returnPressed.connect(self.pull)
        self.pull_button = QPushButton(icon("pull"), "Pull")
        self.pull_button.clicked.connect(self.pull)
        self.pull_progress = QProgressBar()
        self.pull_progress.setMaximumWidth(220)
        self.pull_progress.setTextVisible(True)
        self.pull_progress.hide()
        run = tool_button("Run", "run", self.run_image)
        remove_image = tool_button("Remove", "delete", self.remove_image)
        for button in (run, remove_image):
            button.setProperty("needsSelection", True)
        self.images_page = Page(self.images, [run, remove_image])
        self.images_page.bar.addWidget(self.pull_field)
        self.images_page.bar.addWidget(self.pull_button)
        self.images_page.bar.addWidget(self.pull_progress)

        # volumes
        self.volumes = make_table(["Name", "Driver", "Size"], 0)
        remove_volume = tool_button("Remove", "delete", self.remove_volume)
        remove_volume.setProperty("needsSelection", True)
        self.volumes_page = Page(self.volumes, [remove_volume])

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(False)
        self.tabs.addTab(self.containers_page, "Containers")
        self.tabs.addTab(self.images_page, "Images")
        self.tabs.addTab(self.volumes_page, "Volumes")
        self.tabs.currentChanged.connect(lambda _: self._schedule_stats())

        # layout
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(MARGIN, MARGIN, MARGIN, 8)
        layout.setSpacing(SPACING)
        layout.addWidget(self.card)
        layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self.connection = QLabel()
        self.statusBar().addPermanentWidget(self.connection)
        self.statusBar().setSizeGripEnabled(False)

        # refresh: one single-shot timer per table folds bursts of events
        self._reloads: dict[str, QTimer] = {}
        for kind, loader in (
            ("containers", self.load_containers),
            ("images", self.load_images),
            ("volumes", self.load_volumes),
        ):
            timer = QTimer(self)
            timer.setSingleShot(True)
            timer.setInterval(DEBOUNCE_MS)
            timer.timeout.connect(loader)
            self._reloads[kind] = timer
        self._stats_timer = QTimer(self)
        self._stats_timer.setSingleShot(True)
        self._stats_timer.setInterval(STATS_INTERVAL_MS)
        self._stats_timer.timeout.connect(self.load_stats)

        controller.engineReady.connect(self.set_client)
        controller.engineEvent.connect(self.on_event)
        controller.engineLost.connect(self._engine_lost)
        controller.statusChanged.connect(self._machine_status)
        controller.failed.connect(self.show_error)
        self._machine_status(controller.status)
        if self.client is not None:
            self.set_client(self.client)

    # first paint (app.py measures launch time with it)

    def paintEvent(self, event: Any) -> None:
        super().paintEvent(event)
        if not self._painted:
            self._painted = True
            QTimer.singleShot(0, lambda: self.firstPaint.emit())

    # engine connection

    def set_client(self, client: EngineClient) -> None:
        """A (re)connected engine: load every table once."""
        self.client = client
        self.connection.setText(f"● Live: {client.host}")
        self.connection.setStyleSheet(f"color: {STATE_COLORS[State.RUNNING]};")
        self.reload_all()

    def reload_all(self) -> None:
        self.load_containers()
        self.load_images()
        self.load_volumes()

    def _engine_lost(self, reason: str) -> None:
        self.connection.setText("● Engine not reachable")
        self.connection.setStyleSheet(f"color: {STATE_COLORS[State.ERROR]};")
        self.connection.setToolTip(reason)

    def _machine_status(self, status: Status) -> None:
        if status.state is not State.RUNNING and self.controller.backend.controllable:
            self.client = None
            self.connection.setText(f"● Machine {STATE_LABELS[status.state].lower()}")
            self.connection.setStyleSheet(f"color: {STATE_COLORS[status.state]};")
            for table in (self.containers, self.images, self.volumes):
                table.setRowCount(0)
            self._show_empty()

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("Type") or ""
        action = str(event.get("Action") or event.get("status") or "")
        log.debug("engine event %s %s", kind, action)
        if kind == "container":
            # exec_* and top-like actions change nothing the table shows.
            if action.startswith(("exec_", "top", "resize", "attach", "archive-path")):
                return
            self._reloads["containers"].start()
            if action in ("destroy", "create"):
                self._reloads["volumes"].start()
        elif kind == "image":
            self._reloads["images"].start()
        elif kind == "volume":
            self._reloads["volumes"].start()

    # loading

    def _load(
        self, fetch: Callable[[EngineClient], Any], show: Callable[[Any], None]
    ) -> None:
        client = self.client
        if client is None:
            return

        def done(result: Any) -> None:
            if client is self.client:  # ignore answers from an old engine
                show(result)

        submit(lambda: fetch(client), done=done, failed=self._load_failed, owner=self)

    def _load_failed(self, err: Exception) -> None:
        log.info("loading from the engine failed: %s", err)
        self.statusBar().showMessage(f"Could not load: {err}", 8000)

    def load_containers(self) -> None:
        self._load(lambda c: c.containers(), self.show_containers)

    def load_images(self) -> None:
        self._load(lambda c: c.images(), self.show_images)

    def load_volumes(self) -> None:
        self._load(lambda c: c.volumes(), self.show_volumes)

    def show_containers(self, rows: list[ContainerRow]) -> None:
        old_stats = {r.id: (r.cpu_percent, r.memory_bytes) for r in self._rows}
        for row in rows:
            row.cpu_percent, row.memory_bytes = old_stats.get(row.id, (None, None))
        same_rows = [(r.id, r.ports) for r in rows] == [
            (r.id, r.ports) for r in self._rows
        ]
        self._rows = rows
        table = self.containers
        if same_rows:
            # Only states and "Up 5 minutes" changed: update those cells, so
            # the periodic refresh neither flickers nor moves the selection.
            for i, row in enumerate(rows):
                name = table.item(i, 0)
                if name is not None:
                    name.setData(Qt.ItemDataRole.UserRole, row)
                    name.setIcon(dot(CONTAINER_STATE_COLORS.get(row.state, "#6b7580")))
                table.setItem(i, 2, cell(row.status))
            self.containers_page.update_buttons()
            self.containersLoaded.emit(rows)
            self._schedule_stats()
            return
        keep = _key(self.containers_page.selected())
        table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            name = cell(row.name, row)
            name.setIcon(dot(CONTAINER_STATE_COLORS.get(row.state, "#6b7580")))
            table.setItem(i, 0, name)
            table.setItem(i, 1, cell(row.image))
            table.setItem(i, 2, cell(row.status))
            ports = cell("" if row.ports else "—")
            ports.setToolTip(", ".join(str(p) for p in row.ports))
            table.setItem(i, 3, ports)
            if row.ports:
                table.setCellWidget(i, 3, self._ports_label(row))
            else:
                table.removeCellWidget(i, 3)
            table.setItem(i, 4, cell(_percent(row.cpu_percent), align_right=True))
            table.setItem(i, 5, cell(human_size(row.memory_bytes), align_right=True))
        self._fit_ports_column()
        self.containers_page.select_key(keep)
        self.containers_page.update_buttons()
        self._show_empty()
        self.containersLoaded.emit(rows)
        self._schedule_stats()

    def _fit_ports_column(self) -> None:
        # Resize-to-contents ignores cell widgets: size for the link labels.
        table = self.containers
        header = table.horizontalHeader()
        widths = [header.sectionSizeHint(3), 48]
        for i in range(table.rowCount()):
            widget = table.cellWidget(i, 3)
            if widget is not None:
                widths.append(widget.sizeHint().width() + 16)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(3, max(widths))

    def _ports_label(self, row: ContainerRow) -> QLabel:
        links = []
        for port in row.ports:
            url = port.url
            text = str(port)
            style = "color: #1a73e8; text-decoration: none;"
            links.append(f'<a href="{url}" style="{style}">{text}</a>' if url else text)
        label = QLabel(", ".join(links))
        label.setObjectName("ports")
        label.setContentsMargins(6, 0, 6, 0)
        label.setTextFormat(Qt.TextFormat.RichText)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.LinksAccessibleByMouse)
        label.linkActivated.connect(self.open_link)
        return label

    def open_link(self, url: str) -> None:
        log.info("opening %s", url)
        QDesktopServices.openUrl(QUrl(url))

    def show_images(self, rows: list[ImageRow]) -> None:
        keep = _key(self.images_page.selected())
        table = self.images
        table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            table.setItem(i, 0, cell(row.name, row))
            table.setItem(i, 1, cell(row.id.removeprefix("sha256:")[:12]))
            table.setItem(i, 2, cell(human_size(row.size), align_right=True))
            created = (
                row.created.astimezone().strftime("%Y-%m-%d %H:%M")
                if row.created
                else "—"
            )
            table.setItem(i, 3, cell(created))
        self.images_page.select_key(keep)
        self.images_page.update_buttons()
        self._show_empty()
        self.imagesLoaded.emit(rows)

    def show_volumes(self, rows: list[VolumeRow]) -> None:
        keep = _key(self.volumes_page.selected())
        table = self.volumes
        table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            table.setItem(i, 0, cell(row.name, row))
            table.setItem(i, 1, cell(row.driver))
            table.setItem(i, 2, cell(human_size(row.size), align_right=True))
        self.volumes_page.select_key(keep)
        self.volumes_page.update_buttons()
        self._show_empty()
        self.volumesLoaded.emit(rows)

    def _show_empty(self) -> None:
        if self.client is None:
            reason = "Start the machine to see its containers, images and volumes."
        else:
            reason = ""
        for page, what in (
            (
                self.containers_page,
                "No containers yet. Try: docker run -d -p 8080:80 nginx",
            ),
            (self.images_page, "No images yet. Pull one above."),
            (self.volumes_page, "No volumes yet."),
        ):
            empty = page.table.rowCount() == 0
            page.empty.setText(reason or what)
            page.empty.setVisible(empty)
            page.table.setVisible(not empty)

    # CPU and memory

    def _schedule_stats(self) -> None:
        wanted = (
            self.isVisible()
            and self.tabs.currentWidget() is self.containers_page
            and any(r.state == "running" for r in self._rows)
        )
        if wanted and not self._stats_running:
            if not self._stats_timer.isActive():
                # The first sample right away; the next after the interval.
                self._stats_timer.start(
                    0 if self._all_stats_missing() else STATS_INTERVAL_MS
                )
        elif not wanted:
            self._stats_timer.stop()

    def _all_stats_missing(self) -> bool:
        return all(r.cpu_percent is None for r in self._rows if r.state == "running")

    def load_stats(self) -> None:
        client = self.client
        running = [r.id for r in self._rows if r.state == "running"]
        if client is None or not running:
            return
        self._stats_running = True
        samples: dict[str, tuple[float | None, int | None]] = {}
        waiting = set(running)

        # One call per container, side by side: an engine may take a second
        # or two per sample (it measures CPU over an interval).
        def finish(cid: str) -> None:
            waiting.discard(cid)
            if waiting:
                return
            self._stats_running = False
            if client is not self.client:
                return
            for i, row in enumerate(self._rows):
                if row.id in samples:
                    row.cpu_percent, row.memory_bytes = samples[row.id]
                    self.containers.setItem(
                        i, 4, cell(_percent(row.cpu_percent), align_right=True)
                    )
                    self.containers.setItem(
                        i, 5, cell(human_size(row.memory_bytes), align_right=True)
                    )
            self.statsLoaded.emit(samples)
            if samples:
                # Refresh the list too, for "Up 5 minutes"; it schedules the
                # next sample when it is in.
                self.load_containers()

        for cid in running:

            def done(sample: tuple[float | None, int | None], cid: str = cid) -> None:
                samples[cid] = sample
                finish(cid)

            def failed(err: Exception, cid: str = cid) -> None:
                log.debug("stats of %s failed: %s", cid[:12], err)
                finish(cid)

            submit(
                lambda cid=cid: client.stats(cid), done=done, failed=failed, owner=self
            )

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self._schedule_stats()

    def hideEvent(self, event: Any) -> None:
        super().hideEvent(event)
        self._stats_timer.stop()

    # container actions

    def _run_action(self, what: str, fn: Callable[[EngineClient], Any]) -> None:
        client = self.client
        if client is None:
            self.show_error("The engine is not running.")
            return

        def done(_: Any) -> None:
            self.statusBar().showMessage(f"{what}: done", 4000)
            self.actionDone.emit(what)

        self.statusBar().showMessage(f"{what}…")
        submit(
            lambda: fn(client),
            done=done,
            failed=lambda e: self.show_error(f"{what}: {e}"),
            owner=self,
        )

    def _container_action(self, action: str) -> None:
        row = self.containers_page.selected()
        if row is None:
            return
        method = {"start": "start", "stop": "stop", "restart": "restart"}[action]
        self._run_action(
            f"{action.capitalize()} {row.name}", lambda c: getattr(c, method)(row.id)
        )

    def delete_container(self) -> None:
        row = self.containers_page.selected()
        if row is None:
            return
        answer = self.ask(
            "Delete container?",
            f"Delete {row.name}? It is stopped first if it is running.",
            YES | CANCEL,
        )
        if answer == YES:
            self._run_action(f"Delete {row.name}", lambda c: c.remove(row.id))

    def open_logs(self) -> LogsWindow | None:
        row = self.containers_page.selected()
        if row is None or self.client is None:
            return None
        window = LogsWindow(self.client, row, self)
        window.finished.connect(lambda _: self._forget_logs(window))
        self.logs_windows.append(window)
        window.show()
        return window

    def _forget_logs(self, window: LogsWindow) -> None:
        if window in self.logs_windows:
            self.logs_windows.remove(window)

    def open_terminal(self) -> None:
        row = self.containers_page.selected()
        if row is None or self.client is None:
            return
        from desktop.gui.terminal import TerminalError, open_terminal

        try:
            open_terminal(self.client.host, row.id)
        except TerminalError as err:
            self.show_error(str(err))

    # image actions

    def pull(self) -> None:
        reference = self.pull_field.text().strip()
        client = self.client
        if not reference or client is None:
            return
        self.pull_button.setEnabled(False)
        self.pull_progress.setRange(0, 0)
        self.pull_progress.setFormat("Pulling…")
        self.pull_progress.show()
        layers: dict[str, tuple[int, int]] = {}

        def job(report: Callable[[Any], None]) -> str:
            for message in client.pull(reference):
                report(message)
            return reference

        def progress(message: dict[str, Any]) -> None:
            detail = message.get("progressDetail") or {}
            layer = message.get("id")
            if layer and detail.get("total"):
                layers[layer] = (int(detail.get("current") or 0), int(detail["total"]))
            elif layer and message.get("status") in ("Pull complete", "Already exists"):
                _, total = layers.get(layer, (1, 1))
                layers[layer] = (total, total)
            total = sum(t for _, t in layers.values())
            if total:
                done = sum(c for c, _ in layers.values())
                self.pull_progress.setRange(0, 1000)
                self.pull_progress.setValue(int(done * 1000 / total))
                self.pull_progress.setFormat(
                    f"{human_size(done)} of {human_size(total)}"
                )

        def finished(ok: bool, text: str) -> None:
            self.pull_button.setEnabled(True)
            self.pull_progress.hide()
            if ok:
                self.pull_field.clear()
                self.statusBar().showMessage(f"Pulled {reference}", 5000)
                self.load_images()
            else:
                self.show_error(f"Pull {reference}: {text}")
            self.pullFinished.emit(reference, "" if ok else text)

        submit(
            job,
            done=lambda ref: finished(True, ""),
            failed=lambda err: finished(False, str(err)),
            progress=progress,
            owner=self,
        )

    def run_image(self) -> None:
        row = self.images_page.selected()
        if row is None:
            return
        self._run_action(
            f"Run {row.name}", lambda c: c.run(row.tags[0] if row.tags else row.id)
        )

    def remove_image(self) -> None:
        row = self.images_page.selected()
        if row is None:
            return
        answer = self.ask("Remove image?", f"Remove {row.name}?", YES | CANCEL)
        if answer == YES:
            target = row.tags[0] if row.tags else row.id
            self._run_action(f"Remove {row.name}", lambda c: c.remove_image(target))

    # volume actions

    def remove_volume(self) -> None:
        row = self.volumes_page.selected()
        if row is None:
            return
        answer = self.ask(
            "Remove volume?",
            f"Remove {row.name} and every file in it? This cannot be undone.",
            YES | CANCEL,
        )
        if answer == YES:
            self._run_action(
                f"Remove volume {row.name}", lambda c: c.remove_volume(row.name)
            )

    # errors

    def show_error(self, message: str) -> None:
        self.last_error = message
        log.info("shown to the user: %s", message)
        self.statusBar().showMessage(f"⚠ {message}", 15000)
        self.errorShown.emit(message)

    def closeEvent(self, event: Any) -> None:
        for window in list(self.logs_windows):
            window.close()
        super().closeEvent(event)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} %"
