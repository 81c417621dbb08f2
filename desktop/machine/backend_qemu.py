"""QEMU through libvirt: a transient domain with direct kernel boot.

The domain is created at start and vanishes at power-off, so a machine never
leaves a stale libvirt definition behind. Its shape::

    <domain type='qemu'>             (or 'kvm' when the boot probe proved it)
      kernel vmlinux + initramfs.img, console on ttyS0 -> console.log
      vda  rootfs.img  read-only, shared by every machine
      vdb  data.img    discard='unmap' so fstrim frees host blocks
      9p   one <filesystem> per share, tag dyshareN, mounted at the same path
      net  QEMU user networking; guest SSH on host 127.0.0.1:<port>

libvirt 9 has no hostfwd for plain user networking (only with passt), so the
NIC is given on QEMU's command line through libvirt's qemu namespace; the
same netdev takes ``hostfwd_add`` monitor commands for UDP published ports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import time
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from desktop.machine import accel
from desktop.machine.backend import VMConfig
from desktop.machine.errors import BackendError
from desktop.machine.files import MachineDir

log = logging.getLogger(__name__)

NETDEV = "dynet"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


def libvirt_uri() -> str:
    """``DOCKYARD_LIBVIRT_URI``, else the system daemon for root, session otherwise."""
    uri = os.environ.get("DOCKYARD_LIBVIRT_URI")
    if uri:
        return uri
    return "qemu:///system" if os.geteuid() == 0 else "qemu:///session"


def domain_xml(config: VMConfig, name: str | None = None, probe: bool = False) -> str:
    """The libvirt domain XML for ``config`` (pure: tests check it as text)."""
    dirs = config.dirs
    # libvirt names HVF's domain type after it; anything else runs as TCG.
    dom_type = config.accelerator if config.accelerator in ("kvm", "hvf") else "qemu"
    name = name or dirs.domain_name
    disks = ""
    filesystems = ""
    if not probe:
        disks = f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='threads'/>
      <source file={quoteattr(str(config.rootfs))}/>
      <target dev='vda' bus='virtio'/>
      <readonly/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='writeback' discard='unmap'/>
      <source file={quoteattr(str(dirs.data_disk))}/>
      <target dev='vdb' bus='virtio'/>
    </disk>"""
        for index, share in enumerate(config.shares):
            filesystems += f"""
    <filesystem type='mount' accessmode='passthrough'>
      <source dir={quoteattr(share)}/>
      <target dir='{config.share_tag(index)}'/>
    </filesystem>"""
    initrd = "" if probe else f"\n    <initrd>{escape(str(config.initrd))}</initrd>"
    # Running QEMU as root lets 9p write files as the guest's user and reach
    # root-only folders; libvirt would otherwise run it as libvirt-qemu.
    seclabel = ""
    if os.geteuid() == 0:
        seclabel = """
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>"""
    hostfwd = "" if probe else f",hostfwd=tcp:127.0.0.1:{config.ssh_port}-:22"
    cpu = (
        "<cpu mode='host-passthrough'/>"
        if dom_type != "qemu"
        else "<cpu mode='maximum'/>"
    )
    return f"""<domain type='{dom_type}' xmlns:qemu='{QEMU_NS}'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{256 if probe else config.memory_mib}</memory>
  <vcpu>{1 if probe else config.cpus}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{escape(str(config.kernel))}</kernel>{initrd}
    <cmdline>{escape(config.cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  {cpu}
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>{disks}{filesystems}
    <serial type='file'>
      <source path={quoteattr(str(dirs.console))}/>
      <target port='0'/>
    </serial>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <memballoon model='none'/>
  </devices>{seclabel}
  <qemu:commandline>
    <qemu:arg value='-netdev'/>
    <qemu:arg value='user,id={NETDEV}{hostfwd}'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='virtio-net-pci,netdev={NETDEV},bus=pcie.0,addr=0x0a'/>
  </qemu:commandline>
</domain>
"""


class QemuBackend:
    name = "qemu"

    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri or libvirt_uri()
        self._conn: Any = None

    def _connect(self) -> Any:
        try:
            import libvirt
        except ImportError as err:
            raise BackendError(
                "libvirt-python is not installed: pip install 'dockyard[desktop]'"
            ) from err
        if self._conn is None or not self._conn.isAlive():
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError:
                self._conn = None
            if (
                self._conn is None
                and self.uri == "qemu:///system"
                and os.geteuid() == 0
            ):
                # No service manager started it (containers, CI): start it here.
                ensure_libvirtd()
            try:
                self._conn = self._conn or libvirt.open(self.uri)
            except libvirt.libvirtError as err:
                raise BackendError(
                    f"cannot reach libvirt at {self.uri}: {err}. Is libvirtd running "
                    "(virtlogd -d; libvirtd -d)?"
                ) from err
        return self._conn

    def _domain(self, name: str) -> Any:
        import libvirt

        try:
            return self._connect().lookupByName(name)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise BackendError(f"libvirt: {err}") from err

    def accelerators(self) -> list[str]:
        return accel.candidates()

    def probe(self, accelerator: str, config: VMConfig, timeout: float) -> bool:
        """Boot the kernel alone under ``accelerator`` (see ``accel``)."""
        return accel.probe(accelerator, config.kernel, timeout)

    def start(self, config: VMConfig) -> None:
        import libvirt

        old = self._domain(config.dirs.domain_name)
        if old is not None:
            self._destroy(old)
        xml = domain_xml(config)
        (config.dirs.root / "domain.xml").write_text(xml)
        try:
            self._connect().createXML(xml)
        except libvirt.libvirtError as err:
            raise BackendError(f"libvirt could not start the VM: {err}") from err

    def _is_active(self, dom: Any) -> bool:
        import libvirt

        try:
            return bool(dom.isActive())
        except libvirt.libvirtError:
            return False

    def _destroy(self, dom: Any) -> None:
        import libvirt

        try:
            dom.destroy()
        except libvirt.libvirtError as err:
            if err.get_error_code() not in (
                libvirt.VIR_ERR_NO_DOMAIN,
                libvirt.VIR_ERR_OPERATION_INVALID,
            ):
                raise BackendError(f"libvirt: {err}") from err

    def state(self, dirs: MachineDir) -> str:
        dom = self._domain(dirs.domain_name)
        return "running" if dom is not None and self._is_active(dom) else "stopped"

    def shutdown(self, dirs: MachineDir) -> None:
        import libvirt

        dom = self._domain(dirs.domain_name)
        if dom is None:
            return
        try:
            dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        except libvirt.libvirtError as err:
            log.debug("ACPI shutdown of %s: %s", dirs.domain_name, err)

    def kill(self, dirs: MachineDir) -> None:
        for name in (dirs.domain_name, f"{dirs.domain_name}-probe"):
            dom = self._domain(name)
            if dom is not None:
                self._destroy(dom)

    def remove(self, dirs: MachineDir) -> None:
        self.kill(dirs)

    def _monitor(self, dirs: MachineDir, command: str) -> str:
        import libvirt
        import libvirt_qemu

        dom = self._domain(dirs.domain_name)
        if dom is None:
            raise BackendError("the VM is not running")
        try:
            reply: str = libvirt_qemu.qemuMonitorCommand(
                dom, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
            )
        except libvirt.libvirtError as err:
            raise BackendError(f"QEMU monitor: {err}") from err
        return reply.strip()

    def add_port(self, dirs: MachineDir, proto: str, host_ip: str, port: int) -> None:
        reply = self._monitor(
            dirs, f"hostfwd_add {NETDEV} {proto}:{host_ip}:{port}-:{port}"
        )
        if reply:
            raise BackendError(f"host port {host_ip}:{port}/{proto}: {reply}")

    def remove_port(
        self, dirs: MachineDir, proto: str, host_ip: str, port: int
    ) -> None:
        reply = self._monitor(dirs, f"hostfwd_remove {NETDEV} {proto}:{host_ip}:{port}")
        if reply and "removed" not in reply:
            log.debug("hostfwd_remove %s:%d/%s: %s", host_ip, port, proto, reply)


def create_backend() -> QemuBackend:
    return QemuBackend()


def ensure_libvirtd() -> None:
    """Start virtlogd and libvirtd when this host has no service manager doing it.

    Also gives /dev/kvm the group and mode udev normally sets (root:kvm
    0660). libvirt checks /dev/kvm as the unprivileged QEMU user but probes
    QEMU as root; where the device is root-only it finds the two disagree,
    throws its capability cache away on every call and re-probes, which
    makes each domain start take about 90 s. Raises ``BackendError``.
    """
    kvm = "/dev/kvm"
    if os.geteuid() == 0 and os.path.exists(kvm):
        import grp

        with contextlib.suppress(KeyError, OSError):
            st = os.stat(kvm)
            gid = grp.getgrnam("kvm").gr_gid
            if st.st_gid != gid or (st.st_mode & 0o060) != 0o060:
                os.chown(kvm, 0, gid)
                os.chmod(kvm, 0o660)
    for daemon in ("virtlogd", "libvirtd"):
        running = (
            subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode == 0
        )
        if running:
            continue
        if shutil.which(daemon) is None:
            raise BackendError(f"{daemon} is not installed: run scripts/install.sh")
        proc = subprocess.run([daemon, "-d"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BackendError(f"{daemon} did not start: {proc.stderr.strip()}")
    deadline = time.monotonic() + 10
    while not os.path.exists("/run/libvirt/libvirt-sock"):
        if time.monotonic() > deadline:
            raise BackendError("libvirtd started but its socket never appeared")
        time.sleep(0.1)
