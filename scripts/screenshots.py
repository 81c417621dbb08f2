"""Render the tray app's screenshots under Xvfb into screenshots/.

    .venv/bin/python scripts/screenshots.py --machine        # boots a machine
    .venv/bin/python scripts/screenshots.py                  # starts an engine
    .venv/bin/python scripts/screenshots.py --docker-host unix:///run/dockyard/docker.sock

Starts a private X server (Xvfb), points the app at a real engine (a real
Dockyard machine booted in a private DOCKYARD_HOME with --machine, else its
own Dockyard engine in a temporary folder unless --docker-host or DOCKER_HOST
names one), fills it with a few demo containers and volumes, and saves:

    screenshots/dashboard.png        the dashboard, containers listed
    screenshots/dashboard-images.png the images page
    screenshots/settings.png         the settings dialog
    screenshots/tray-menu.png        the tray menu, as it opens
    screenshots/tray-menu-machine.png the menu over a (stopped) machine
    screenshots/logs.png             a container's followed log
    screenshots/tray-icons.png       the four tray icon states

Everything it started (X server, machine or engine, demo containers) is
removed at the end. Needs root when it starts its own engine or machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LABEL = "dockyard-screenshot=1"
SIZE = (1100, 700)


@contextmanager
def xvfb() -> Iterator[str]:
    """A private X server; yields its DISPLAY."""
    read, write = os.pipe()
    proc = subprocess.Popen(
        [
            "Xvfb",
            "-displayfd",
            str(write),
            "-screen",
            "0",
            "1440x900x24",
            "-nolisten",
            "tcp",
        ],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    try:
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def engine(host: str | None) -> Iterator[str]:
    """The engine to show: the given one, or a Dockyard engine of our own."""
    if host:
        yield host
        return
    from tests.support.engine import EngineProcess

    root = Path(tempfile.mkdtemp(prefix="dyshots-", dir="/var/tmp"))
    eng = EngineProcess(
        root=root, extra_args=["--bridge-name", "dyshot0", "--bip", "172.29.250.1/24"]
    )
    eng.start()
    try:
        yield eng.host
    finally:
        eng.stop()
        subprocess.run(["pkill", "-f", f"conmon.*{root}"], check=False)
        subprocess.run(
            ["umount", "-R", "-l", str(root / "data")], check=False, capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


def docker(host: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DOCKER_HOST=host)
    env.pop("DOCKER_CONTEXT", None)
    return subprocess.run(
        ["docker", *args], env=env, capture_output=True, text=True, timeout=120
    )


def populate(host: str, work: Path) -> str:
    """Demo content: an image, three containers, two volumes. Returns the image."""
    from tests.support.images import BUSYBOX_REF, busybox_archive

    if docker(host, "image", "inspect", BUSYBOX_REF).returncode != 0:
        loaded = docker(host, "load", "-i", str(busybox_archive(work / "busybox.tar")))
        if loaded.returncode != 0:
            print(f"warning: cannot load the demo image: {loaded.stderr.strip()}")
    for volume in ("pgdata", "build-cache"):
        docker(host, "volume", "create", "--label", LABEL, volume)
    demo = [
        ("web", ["-p", "8080:80"], ["httpd", "-f", "-p", "80", "-h", "/etc"]),
        (
            "api",
            ["-p", "127.0.0.1:5000:5000", "-v", "pgdata:/data"],
            ["sh", "-c", LOG_LOOP],
        ),
        ("worker", [], ["sleep", "86400"]),
        ("migrate", [], ["true"]),
    ]
    for name, options, command in demo:
        result = docker(
            host,
            "run",
            "-d",
            "--label",
            LABEL,
            "--name",
            name,
            *options,
            BUSYBOX_REF,
            *command,
        )
        if result.returncode != 0:
            print(f"warning: cannot run {name}: {result.stderr.strip()[:200]}")
    return BUSYBOX_REF


LOG_LOOP = (
    "i=0; while true; do "
    'echo "$(date -u +%H:%M:%S) GET /api/items/$i 200 $((i % 7 + 3))ms"; '
    "i=$((i+1)); sleep 0.5; done"
)


def cleanup(host: str) -> None:
    ids = docker(host, "ps", "-aq", "--filter", f"label={LABEL}").stdout.split()
    if ids:
        docker(host, "rm", "-f", "-v", *ids)
    for volume in ("pgdata", "build-cache"):
        docker(host, "volume", "rm", "-f", volume)


def wait_until(condition: Callable[[], bool], timeout: float = 20) -> bool:
    from PySide6.QtWidgets import QApplication

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QApplication.processEvents()
        if condition():
            return True
        time.sleep(0.02)
    return False


def settle(seconds: float = 0.4) -> None:
    wait_until(lambda: False, seconds)


@contextmanager
def machine(work: Path) -> Iterator[tuple[str, object]]:
    """A real Dockyard machine booted in a private DOCKYARD_HOME.

    Yields its docker host and a MachineBackend over it; stops and deletes
    the machine afterwards.
    """
    from desktop.gui.backend import MachineBackend, MachineConfig
    from desktop.machine import MachineManager, MachineSpec

    manager = MachineManager(home=work / "dockyard")
    config = MachineConfig(cpus=2, memory_mib=2048, shares=[str(work)])
    spec = MachineSpec(
        name=config.name,
        cpus=config.cpus,
        memory_mib=config.memory_mib,
        shares=config.shares,
    )
    vm = manager.create(spec)
    try:
        print("booting a machine (about 25 s under TCG)...")

        def report(event: Any) -> None:
            if event.done:
                print(f"  {event.stage}: {event.message}")

        vm.start(progress=report)
        yield vm.docker_host, MachineBackend(config, manager=manager)
    finally:
        manager.remove(config.name, force=True)


def render(host: str, out: Path, backend: object | None = None) -> list[Path]:
    from PySide6.QtCore import QPoint
    from PySide6.QtGui import QColor, QPainter, QPixmap
    from PySide6.QtWidgets import QApplication

    from desktop.gui.app import DesktopApp, parse_args
    from desktop.gui.backend import State
    from desktop.gui.settings import HostLimits, Settings, SettingsDialog
    from desktop.gui.style import STATE_ICONS, STYLESHEET, app_icon, icon

    app = QApplication(["dockyard-desktop"])
    app.setStyle("Fusion")
    app.setStyleSheet(STYLESHEET)
    app.setWindowIcon(app_icon())
    if backend is None:
        desktop = DesktopApp(parse_args(["--docker-host", host]), None)
    else:
        desktop = DesktopApp(parse_args([]), None, backend=backend)  # type: ignore[arg-type]
    window = desktop.dashboard
    window.resize(*SIZE)
    desktop.launch(show_dashboard=True)
    saved: list[Path] = []

    def save(pixmap: QPixmap, name: str) -> None:
        path = out / name
        pixmap.save(str(path))
        saved.append(path)
        print(f"wrote {path} ({pixmap.width()}x{pixmap.height()})")

    loaded = wait_until(
        lambda: window.containers.rowCount() > 0 and window.images.rowCount() > 0
    )
    if not loaded:
        print(
            "warning: the engine listed no containers or images; screenshots show what it has"
        )
    wait_until(
        lambda: all(
            r.cpu_percent is not None for r in window._rows if r.state == "running"
        ),
        12,
    )
    # The list is read again with each CPU sample: let "Up Less than a
    # second" become "Up 5 seconds".
    wait_until(
        lambda: (
            not any(
                "Less than" in r.status for r in window._rows if r.state == "running"
            )
        ),
        12,
    )
    running = [i for i, r in enumerate(window._rows) if r.state == "running"]
    if running:
        window.containers.selectRow(running[0])
    settle()
    save(window.grab(), "dashboard.png")

    # logs of the chatty container
    names = [r.name for r in window._rows]
    if "api" in names:
        window.containers.selectRow(names.index("api"))
        logs = window.open_logs()
        if logs is not None:
            wait_until(lambda: logs.text.toPlainText().count("\n") > 6, 10)
            settle(0.3)
            save(logs.grab(), "logs.png")
            logs.close()

    window.tabs.setCurrentWidget(window.images_page)
    window.pull_field.setText("alpine:3.20")
    if window.images.rowCount():
        window.images.selectRow(0)
    settle()
    save(window.grab(), "dashboard-images.png")
    window.pull_field.clear()
    window.tabs.setCurrentWidget(window.containers_page)

    # settings, with a plausible machine on this host
    host_limits = HostLimits.detect()
    dialog = SettingsDialog(
        Settings(cpus=min(4, host_limits.cpus), memory_mib=4096, start_at_login=True),
        host=host_limits,
    )
    dialog.show()
    settle()
    save(dialog.grab(), "settings.png")
    dialog.close()

    # the tray menu, as the user opens it
    desktop.tray.rebuild_menu()
    menu = desktop.tray.menu
    menu.popup(QPoint(900, 40))
    settle()
    save(menu.grab(), "tray-menu.png")
    menu.hide()

    # the same menu over a machine (stopped: nothing is booted for this)
    try:
        from desktop.machine import MachineManager as manager_class
    except ImportError as err:
        print(f"skipping tray-menu-machine.png: the machine layer is not ready ({err})")
    else:
        from desktop.gui.backend import MachineBackend, MachineConfig
        from desktop.gui.controller import MachineController
        from desktop.gui.tray import Tray

        home = Path(tempfile.mkdtemp(prefix="dyshots-machines-"))
        backend = MachineBackend(MachineConfig(), manager=manager_class(home=home))
        controller = MachineController(backend)
        tray = Tray(controller)
        controller.refresh()
        wait_until(lambda: controller.status.name != "", 10)
        tray.rebuild_menu()
        tray.menu.popup(QPoint(900, 40))
        settle()
        save(tray.menu.grab(), "tray-menu-machine.png")
        tray.menu.hide()
        controller.shutdown()
        shutil.rmtree(home, ignore_errors=True)

    # the tray icon in each state, large, on light and dark panels
    states = [State.STOPPED, State.STARTING, State.RUNNING, State.ERROR]
    strip = QPixmap(len(states) * 72 + 16, 2 * 72 + 16)
    strip.fill(QColor("#ffffff"))
    painter = QPainter(strip)
    painter.fillRect(0, 80, strip.width(), 80, QColor("#2b3138"))
    for column, state in enumerate(states):
        for row in range(2):
            painter.drawPixmap(
                16 + column * 72, 16 + row * 72, icon(STATE_ICONS[state]).pixmap(48, 48)
            )
    painter.end()
    save(strip, "tray-icons.png")

    desktop.quit()
    from desktop.gui.workers import wait_for_tasks

    wait_for_tasks()
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docker-host", default=os.environ.get("DOCKER_HOST"))
    parser.add_argument(
        "--machine",
        action="store_true",
        help="boot a real Dockyard machine and show it (instead of an engine)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dyshots-work-"))
    # Settings and logs of this run stay out of the user's own folders.
    os.environ["XDG_CONFIG_HOME"] = str(work / "config")
    os.environ["XDG_STATE_HOME"] = str(work / "state")
    try:
        with contextlib.ExitStack() as stack:
            display = stack.enter_context(xvfb())
            backend = None
            if args.machine:
                host, backend = stack.enter_context(machine(work))
            else:
                host = stack.enter_context(engine(args.docker_host))
            os.environ["DISPLAY"] = display
            os.environ["QT_QPA_PLATFORM"] = "xcb"
            try:
                populate(host, work)
                render(host, args.out, backend)
            finally:
                cleanup(host)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
