"""Settings: validated against the host, persisted as JSON, start at login."""

from __future__ import annotations

import json
import plistlib
from pathlib import Path

import pytest

from desktop.gui import autostart_linux, autostart_macos
from desktop.gui.settings import (
    HOST_RESERVE_MIB,
    HostLimits,
    Settings,
    SettingsDialog,
    config_path,
    load,
    save,
    validate,
)

HOST = HostLimits(cpus=4, memory_mib=8192, disk_free_gib=100)


def test_defaults_fit_a_small_host() -> None:
    assert validate(Settings(), HOST) == []


def test_too_much_memory_is_refused() -> None:
    problems = validate(Settings(memory_mib=8192), HOST)
    assert len(problems) == 1
    assert "at most 7168 MiB" in problems[0]
    assert validate(Settings(memory_mib=8192 - HOST_RESERVE_MIB), HOST) == []


def test_more_cpus_than_the_host_is_refused() -> None:
    assert "between 1 and 4" in validate(Settings(cpus=5), HOST)[0]
    assert validate(Settings(cpus=0), HOST) != []


def test_missing_share_and_shrinking_disk_are_refused(tmp_path: Path) -> None:
    settings = Settings(shares=[str(tmp_path / "nope")], disk_gib=10)
    problems = validate(settings, HOST, current_disk_gib=20)
    assert any("does not exist" in p for p in problems)
    assert any("cannot shrink" in p for p in problems)


def test_real_host_limits_are_detected() -> None:
    host = HostLimits.detect()
    assert host.cpus >= 1
    assert host.memory_mib > 256


def test_settings_round_trip_through_json() -> None:
    settings = Settings(cpus=3, memory_mib=3072, shares=["/tmp"], start_machine=False)
    path = save(settings)
    assert path == config_path()
    assert json.loads(path.read_text())["memory_mib"] == 3072
    assert load() == settings


def test_unreadable_settings_fall_back_to_defaults() -> None:
    config_path().parent.mkdir(parents=True, exist_ok=True)
    config_path().write_text("{not json")
    assert load() == Settings()
    config_path().write_text(json.dumps({"cpus": 3, "from_the_future": 1}))
    assert load() == Settings(cpus=3)


def test_dialog_caps_the_spin_boxes_at_the_host(qtbot) -> None:
    dialog = SettingsDialog(Settings(), host=HOST)
    qtbot.addWidget(dialog)
    assert dialog.memory.maximum() == 8192 - HOST_RESERVE_MIB
    assert dialog.cpus.maximum() == 4
    dialog.memory.setValue(64_000)
    assert dialog.memory.value() == 8192 - HOST_RESERVE_MIB


def test_dialog_refuses_invalid_settings_and_saves_nothing(
    qtbot, tmp_path: Path
) -> None:
    dialog = SettingsDialog(Settings(shares=[str(tmp_path / "gone")]), host=HOST)
    qtbot.addWidget(dialog)
    saved = []
    dialog.saved.connect(lambda s, r: saved.append(s))
    dialog.accept()
    assert saved == []
    assert not config_path().exists()
    assert "does not exist" in dialog.problems.text()
    assert not dialog.problems.isHidden()


def test_dialog_saves_and_asks_for_a_restart_when_the_machine_runs(qtbot) -> None:
    dialog = SettingsDialog(Settings(), host=HOST, machine_running=True)
    qtbot.addWidget(dialog)
    dialog.cpus.setValue(3)
    dialog.memory.setValue(4096)
    with qtbot.waitSignal(dialog.saved, timeout=1000) as saved:
        dialog.accept()
    settings, restart = saved.args
    assert restart is True
    assert load() == settings
    assert (settings.cpus, settings.memory_mib) == (3, 4096)


def test_startup_options_need_no_restart(qtbot) -> None:
    dialog = SettingsDialog(Settings(), host=HOST, machine_running=True)
    qtbot.addWidget(dialog)
    dialog.start_machine.setChecked(False)
    with qtbot.waitSignal(dialog.saved, timeout=1000) as saved:
        dialog.accept()
    assert saved.args[1] is False


def test_start_at_login_writes_the_xdg_entry(qtbot) -> None:
    dialog = SettingsDialog(Settings(), host=HOST)
    qtbot.addWidget(dialog)
    dialog.start_at_login.setChecked(True)
    with qtbot.waitSignal(dialog.saved, timeout=1000):
        dialog.accept()
    entry = autostart_linux.entry_path()
    assert entry.exists()
    text = entry.read_text()
    assert "[Desktop Entry]" in text and "Exec=" in text

    dialog = SettingsDialog(load(), host=HOST)
    qtbot.addWidget(dialog)
    assert dialog.start_at_login.isChecked()
    dialog.start_at_login.setChecked(False)
    with qtbot.waitSignal(dialog.saved, timeout=1000):
        dialog.accept()
    assert not entry.exists()


def test_macos_launch_agent_file(tmp_path: Path) -> None:
    """The plist is plain file writing, so it is checked here too."""
    path = autostart_macos.set_autostart(True, ["/Applications/Dockyard"], tmp_path)
    agent = plistlib.loads(path.read_bytes())
    assert agent["ProgramArguments"] == ["/Applications/Dockyard"]
    assert agent["RunAtLoad"] is True
    autostart_macos.set_autostart(False, [], tmp_path)
    assert not path.exists()


@pytest.mark.parametrize("backend", ["host"])
def test_host_backend_skips_machine_limits(backend: str) -> None:
    assert validate(Settings(backend=backend, memory_mib=10**7), HOST) == []


def test_dialog_refuses_to_shrink_an_existing_disk(qtbot) -> None:
    dialog = SettingsDialog(Settings(disk_gib=20), host=HOST, current_disk_gib=20)
    qtbot.addWidget(dialog)
    dialog.disk.setValue(10)
    dialog.accept()
    assert "cannot shrink" in dialog.problems.text()
    assert not config_path().exists()
