"""The Hyper-V backend's exact PowerShell scripts, locally or over WinRM.

Hyper-V exists only on Windows, so it cannot run on this Linux test machine;
a recording runner stands in for powershell.exe / pywinrm and the tests
check the scripts it receives.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from desktop.machine.backend import VMConfig
from desktop.machine.backend_hyperv import HyperVBackend, WinRMRunner, ps_quote
from desktop.machine.errors import BackendError
from desktop.machine.files import MachineDir


class Recorder:
    def __init__(self, state: str = "") -> None:
        self.scripts: list[str] = []
        self.state = state

    def __call__(self, script: str) -> str:
        self.scripts.append(script)
        if script.startswith("(Get-VM"):
            return self.state + "\n"
        return ""


@pytest.fixture
def config(tmp_path: Path) -> VMConfig:
    return VMConfig(
        dirs=MachineDir(tmp_path, "default"),
        cpus=4,
        memory_mib=4096,
        kernel=Path("/img/vmlinux"),
        initrd=Path("/img/initramfs.img"),
        rootfs=Path("/img/rootfs.img"),
        cmdline="",
        ssh_port=40022,
        shares=["/home/alice"],
    )


def test_first_start_scripts(config: VMConfig) -> None:
    runner = Recorder(state="")
    HyperVBackend(runner).start(config)
    name = ps_quote(config.dirs.domain_name)
    state, create, share, configure, start = runner.scripts
    assert state == f"(Get-VM -Name {name} -ErrorAction SilentlyContinue).State\n"
    assert create.splitlines() == [
        "$ErrorActionPreference = 'Stop'",
        f"New-VM -Name {name} -Generation 2 -MemoryStartupBytes 4096MB -Path '{config.dirs.root}' -NoVHD -SwitchName 'Default Switch' | Out-Null",
        f"Set-VMFirmware -VMName {name} -EnableSecureBoot Off",
        f"Add-VMHardDiskDrive -VMName {name} -Path '/img/dockyard-boot.vhdx'",
        f"Add-VMHardDiskDrive -VMName {name} -Path '{config.dirs.root}/data.vhdx'",
        f"Set-VMComPort -VMName {name} -Number 1 -Path '\\\\.\\pipe\\{config.dirs.domain_name}-console'",
        f"Enable-VMIntegrationService -VMName {name} -Name 'Guest Service Interface'",
    ]
    assert "New-SmbShare -Name 'dyshare0'" in share
    assert configure.splitlines()[1:] == [
        f"Set-VMProcessor -VMName {name} -Count 4",
        f"Set-VMMemory -VMName {name} -DynamicMemoryEnabled $false -StartupBytes 4096MB",
    ]
    lines = start.splitlines()
    assert lines[1] == f"Start-VM -Name {name}"
    assert any(
        f"(Get-VMNetworkAdapter -VMName {name}).IPAddresses" in line for line in lines
    )
    assert (
        "netsh interface portproxy add v4tov4 listenaddress=127.0.0.1 listenport=40022 "
        "connectaddress=$ip connectport=22 | Out-Null"
    ) in lines


def test_existing_vm_is_only_configured_and_started(config: VMConfig) -> None:
    runner = Recorder(state="Off")
    HyperVBackend(runner).start(config)
    assert not any("New-VM" in s for s in runner.scripts)
    assert "Start-VM" in runner.scripts[-1]


def test_stop_kill_remove(config: VMConfig) -> None:
    runner = Recorder(state="Running")
    backend = HyperVBackend(runner)
    name = ps_quote(config.dirs.domain_name)
    assert backend.state(config.dirs) == "running"
    backend.shutdown(config.dirs)
    backend.kill(config.dirs)
    backend.remove(config.dirs)
    scripts = [s for s in runner.scripts if not s.startswith("(Get-VM")]
    assert scripts[0].splitlines()[1] == f"Stop-VM -Name {name} -Force"
    assert scripts[1].splitlines()[1] == f"Stop-VM -Name {name} -TurnOff -Force"
    assert f"Remove-VM -Name {name} -Force" in scripts[2]


def test_udp_ports_are_refused_with_a_reason(config: VMConfig) -> None:
    with pytest.raises(BackendError, match="cannot forward udp"):
        HyperVBackend(Recorder()).add_port(config.dirs, "udp", "127.0.0.1", 5353)


def test_quoting_doubles_single_quotes() -> None:
    assert ps_quote("C:\\Users\\o'brien") == "'C:\\Users\\o''brien'"


def test_winrm_runner_uses_pywinrm_session(monkeypatch: pytest.MonkeyPatch) -> None:
    import winrm

    seen: dict[str, object] = {}

    class Result:
        status_code = 0
        std_out = b"Running\r\n"
        std_err = b""

    class Session:
        def __init__(self, host: str, auth: tuple[str, str], transport: str) -> None:
            seen.update(host=host, auth=auth, transport=transport)

        def run_ps(self, script: str) -> Result:
            seen["script"] = script
            return Result()

    monkeypatch.setattr(winrm, "Session", Session)
    out = WinRMRunner("win.example", "alice", "secret")("(Get-VM -Name 'x').State")
    assert out == "Running\r\n"
    assert seen == {
        "host": "win.example",
        "auth": ("alice", "secret"),
        "transport": "ntlm",
        "script": "(Get-VM -Name 'x').State",
    }
