"""The ``dockyard machine`` CLI without booting: create, ls, status, inspect, env, rm, errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from desktop import cli


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("needs e2fsprogs for the data disk")
    monkeypatch.setenv("DOCKYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    return tmp_path / "home"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_ls_status_inspect_env_rm(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "machine",
        "create",
        "--cpus",
        "3",
        "--memory",
        "1536",
        "--disk",
        "2",
        "--share",
        str(tmp_path),
    )
    assert code == 0 and "created machine default" in out
    machine_dir = home / "machines" / "default"
    disk = machine_dir / "data.img"
    assert disk.stat().st_size == 2 * 2**30
    assert disk.stat().st_blocks * 512 < disk.stat().st_size / 8, (
        "the data disk must be sparse"
    )
    assert (machine_dir / "id_ed25519").stat().st_mode & 0o777 == 0o600
    assert (
        (machine_dir / "known_hosts")
        .read_text()
        .startswith("dockyard-default ssh-ed25519 ")
    )

    code, out, _ = run(capsys, "machine", "ls")
    assert code == 0
    assert out.splitlines()[1].split()[:4] == ["default", "stopped", "qemu", "3"]

    code, out, _ = run(capsys, "machine", "status")
    assert code == 0 and out.startswith("default: stopped")

    code, out, _ = run(capsys, "machine", "inspect")
    data = json.loads(out)
    assert data["Spec"] == {
        "name": "default",
        "cpus": 3,
        "memory_mib": 1536,
        "disk_gib": 2,
        "shares": [str(tmp_path)],
        "backend": "qemu",
    }
    assert data["Status"]["state"] == "stopped"
    assert data["Context"] == "dockyard"

    code, out, _ = run(capsys, "machine", "env")
    assert out.splitlines()[0] == f"export DOCKER_HOST=unix://{machine_dir}/docker.sock"

    code, out, err = run(capsys, "machine", "create")
    assert code == 1 and err == "dockyard: machine 'default' already exists\n"

    code, out, _ = run(capsys, "machine", "rm")
    assert code == 0
    assert not machine_dir.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["machine", "create", "--cpus", "0"], "--cpus must be between 1 and 64"),
        (["machine", "create", "Bad!"], "invalid machine name"),
        (["machine", "create", "--share", "/no/such/folder"], "not an existing folder"),
        (["machine", "start", "ghost"], "no machine named 'ghost'"),
        (["machine", "ssh"], "no machine named 'default'"),
    ],
)
def test_bad_input_is_one_clear_line(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert message in err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


def test_unknown_backend_is_an_argparse_error(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["machine", "create", "--backend", "xen"])
    assert exc.value.code == 2
    assert "invalid choice: 'xen'" in capsys.readouterr().err


def test_ssh_needs_a_running_machine(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "machine", "create", "dev", "--disk", "1", "--share", str(tmp_path))
    code, _, err = run(capsys, "machine", "ssh", "dev")
    assert code == 1 and err == "dockyard: machine 'dev' is not running\n"
    run(capsys, "machine", "rm", "dev")


def test_update_grows_the_disk_and_refuses_to_shrink(
    home: Path, tmp_path: Path
) -> None:
    from desktop.machine import MachineError, MachineManager, MachineSpec

    manager = MachineManager()
    machine = manager.create(
        MachineSpec(name="grow", disk_gib=1, shares=[str(tmp_path)])
    )
    machine.update(MachineSpec(name="grow", cpus=4, disk_gib=2, shares=[str(tmp_path)]))
    assert machine.spec.cpus == 4
    assert machine.dirs.data_disk.stat().st_size == 2 * 2**30
    with pytest.raises(MachineError, match="can only grow"):
        machine.update(MachineSpec(name="grow", disk_gib=1, shares=[str(tmp_path)]))
    manager.remove("grow")
    assert os.listdir(home / "machines") == []


def test_failed_start_names_the_stage_and_the_log(
    home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """VirtualBox is not installed here, so its boot stage fails: a real error path."""
    image = tmp_path / "image"
    image.mkdir()
    (image / "manifest.json").write_text(
        json.dumps(
            {
                "version": "1",
                "inputs": "old",
                "kernel_version": "6.1",
                "cmdline": "",
                "files": {},
                "built_at": 0,
            }
        )
    )
    monkeypatch.setenv("DOCKYARD_IMAGE", str(image))
    run(
        capsys,
        "machine",
        "create",
        "vb",
        "--backend",
        "virtualbox",
        "--disk",
        "1",
        "--share",
        str(tmp_path),
    )
    monkeypatch.setenv("PATH", str(tmp_path))  # no VBoxManage anywhere
    code, out, err = run(capsys, "machine", "start", "vb")
    assert code == 1
    assert "[boot       ] FAILED: VBoxManage was not found" in out
    log = home / "machines" / "vb" / "machine.log"
    assert (
        err.strip()
        == f"dockyard: VBoxManage was not found: install VirtualBox 7 (log: {log})"
    )
    code, out, _ = run(capsys, "machine", "status", "vb")
    assert "vb: error" in out and "boot stage failed" in out
    assert run(capsys, "machine", "rm", "vb")[0] == 0
