"""The app's settings: the machine's shape and how the app starts.

Stored as JSON in the platform's config folder (``~/.config/Dockyard`` on
Linux, ``~/Library/Application Support/Dockyard`` on macOS,
``%LOCALAPPDATA%\\Dockyard`` on Windows)::

    {"cpus": 2, "memory_mib": 2048, "disk_gib": 20, "shares": ["/home/me"],
     "backend": "qemu", "start_at_login": false, "start_machine": true}

``validate`` checks a ``Settings`` against the host (a machine cannot have
more CPUs or memory than the computer it runs on); ``SettingsDialog`` edits
one, refuses what ``validate`` refuses, and says when the change needs the
machine restarted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from desktop.gui.backend import MachineConfig

log = logging.getLogger(__name__)

APP_NAME = "Dockyard"
FILE_NAME = "desktop.json"

MIN_MEMORY_MIB = 512
MIN_DISK_GIB = 4
MAX_DISK_GIB = 2048
# What the host keeps for itself when the machine takes the most it may.
HOST_RESERVE_MIB = 1024

# Backends by platform; "host" means no machine: the engine runs on this
# Linux host and the app only talks to its socket.
BACKENDS = {
    "qemu": "QEMU",
    "virtualbox": "VirtualBox",
    "hyperv": "Hyper-V",
    "host": "None: use this Linux host's engine",
}


def backends_here() -> dict[str, str]:
    if sys.platform == "win32":
        names = ["hyperv", "virtualbox", "qemu"]
    elif sys.platform == "darwin":
        names = ["qemu", "virtualbox"]
    else:
        names = ["qemu", "virtualbox", "host"]
    return {name: BACKENDS[name] for name in names}


class SettingsError(Exception):
    """Settings that cannot be applied; one line per problem."""


@dataclass
class Settings:
    cpus: int = 2
    memory_mib: int = 2048
    disk_gib: int = 20
    shares: list[str] = field(default_factory=lambda: [str(Path.home())])
    backend: str = "qemu"
    start_at_login: bool = False
    start_machine: bool = True
    machine: str = "default"
    docker_host: str = ""

    def machine_config(self) -> MachineConfig:
        return MachineConfig(
            name=self.machine,
            cpus=self.cpus,
            memory_mib=self.memory_mib,
            disk_gib=self.disk_gib,
            shares=list(self.shares),
            backend=self.backend,
        )

    def needs_restart(self, old: Settings) -> bool:
        """Whether going from ``old`` to this changes the running machine."""
        keys = ("cpus", "memory_mib", "disk_gib", "shares", "backend", "machine")
        return any(getattr(self, k) != getattr(old, k) for k in keys)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settings:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            log.warning("ignoring unknown settings: %s", ", ".join(sorted(unknown)))
        values = {k: v for k, v in data.items() if k in known}
        settings = cls(**values)
        settings.shares = [str(s) for s in settings.shares]
        return settings


def config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / FILE_NAME


def load(path: Path | None = None) -> Settings:
    """The saved settings, or the defaults when there are none (or they are bad)."""
    path = path or config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Settings()
    except (OSError, ValueError) as err:
        log.warning("settings in %s unreadable, using defaults: %s", path, err)
        return Settings()
    try:
        return Settings.from_json(data)
    except TypeError as err:
        log.warning("settings in %s malformed, using defaults: %s", path, err)
        return Settings()


def save(settings: Settings, path: Path | None = None) -> Path:
    """Write atomically, so a crash never leaves half a file."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(settings), indent=2) + "\n")
    os.replace(tmp, path)
    log.info("settings saved to %s", path)
    return path


@dataclass
class HostLimits:
    """What this computer has, and so what a machine may take."""

    cpus: int
    memory_mib: int
    disk_free_gib: int | None = None

    @property
    def max_memory_mib(self) -> int:
        return max(MIN_MEMORY_MIB, self.memory_mib - HOST_RESERVE_MIB)

    @classmethod
    def detect(cls, disk_at: Path | None = None) -> HostLimits:
        free: int | None = None
        try:
            at = disk_at or Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
            while not at.exists() and at != at.parent:
                at = at.parent
            free = shutil.disk_usage(at).free // 2**30
        except OSError:
            pass
        return cls(
            cpus=os.cpu_count() or 1, memory_mib=_host_memory_mib(), disk_free_gib=free
        )


def _host_memory_mib() -> int:
    if sys.platform == "win32":
        import ctypes

        class MemoryStatus(ctypes.Structure):
            _fields_ = [
                ("length", ctypes.c_ulong),
                ("load", ctypes.c_ulong),
                ("total_phys", ctypes.c_ulonglong),
                ("avail_phys", ctypes.c_ulonglong),
                ("total_page", ctypes.c_ulonglong),
                ("avail_page", ctypes.c_ulonglong),
                ("total_virtual", ctypes.c_ulonglong),
                ("avail_virtual", ctypes.c_ulonglong),
                ("avail_ext", ctypes.c_ulonglong),
            ]

        status = MemoryStatus()
        status.length = ctypes.sizeof(MemoryStatus)
        ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status))
        return int(status.total_phys // 2**20)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)


def validate(
    settings: Settings, host: HostLimits, current_disk_gib: int | None = None
) -> list[str]:
    """Every reason ``settings`` cannot be applied here; empty when it can."""
    problems: list[str] = []
    if settings.backend == "host":
        return problems
    if not 1 <= settings.cpus <= host.cpus:
        problems.append(
            f"CPUs must be between 1 and {host.cpus} (this computer has {host.cpus})."
        )
    if settings.memory_mib < MIN_MEMORY_MIB:
        problems.append(f"Memory must be at least {MIN_MEMORY_MIB} MiB.")
    elif settings.memory_mib > host.max_memory_mib:
        problems.append(
            f"Memory must be at most {host.max_memory_mib} MiB: this computer has "
            f"{host.memory_mib} MiB and keeps {HOST_RESERVE_MIB} MiB for itself."
        )
    if not MIN_DISK_GIB <= settings.disk_gib <= MAX_DISK_GIB:
        problems.append(
            f"Disk size must be between {MIN_DISK_GIB} and {MAX_DISK_GIB} GiB."
        )
    elif current_disk_gib is not None and settings.disk_gib < current_disk_gib:
        problems.append(
            f"The disk cannot shrink below its current {current_disk_gib} GiB; "
            "reset the machine to start over with a smaller one."
        )
    for share in settings.shares:
        if not Path(share).is_dir():
            problems.append(f"Shared folder {share} does not exist.")
    if settings.backend not in BACKENDS:
        problems.append(f"Unknown backend {settings.backend!r}.")
    return problems


class SettingsDialog(QDialog):
    """Edits a copy of the settings; ``saved(settings, needs_restart)`` on OK."""

    saved = Signal(object, bool)

    def __init__(
        self,
        settings: Settings,
        host: HostLimits | None = None,
        path: Path | None = None,
        machine_running: bool = False,
        current_disk_gib: int | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Dockyard Settings")
        self.original = settings
        self.host = host or HostLimits.detect()
        self.path = path
        self.machine_running = machine_running
        # The disk of an existing machine can only grow.
        self.current_disk_gib = current_disk_gib

        # machine
        self.cpus = QSpinBox()
        self.cpus.setRange(1, self.host.cpus)
        self.cpus.setSuffix(" CPUs")
        self.memory = QSpinBox()
        self.memory.setRange(MIN_MEMORY_MIB, self.host.max_memory_mib)
        self.memory.setSingleStep(256)
        self.memory.setSuffix(" MiB")
        self.memory.setGroupSeparatorShown(True)
        self.disk = QSpinBox()
        self.disk.setRange(MIN_DISK_GIB, MAX_DISK_GIB)
        self.disk.setSuffix(" GiB")
        self.backend = QComboBox()
        for name, label in backends_here().items():
            self.backend.addItem(label, name)
        for spin in (self.cpus, self.memory, self.disk):
            spin.setMinimumWidth(140)
            spin.setAlignment(Qt.AlignmentFlag.AlignRight)

        machine_box = QGroupBox("Machine")
        form = QFormLayout(machine_box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        form.addRow("Backend:", self.backend)
        form.addRow("CPUs:", self._with_hint(self.cpus, f"of {self.host.cpus}"))
        form.addRow(
            "Memory:",
            self._with_hint(self.memory, f"of {self.host.memory_mib:,} MiB"),
        )
        free = self.host.disk_free_gib
        form.addRow(
            "Disk size:",
            self._with_hint(
                self.disk, f"{free:,} GiB free" if free is not None else ""
            ),
        )

        # shares
        self.shares = QListWidget()
        self.shares.setMinimumHeight(72)
        self.shares.setMaximumHeight(110)
        add = QPushButton("Add…")
        add.clicked.connect(self._add_share)
        self.remove_share = QPushButton("Remove")
        self.remove_share.clicked.connect(self._remove_share)
        self.shares.currentRowChanged.connect(
            lambda row: self.remove_share.setEnabled(row >= 0)
        )
        share_buttons = QVBoxLayout()
        share_buttons.addWidget(add)
        share_buttons.addWidget(self.remove_share)
        share_buttons.addStretch()
        shares_box = QGroupBox("Shared folders")
        shares_layout = QHBoxLayout(shares_box)
        shares_layout.addWidget(self.shares, 1)
        shares_layout.addLayout(share_buttons)

        # startup
        self.start_at_login = QCheckBox("Start Dockyard when I log in")
        self.start_machine = QCheckBox("Start the machine when Dockyard starts")
        startup_box = QGroupBox("Startup")
        startup_layout = QVBoxLayout(startup_box)
        startup_layout.addWidget(self.start_at_login)
        startup_layout.addWidget(self.start_machine)

        # status and buttons
        self.problems = QLabel()
        self.problems.setObjectName("problems")
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet("color: #c62828;")
        self.problems.hide()
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        for button in self.buttons.buttons():
            button.setIcon(QIcon())  # Fusion's stock check and cross look dated
            button.setMinimumWidth(88)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 16, 16, 16)
        layout.setSpacing(12)
        layout.addWidget(machine_box)
        layout.addWidget(shares_box)
        layout.addWidget(startup_box)
        layout.addWidget(self.problems)
        layout.addWidget(self.buttons)

        self.backend.currentIndexChanged.connect(self._backend_changed)
        self.load(settings)
        self.setMinimumWidth(460)

    def _with_hint(self, spin: QSpinBox, hint: str) -> QWidget:
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        layout.addWidget(spin)
        label = QLabel(hint)
        label.setStyleSheet("color: palette(placeholder-text);")
        layout.addWidget(label)
        layout.addStretch()
        return row

    def load(self, settings: Settings) -> None:
        # The spin boxes clamp to the host; a file asking for more is caught
        # by validate() on OK, after the value was clamped for display.
        self.cpus.setValue(settings.cpus)
        self.memory.setValue(settings.memory_mib)
        self.disk.setValue(settings.disk_gib)
        index = self.backend.findData(settings.backend)
        self.backend.setCurrentIndex(max(0, index))
        self.shares.clear()
        self.shares.addItems(settings.shares)
        self.remove_share.setEnabled(False)
        self.start_at_login.setChecked(settings.start_at_login)
        self.start_machine.setChecked(settings.start_machine)
        self._backend_changed()

    def edited(self) -> Settings:
        """The settings as the dialog shows them now."""
        shares = [self.shares.item(i).text() for i in range(self.shares.count())]
        return Settings(
            cpus=self.cpus.value(),
            memory_mib=self.memory.value(),
            disk_gib=self.disk.value(),
            shares=shares,
            backend=str(self.backend.currentData()),
            start_at_login=self.start_at_login.isChecked(),
            start_machine=self.start_machine.isChecked(),
            machine=self.original.machine,
            docker_host=self.original.docker_host,
        )

    def _backend_changed(self) -> None:
        machine = self.backend.currentData() != "host"
        for widget in (self.cpus, self.memory, self.disk, self.shares):
            widget.setEnabled(machine)

    def _add_share(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Share a folder", str(Path.home())
        )
        if folder and not self.shares.findItems(folder, Qt.MatchFlag.MatchExactly):
            self.shares.addItem(folder)

    def _remove_share(self) -> None:
        row = self.shares.currentRow()
        if row >= 0:
            self.shares.takeItem(row)

    def show_problems(self, problems: list[str]) -> None:
        self.problems.setText("\n".join(problems))
        self.problems.setVisible(bool(problems))

    def accept(self) -> None:
        settings = self.edited()
        problems = validate(settings, self.host, self.current_disk_gib)
        if problems:
            log.info("settings refused: %s", "; ".join(problems))
            self.show_problems(problems)
            return
        save(settings, self.path)
        if settings.start_at_login != self.original.start_at_login:
            from desktop.gui.autostart import set_autostart

            try:
                set_autostart(settings.start_at_login)
            except OSError as err:
                self.show_problems([f"Could not change start at login: {err}"])
                return
        restart = self.machine_running and settings.needs_restart(self.original)
        self.saved.emit(settings, restart)
        super().accept()
