"""The app's look: its icons (SVG files in ``icons/``) and one stylesheet.

Icons are loaded by name and cached::

    icon("start")                 # icons/start.svg
    state_icon(State.RUNNING)     # icons/tray-running.svg
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from PySide6.QtGui import QColor, QIcon

from desktop.gui.backend import State

ICONS = Path(__file__).parent / "icons"

STATE_ICONS = {
    State.STOPPED: "tray-stopped",
    State.STOPPING: "tray-starting",
    State.STARTING: "tray-starting",
    State.RUNNING: "tray-running",
    State.ERROR: "tray-error",
    State.CRASHED: "tray-error",
}

STATE_COLORS = {
    State.STOPPED: "#6b7580",
    State.STOPPING: "#b07800",
    State.STARTING: "#b07800",
    State.RUNNING: "#2e9d4f",
    State.ERROR: "#d93025",
    State.CRASHED: "#d93025",
}

STATE_LABELS = {
    State.STOPPED: "Stopped",
    State.STOPPING: "Stopping…",
    State.STARTING: "Starting…",
    State.RUNNING: "Running",
    State.ERROR: "Error",
    State.CRASHED: "Crashed",
}

SPACING = 12
MARGIN = 16

STYLESHEET = """
QFrame#card {
    background: palette(base);
    border: 1px solid palette(mid);
    border-radius: 8px;
}
QLabel#cardTitle { font-size: 15pt; font-weight: 600; }
QLabel#stateBadge {
    border-radius: 10px;
    padding: 2px 10px;
    color: white;
    font-weight: 600;
}
QLabel#metricValue { font-size: 12pt; font-weight: 600; }
QLabel#metricName { color: palette(placeholder-text); }
QLabel#banner {
    background: #fdecea;
    color: #8c1d18;
    border: 1px solid #f5c2bd;
    border-radius: 6px;
    padding: 6px 10px;
}
QTableView {
    gridline-color: palette(midlight);
    selection-background-color: #dbe8fb;
    selection-color: palette(text);
}
QTableView::item { padding: 0 6px; }
QHeaderView::section { padding: 4px 6px; font-weight: 600; }
QTabWidget::pane { border: none; border-top: 1px solid palette(mid); top: -1px; }
QTabBar::tab {
    padding: 7px 18px;
    border: none;
    border-bottom: 2px solid transparent;
    background: transparent;
}
QTabBar::tab:selected { border-bottom: 2px solid #2f80ed; color: #1b4f9c; font-weight: 600; }
QTabBar::tab:hover:!selected { border-bottom: 2px solid palette(mid); }
QStatusBar QLabel { padding: 0 10px; }
"""


@cache
def icon(name: str) -> QIcon:
    return QIcon(str(ICONS / f"{name}.svg"))


def state_icon(state: State) -> QIcon:
    return icon(STATE_ICONS[state])


def app_icon() -> QIcon:
    return icon("app")


def state_color(state: State) -> QColor:
    return QColor(STATE_COLORS[state])
