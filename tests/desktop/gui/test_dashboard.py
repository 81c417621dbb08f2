"""The dashboard over a real engine: tables, events, actions, logs.

The engine is ``gui_engine`` (conftest.py): Dockyard's own, or the one
``DOCKYARD_GUI_TEST_HOST`` names. Changes are made with the real docker CLI
and the tests wait for the dashboard's signals; nothing here sleeps.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel, QMessageBox, QTableWidget

from desktop.gui.backend import EngineOnlyBackend, MachineBackend, MachineConfig, State
from desktop.gui.controller import MachineController
from desktop.gui.dashboard import DashboardWindow
from desktop.gui.workers import wait_for_tasks
from tests.desktop.gui.conftest import require
from tests.desktop.gui.fakes import FakeManager

LABEL = "dockyard-gui-test=1"


def always_yes(title: str, text: str, buttons: Any) -> QMessageBox.StandardButton:
    return QMessageBox.StandardButton.Yes


@pytest.fixture
def window(qtbot, gui_engine) -> Iterator[DashboardWindow]:
    controller = MachineController(EngineOnlyBackend(gui_engine.host))
    window = DashboardWindow(controller, ask=always_yes)
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignals(
        [window.containersLoaded, window.imagesLoaded, window.volumesLoaded],
        timeout=20_000,
    ):
        controller.refresh()
    yield window
    window.close()
    controller.shutdown()
    wait_for_tasks()
    labelled = gui_engine.docker(
        "ps", "-aq", "--filter", f"label={LABEL}"
    ).stdout.split()
    if labelled:
        gui_engine.docker("rm", "-f", *labelled)


def names(table: QTableWidget) -> list[str]:
    return [table.item(row, 0).text() for row in range(table.rowCount())]


def row_of(table: QTableWidget, name: str) -> int:
    return names(table).index(name)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run_container(
    engine: Any, image: str, name: str, *command: str, options: tuple[str, ...] = ()
) -> str:
    result = engine.docker(
        "run", "-d", "--label", LABEL, "--name", name, *options, image, *command
    )
    if result.returncode != 0:
        reason = f"engine cannot run containers yet: {result.stderr.strip()[:200]}"
        print(reason)
        pytest.skip(reason)
    return result.stdout.strip()


def no_repeating_timers(window: DashboardWindow) -> bool:
    """Idle means no timer that fires again and again."""
    return not [
        t for t in window.findChildren(QTimer) if t.isActive() and not t.isSingleShot()
    ]


def test_machine_card_shows_the_engine(window, gui_engine) -> None:
    status = window.controller.status
    assert status.state is State.RUNNING
    assert window.card.badge.text() == "Running"
    assert window.card.cpus.value.text() == str(status.cpus)
    assert gui_engine.host in window.connection.text()
    assert window.card.start_stop.isHidden()  # a host engine is not ours to stop


def test_images_table_lists_the_loaded_image(window, busybox_image) -> None:
    row = row_of(window.images, busybox_image)
    assert window.images.item(row, 2).text().endswith("MB")
    assert window.images.item(row, 1).text() != ""


def test_volume_made_with_the_cli_appears_from_events(
    qtbot, window, gui_engine
) -> None:
    require(gui_engine, "volume", "ls", what="volumes")
    name = unique("dygui-vol")

    def is_create(event: dict[str, Any]) -> bool:
        return event.get("Type") == "volume" and event.get("Action") == "create"

    with qtbot.waitSignal(
        window.controller.engineEvent, check_params_cb=is_create, timeout=10_000
    ):
        gui_engine.docker("volume", "create", name, check=True)
    qtbot.waitUntil(lambda: name in names(window.volumes), timeout=10_000)
    assert no_repeating_timers(window)

    window.tabs.setCurrentWidget(window.volumes_page)
    window.volumes.selectRow(row_of(window.volumes, name))
    window.remove_volume()
    qtbot.waitUntil(lambda: name not in names(window.volumes), timeout=10_000)
    assert gui_engine.docker("volume", "inspect", name).returncode != 0


def test_containers_are_listed_with_port_links(
    qtbot, window, gui_engine, busybox_image, monkeypatch
) -> None:
    name = unique("dygui-web")
    run_container(
        gui_engine,
        busybox_image,
        name,
        "httpd",
        "-f",
        "-p",
        "80",
        options=("-p", "127.0.0.1:18089:80"),
    )
    qtbot.waitUntil(lambda: name in names(window.containers), timeout=10_000)

    row = row_of(window.containers, name)
    assert window.containers.item(row, 1).text() == busybox_image
    assert window.containers.item(row, 2).text().startswith("Up")
    ports = window.containers.cellWidget(row, 3)
    assert isinstance(ports, QLabel)
    assert 'href="http://127.0.0.1:18089"' in ports.text()

    opened = []
    monkeypatch.setattr(
        "desktop.gui.dashboard.QDesktopServices.openUrl",
        lambda url: opened.append(url.toString()),
    )
    ports.linkActivated.emit("http://127.0.0.1:18089")
    assert opened == ["http://127.0.0.1:18089"]


def test_container_actions_from_the_dashboard(
    qtbot, window, gui_engine, busybox_image
) -> None:
    name = unique("dygui-sleep")
    # sleep as PID 1 ignores SIGTERM: stop would wait out the default 10 s.
    cid = run_container(
        gui_engine,
        busybox_image,
        name,
        "sleep",
        "3600",
        options=("--stop-timeout", "1"),
    )
    qtbot.waitUntil(lambda: name in names(window.containers), timeout=10_000)

    def state() -> str:
        return gui_engine.docker(
            "inspect", "-f", "{{.State.Status}}", cid
        ).stdout.strip()

    def status_cell() -> str:
        if name not in names(window.containers):
            return ""
        return window.containers.item(row_of(window.containers, name), 2).text()

    window.containers.selectRow(row_of(window.containers, name))
    with qtbot.waitSignal(window.actionDone, timeout=30_000):
        window._container_action("stop")
    assert state() == "exited"
    qtbot.waitUntil(lambda: status_cell().startswith("Exited"), timeout=10_000)

    window.containers.selectRow(row_of(window.containers, name))
    with qtbot.waitSignal(window.actionDone, timeout=30_000):
        window._container_action("start")
    assert state() == "running"
    qtbot.waitUntil(lambda: status_cell().startswith("Up"), timeout=10_000)

    window.containers.selectRow(row_of(window.containers, name))
    with qtbot.waitSignal(window.actionDone, timeout=30_000):
        window.delete_container()
    qtbot.waitUntil(lambda: name not in names(window.containers), timeout=10_000)


def test_cpu_and_memory_are_sampled_while_shown(
    qtbot, window, gui_engine, busybox_image
) -> None:
    name = unique("dygui-stats")
    cid = run_container(gui_engine, busybox_image, name, "sleep", "3600")
    with qtbot.waitSignal(
        window.statsLoaded,
        check_params_cb=lambda samples: cid in samples,
        timeout=20_000,
    ):
        pass
    row = row_of(window.containers, name)
    assert window.containers.item(row, 5).text() != "—"
    # The list is read again with each sample, for the "Up 5 seconds" text.
    with qtbot.waitSignal(window.containersLoaded, timeout=10_000):
        pass
    window.hide()
    assert not window._stats_timer.isActive()


def test_logs_view_follows_the_container(
    qtbot, window, gui_engine, busybox_image
) -> None:
    name = unique("dygui-logs")
    script = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done"
    run_container(gui_engine, busybox_image, name, "sh", "-c", script)
    qtbot.waitUntil(lambda: name in names(window.containers), timeout=10_000)
    window.containers.selectRow(row_of(window.containers, name))

    logs = window.open_logs()
    assert logs is not None
    qtbot.waitUntil(lambda: "line 1\n" in logs.text.toPlainText(), timeout=10_000)
    seen = logs.text.toPlainText().count("\n")
    # Lines written after the window opened arrive on their own.
    qtbot.waitUntil(
        lambda: logs.text.toPlainText().count("\n") >= seen + 3, timeout=10_000
    )
    # A quiet container must not time the follow out: no read timeout.
    assert logs.follower.client.api.timeout is None
    logs.close()
    assert logs.follower.isFinished()


def test_failed_pull_is_reported(qtbot, window) -> None:
    window.tabs.setCurrentWidget(window.images_page)
    window.pull_field.setText("127.0.0.1:1/dockyard/nothing:here")
    with qtbot.waitSignal(window.pullFinished, timeout=30_000) as finished:
        window.pull()
        assert not window.pull_button.isEnabled()
    reference, error = finished.args
    assert reference == "127.0.0.1:1/dockyard/nothing:here"
    assert error
    assert window.pull_button.isEnabled()
    assert window.pull_progress.isHidden()
    assert error in window.last_error


def test_run_and_remove_an_image_from_the_dashboard(
    qtbot, window, gui_engine, busybox_image
) -> None:
    tag = f"dygui-tag-{uuid.uuid4().hex[:6]}:1"
    gui_engine.docker("tag", busybox_image, tag, check=True)
    qtbot.waitUntil(lambda: tag in names(window.images), timeout=10_000)

    window.tabs.setCurrentWidget(window.images_page)
    window.images.selectRow(row_of(window.images, tag))
    with qtbot.waitSignal(window.actionDone, timeout=30_000):
        window.run_image()
    qtbot.waitUntil(
        lambda: (
            tag
            in [
                window.containers.item(r, 1).text()
                for r in range(window.containers.rowCount())
            ]
        ),
        timeout=10_000,
    )
    made = gui_engine.docker("ps", "-aq", "--filter", f"ancestor={tag}").stdout.split()
    gui_engine.docker("rm", "-f", *made, check=True)

    window.images.selectRow(row_of(window.images, tag))
    with qtbot.waitSignal(window.actionDone, timeout=30_000):
        window.remove_image()
    qtbot.waitUntil(lambda: tag not in names(window.images), timeout=10_000)


def test_terminal_opens_docker_exec_in_a_terminal(
    qtbot, window, gui_engine, busybox_image, tmp_path, monkeypatch
) -> None:
    """The terminal is a stand-in script named xterm that records its argv."""
    name = unique("dygui-term")
    cid = run_container(gui_engine, busybox_image, name, "sleep", "3600")
    qtbot.waitUntil(lambda: name in names(window.containers), timeout=10_000)

    record = tmp_path / "argv"
    fake = tmp_path / "bin" / "xterm"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    fake.chmod(0o755)
    window.containers.selectRow(row_of(window.containers, name))
    with monkeypatch.context() as patch:
        patch.setenv("PATH", f"{fake.parent}:/usr/local/bin:/usr/bin:/bin")
        window.open_terminal()
    qtbot.waitUntil(record.exists, timeout=10_000)
    qtbot.waitUntil(lambda: "exec" in record.read_text(), timeout=10_000)
    argv = record.read_text().splitlines()
    assert argv[0] == "-e"
    assert argv[2:7] == ["--host", gui_engine.host, "exec", "-it", cid]


def test_no_terminal_program_is_reported(
    qtbot, window, gui_engine, busybox_image, tmp_path, monkeypatch
) -> None:
    name = unique("dygui-noterm")
    run_container(gui_engine, busybox_image, name, "sleep", "3600")
    qtbot.waitUntil(lambda: name in names(window.containers), timeout=10_000)
    window.containers.selectRow(row_of(window.containers, name))
    with (
        monkeypatch.context() as patch,
        qtbot.waitSignal(window.errorShown, timeout=1000) as shown,
    ):
        patch.setenv("PATH", str(tmp_path))
        window.open_terminal()
    assert "No terminal program found" in shown.args[0]
    assert "exec -it" in shown.args[0]


@pytest.mark.registry
def test_pull_shows_progress_and_lists_the_image(
    qtbot, window, gui_engine, tmp_path
) -> None:
    """Layers of random bytes, so none of them is on the engine already."""
    from tests.support.registry import REGISTRY_BIN, RegistryProcess, layered_archive

    if not REGISTRY_BIN.exists():
        pytest.skip("needs Debian's docker-registry (/usr/bin/docker-registry)")
    with RegistryProcess(tmp_path / "registry") as registry:
        reference = f"{registry.host}/gui/random:1"
        layered_archive(tmp_path / "random.tar", reference, [3_000_000, 1_000_000])
        require(
            gui_engine, "load", "-i", str(tmp_path / "random.tar"), what="image load"
        )
        pushed = gui_engine.docker("push", reference)
        if pushed.returncode != 0:
            pytest.skip(f"engine cannot push yet: {pushed.stderr.strip()[:200]}")
        gui_engine.docker("rmi", reference, check=True)
        qtbot.waitUntil(lambda: reference not in names(window.images), timeout=10_000)

        window.tabs.setCurrentWidget(window.images_page)
        window.pull_field.setText(reference)
        seen: list[int] = []
        window.pull_progress.valueChanged.connect(seen.append)
        with qtbot.waitSignal(window.pullFinished, timeout=60_000) as finished:
            window.pull()
            assert window.pull_progress.isVisible()
        assert finished.args == [reference, ""]
        assert seen and max(seen) == 1000
        qtbot.waitUntil(lambda: reference in names(window.images), timeout=10_000)
        gui_engine.docker("rmi", reference)


def test_machine_mode_fills_the_tables_once_the_machine_runs(
    qtbot, gui_engine, busybox_image
) -> None:
    """The machine is fakes.FakeManager's (see fakes.py); its docker_host is
    the real engine, so the tables come from a real engine."""
    manager = FakeManager()
    manager.create(MachineConfig()).docker_host = gui_engine.host
    controller = MachineController(MachineBackend(MachineConfig(), manager=manager))
    window = DashboardWindow(controller, ask=always_yes)
    qtbot.addWidget(window)
    window.show()
    try:
        with qtbot.waitSignal(controller.statusChanged, timeout=10_000):
            controller.refresh()
        assert window.card.start_stop.text() == "Start"
        assert window.containers.isHidden()
        assert "Start the machine" in window.containers_page.empty.text()

        with qtbot.waitSignals(
            [controller.started, window.imagesLoaded], timeout=20_000
        ):
            window.card.start_stop.click()
        assert busybox_image in names(window.images)
        assert window.card.start_stop.text() == "Stop"
        assert window.card.uptime.value.text() == "42s"

        with qtbot.waitSignal(controller.stopped, timeout=10_000):
            window.card.start_stop.click()
        assert window.images.rowCount() == 0
        assert controller.client is None
    finally:
        window.close()
        controller.shutdown()
        wait_for_tasks()
