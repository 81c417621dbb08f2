"""Hyper-V through PowerShell, run locally or on a Windows host over WinRM.

Hyper-V boots ``dockyard-boot.vhdx`` (made by the Packer template from the
same guest) as a generation 2 VM on the "Default Switch". The guest's SSH is
published on the host's loopback with ``netsh interface portproxy``, so the
machine layer reaches it at 127.0.0.1:<port> as with the other backends.
Scripts are built by pure functions; tests check their exact text::

    create_script("dockyard-default", config)
    -> "$ErrorActionPreference = 'Stop'\\nNew-VM -Name 'dockyard-default' ..."

Limits: Hyper-V's NAT has no UDP forwarding from the host's loopback, so
published UDP ports raise ``BackendError``; shares are SMB shares
(``New-SmbShare``) the guest mounts with cifs.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import PureWindowsPath

from desktop.machine.backend import VMConfig
from desktop.machine.errors import BackendError
from desktop.machine.files import MachineDir

log = logging.getLogger(__name__)

Runner = Callable[[str], str]
SWITCH = "Default Switch"


def ps_quote(value: str) -> str:
    """A PowerShell single-quoted literal."""
    return "'" + value.replace("'", "''") + "'"


def run_local(script: str) -> str:
    """Run ``script`` with the local powershell.exe; raises ``BackendError``."""
    exe = shutil.which("powershell.exe") or shutil.which("pwsh")
    if exe is None:
        raise BackendError("PowerShell was not found: the hyperv backend needs Windows")
    proc = subprocess.run(
        [
            exe,
            "-NoProfile",
            "-NonInteractive",
            "-ExecutionPolicy",
            "Bypass",
            "-Command",
            script,
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise BackendError(f"PowerShell failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout


class WinRMRunner:
    """Run scripts on a remote Windows host with pywinrm (NTLM by default)."""

    def __init__(
        self, host: str, user: str, password: str, transport: str = "ntlm"
    ) -> None:
        self.host = host
        self.user = user
        self.password = password
        self.transport = transport

    def __call__(self, script: str) -> str:
        try:
            import winrm
        except ImportError as err:
            raise BackendError(
                "pywinrm is not installed: pip install 'dockyard[desktop]'"
            ) from err
        session = winrm.Session(
            self.host, auth=(self.user, self.password), transport=self.transport
        )
        result = session.run_ps(script)
        if result.status_code != 0:
            raise BackendError(
                f"PowerShell on {self.host} failed: {result.std_err.decode(errors='replace').strip()[-500:]}"
            )
        return str(result.std_out.decode(errors="replace"))


def _header() -> str:
    return "$ErrorActionPreference = 'Stop'\n"


def create_script(
    name: str, config: VMConfig, boot_vhdx: str, data_vhdx: str, folder: str
) -> str:
    n = ps_quote(name)
    return (
        _header()
        + "\n".join(
            [
                f"New-VM -Name {n} -Generation 2 -MemoryStartupBytes {config.memory_mib}MB "
                f"-Path {ps_quote(folder)} -NoVHD -SwitchName {ps_quote(SWITCH)} | Out-Null",
                f"Set-VMFirmware -VMName {n} -EnableSecureBoot Off",
                f"Add-VMHardDiskDrive -VMName {n} -Path {ps_quote(boot_vhdx)}",
                f"Add-VMHardDiskDrive -VMName {n} -Path {ps_quote(data_vhdx)}",
                f"Set-VMComPort -VMName {n} -Number 1 -Path {ps_quote(console_pipe(name))}",
                f"Enable-VMIntegrationService -VMName {n} -Name 'Guest Service Interface'",
            ]
        )
        + "\n"
    )


def console_pipe(name: str) -> str:
    return f"\\\\.\\pipe\\{name}-console"


def configure_script(name: str, config: VMConfig) -> str:
    n = ps_quote(name)
    return (
        _header()
        + "\n".join(
            [
                f"Set-VMProcessor -VMName {n} -Count {config.cpus}",
                f"Set-VMMemory -VMName {n} -DynamicMemoryEnabled $false -StartupBytes {config.memory_mib}MB",
            ]
        )
        + "\n"
    )


def start_script(name: str, ssh_port: int) -> str:
    """Start the VM, wait for its address, publish its SSH on 127.0.0.1."""
    n = ps_quote(name)
    return (
        _header()
        + "\n".join(
            [
                f"Start-VM -Name {n}",
                "$ip = $null",
                "for ($i = 0; $i -lt 120 -and -not $ip; $i++) {",
                f"  $ip = (Get-VMNetworkAdapter -VMName {n}).IPAddresses | "
                "Where-Object { $_ -match '^\\d+\\.\\d+\\.\\d+\\.\\d+$' } | Select-Object -First 1",
                "  if (-not $ip) { Start-Sleep -Milliseconds 500 }",
                "}",
                "if (-not $ip) { throw 'the VM got no IPv4 address on the Default Switch' }",
                f"netsh interface portproxy delete v4tov4 listenaddress=127.0.0.1 listenport={ssh_port} | Out-Null",
                f"netsh interface portproxy add v4tov4 listenaddress=127.0.0.1 listenport={ssh_port} "
                "connectaddress=$ip connectport=22 | Out-Null",
                "Write-Output $ip",
            ]
        )
        + "\n"
    )


def state_script(name: str) -> str:
    return f"(Get-VM -Name {ps_quote(name)} -ErrorAction SilentlyContinue).State\n"


def stop_script(name: str, force: bool) -> str:
    flags = " -TurnOff -Force" if force else " -Force"
    return _header() + f"Stop-VM -Name {ps_quote(name)}{flags}\n"


def remove_script(name: str) -> str:
    n = ps_quote(name)
    return _header() + (
        f"if (Get-VM -Name {n} -ErrorAction SilentlyContinue) {{\n"
        f"  Stop-VM -Name {n} -TurnOff -Force -ErrorAction SilentlyContinue\n"
        f"  Remove-VM -Name {n} -Force\n"
        "}\n"
    )


def share_script(tag: str, path: str) -> str:
    """Share a host folder over SMB for the guest's cifs mount."""
    return _header() + (
        f"if (-not (Get-SmbShare -Name {ps_quote(tag)} -ErrorAction SilentlyContinue)) {{\n"
        f"  New-SmbShare -Name {ps_quote(tag)} -Path {ps_quote(str(PureWindowsPath(path)))} "
        "-FullAccess $env:USERNAME | Out-Null\n}\n"
    )


class HyperVBackend:
    name = "hyperv"

    def __init__(self, runner: Runner = run_local) -> None:
        self.runner = runner

    def accelerators(self) -> list[str]:
        return []

    def probe(self, accelerator: str, config: VMConfig, timeout: float) -> bool:
        return False

    def start(self, config: VMConfig) -> None:
        name = config.dirs.domain_name
        state = self.runner(state_script(name)).strip()
        if not state:
            boot = str(config.rootfs.with_name("dockyard-boot.vhdx"))
            data = str(config.dirs.data_disk.with_suffix(".vhdx"))
            self.runner(create_script(name, config, boot, data, str(config.dirs.root)))
            for index, share in enumerate(config.shares):
                self.runner(share_script(config.share_tag(index), share))
        self.runner(configure_script(name, config))
        self.runner(start_script(name, config.ssh_port))

    def state(self, dirs: MachineDir) -> str:
        try:
            out = self.runner(state_script(dirs.domain_name)).strip()
        except BackendError:
            return "stopped"
        return "running" if out in ("Running", "Starting", "Paused") else "stopped"

    def shutdown(self, dirs: MachineDir) -> None:
        self.runner(stop_script(dirs.domain_name, force=False))

    def kill(self, dirs: MachineDir) -> None:
        if self.state(dirs) == "running":
            self.runner(stop_script(dirs.domain_name, force=True))

    def remove(self, dirs: MachineDir) -> None:
        self.runner(remove_script(dirs.domain_name))

    def add_port(self, dirs: MachineDir, proto: str, host_ip: str, port: int) -> None:
        # TCP ports travel over the forwarder's SSH connection; only UDP
        # would need the hypervisor, and Hyper-V's NAT cannot do it.
        raise BackendError(f"Hyper-V cannot forward {proto} port {port} from the host")

    def remove_port(
        self, dirs: MachineDir, proto: str, host_ip: str, port: int
    ) -> None:
        return None


def create_backend() -> HyperVBackend:
    return HyperVBackend()
