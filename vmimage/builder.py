"""Build Dockyard's guest image from Debian's archive, cached by its inputs.

The guest is four files plus a manifest::

    vmlinux          the kernel, uncompressed (QEMU boots it through PVH, ~6 s
                     faster under TCG than decompressing vmlinuz)
    vmlinuz          the same kernel as Debian ships it (for other loaders)
    initramfs.img    busybox and the ~20 modules needed to mount the root
    rootfs.img       read-only ext4: Debian 12 minbase + python3, crun, conmon,
                     iproute2, nftables, openssh-server and the small init
    manifest.json    version, inputs hash, kernel version, sha256 of each file

``build(output)`` reuses ``output`` when its manifest's inputs hash matches
the recipe (package list, mirror, guest files, this module) and every file
still has its recorded size, so tests and CI pay for mmdebstrap once.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import lzma
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

IMAGE_VERSION = "1"
# The guest's root user lives here, not in /root: the host's home is shared
# at its own path, and a host user who is root (a server, CI) would
# otherwise shadow the guest's /root, so every SSH command's bash would
# read the host's .bashrc over 9p and run the host's binaries from its PATH.
GUEST_ROOT_HOME = "/var/lib/dockyard-root"
SUITE = "bookworm"
KERNEL_FLAVOUR = "amd64"
DEFAULT_CACHE = Path("/var/cache/dockyard/vmimage")
GUEST_DIR = Path(__file__).parent / "guest"

PACKAGES = [
    "python3",
    "python3-pyroute2",
    "python3-zstandard",
    "crun",
    "conmon",
    "iproute2",
    "nftables",
    "iptables",
    "openssh-server",
    "kmod",
    "busybox-static",
    "ca-certificates",
    "e2fsprogs",
]

# Loaded by the initramfs, in dependency order (resolved from modules.dep):
# only what mounting the root needs. 9p, bridge and netfilter load later
# from the root, in one modprobe run (dockyard-init's LATE_MODULES).
INITRAMFS_MODULES = [
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_rng",
    "crc32c_generic",
    "ext4",
    "overlay",
]
# Disk drivers of the other hypervisors, loaded only where present
# (VirtualBox: AHCI; Hyper-V: VMBus storage and network).
INITRAMFS_OPTIONAL = [
    "ahci",
    "sd_mod",
    "hv_vmbus",
    "hv_storvsc",
    "hv_netvsc",
    "hv_utils",
]

# Kernel modules kept in the root: the engine's needs (netfilter, bridge,
# veth, overlay, filesystems), not hardware drivers a VM never sees.
MODULE_DIRS_KEPT = (
    "kernel/block",  # t10-pi: sd_mod (VirtualBox's AHCI disks) cannot load without it
    "kernel/fs",
    "kernel/net",
    "kernel/lib",
    "kernel/crypto",
    "kernel/arch",
)
MODULE_DRIVERS_KEPT = (
    "kernel/drivers/virtio",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/drivers/block/loop.ko",
    "kernel/drivers/net/virtio_net.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/drivers/net/veth.ko",
    "kernel/drivers/net/tun.ko",
    "kernel/drivers/net/dummy.ko",
    "kernel/drivers/net/macvlan.ko",
    "kernel/drivers/net/ipvlan",
    "kernel/drivers/net/vxlan",
    "kernel/drivers/char/hw_random",
    "kernel/drivers/input/evdev.ko",
    "kernel/drivers/acpi/button.ko",
    "kernel/drivers/ata",
    "kernel/drivers/scsi",
    "kernel/drivers/hv",
    "kernel/drivers/net/hyperv",
    "kernel/drivers/virt/vboxguest",
)

CMDLINE = "console=ttyS0 quiet loglevel=3 panic=-1 rw"


class BuildError(Exception):
    """The guest image could not be built; the message says which step failed."""


@dataclass
class Manifest:
    version: str
    inputs: str
    kernel_version: str
    cmdline: str
    files: dict[str, dict[str, object]]
    built_at: float

    @classmethod
    def load(cls, path: Path) -> Manifest:
        data = json.loads(path.read_text())
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)


def mirror() -> str:
    """The Debian mirror apt is configured with here (deb.debian.org by default)."""
    for source in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in source.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                uri = line.split(None, 1)[1].strip()
                if "debian" in uri:
                    return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def inputs_hash() -> str:
    """Hash of everything that decides the image's content."""
    digest = hashlib.sha256()
    digest.update(f"{IMAGE_VERSION}\n{SUITE}\n{KERNEL_FLAVOUR}\n{mirror()}\n".encode())
    digest.update("\n".join(PACKAGES + INITRAMFS_MODULES + INITRAMFS_OPTIONAL).encode())
    digest.update(CMDLINE.encode())
    for path in sorted([Path(__file__), *GUEST_DIR.iterdir()]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cached(output: Path) -> Manifest | None:
    """The manifest in ``output`` if it matches the current recipe."""
    try:
        manifest = Manifest.load(output / "manifest.json")
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if manifest.inputs != inputs_hash():
        return None
    for name, info in manifest.files.items():
        try:
            if (output / name).stat().st_size != info["size"]:
                return None
        except OSError:
            return None
    return manifest


def verify(output: Path) -> None:
    """Check every file against the manifest's sha256; raise ``BuildError``."""
    manifest = Manifest.load(output / "manifest.json")
    for name, info in manifest.files.items():
        if _sha256(output / name) != info["sha256"]:
            raise BuildError(f"{output / name} does not match its manifest hash")


def build(
    output: Path = DEFAULT_CACHE,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Build the guest image into ``output`` unless a matching one is there.

    Raises ``BuildError`` naming the failed step.
    """
    say = progress or (lambda msg: log.info("%s", msg))
    output = output.absolute()
    if not force and (manifest := cached(output)) is not None:
        say(f"guest image {output} is up to date (inputs {manifest.inputs[:12]})")
        return manifest
    if os.geteuid() != 0:
        raise BuildError("building the guest image needs root (mmdebstrap --mode=root)")
    for tool in ("mmdebstrap", "mkfs.ext4"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} is not installed: run scripts/install.sh")

    output.mkdir(parents=True, exist_ok=True)
    # Tests, CI and the desktop may build at once: one builds, the others
    # wait and then find the cache fresh.
    with (output / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and (manifest := cached(output)) is not None:
            return manifest
        return _build_locked(output, say)


def _build_locked(output: Path, say: Callable[[str], None]) -> Manifest:
    # Hashed before building: files edited during the build must not be
    # recorded as built.
    inputs = inputs_hash()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dyimage-", dir=output.parent) as tmp:
        work = Path(tmp)
        root = work / "root"
        say("debootstrapping Debian 12 with mmdebstrap")
        _debootstrap(root, work / "kernel")
        kernel_version = _install_kernel(root, work / "kernel")
        say(f"kernel {kernel_version}: unpacking vmlinux, building initramfs")
        staging = work / "out"
        staging.mkdir()
        vmlinuz = root / "boot" / f"vmlinuz-{kernel_version}"
        shutil.copyfile(vmlinuz, staging / "vmlinuz")
        (staging / "vmlinux").write_bytes(extract_vmlinux(vmlinuz.read_bytes()))
        _write_initramfs(root, kernel_version, staging / "initramfs.img")
        _customize(root, kernel_version)
        say("writing the read-only root filesystem")
        _make_rootfs(root, staging / "rootfs.img")

        files = {}
        for path in sorted(staging.iterdir()):
            files[path.name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
        manifest = Manifest(
            version=IMAGE_VERSION,
            inputs=inputs,
            kernel_version=kernel_version,
            cmdline=CMDLINE,
            files=files,
            built_at=time.time(),
        )
        (output / "manifest.json").unlink(missing_ok=True)
        for path in staging.iterdir():
            path.replace(output / path.name)
        manifest.save(output / "manifest.json")
    say(f"guest image built in {time.monotonic() - started:.0f} s: {output}")
    return manifest


def _run(argv: list[str], step: str) -> str:
    log.debug("running %s", argv)
    proc = subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise BuildError(f"{step} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return proc.stdout


def _debootstrap(root: Path, kernel_dir: Path) -> None:
    kernel_dir.mkdir()
    base = mirror()
    security = base.replace("/debian", "/debian-security")
    # The kernel is unpacked rather than installed: installing it would pull
    # in initramfs-tools and run it, and Dockyard makes its own initramfs.
    fetch_kernel = (
        'chroot "$1" sh -c \'cd /tmp && apt-get download -q '
        f"$(apt-cache depends linux-image-{KERNEL_FLAVOUR} | "
        'sed -n "s/.*Depends: \\(linux-image-[0-9].*\\)/\\1/p")\' && '
        f'mv "$1"/tmp/linux-image-*.deb {kernel_dir}/'
    )
    excludes = [
        f"--dpkgopt=path-exclude=/usr/share/{d}/*"
        for d in ("doc", "man", "locale", "info", "lintian", "linda")
    ]
    _run(
        [
            "mmdebstrap",
            "--mode=root",
            "--variant=minbase",
            "--include=" + ",".join(PACKAGES),
            *excludes,
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            f"--customize-hook={fetch_kernel}",
            SUITE,
            str(root),
            f"deb {base} {SUITE} main",
            f"deb {base} {SUITE}-updates main",
            f"deb {security} {SUITE}-security main",
        ],
        "mmdebstrap",
    )


def _install_kernel(root: Path, kernel_dir: Path) -> str:
    debs = sorted(kernel_dir.glob("linux-image-*.deb"))
    if not debs:
        raise BuildError("mmdebstrap did not fetch a kernel package")
    # Unpacked aside: extracting over the root would replace merged-/usr's
    # /lib symlink with a directory.
    unpacked = kernel_dir / "unpacked"
    _run(["dpkg-deb", "-x", str(debs[-1]), str(unpacked)], "unpacking the kernel")
    (root / "usr/lib/modules").mkdir(parents=True, exist_ok=True)
    for moddir_src in (unpacked / "lib/modules").iterdir():
        shutil.move(moddir_src, root / "usr/lib/modules" / moddir_src.name)
    (root / "boot").mkdir(exist_ok=True)
    for boot_file in (unpacked / "boot").iterdir():
        shutil.move(boot_file, root / "boot" / boot_file.name)
    versions = sorted(p.name for p in (root / "usr/lib/modules").iterdir())
    if not versions:
        raise BuildError("the kernel package has no modules")
    version = versions[-1]
    moddir = root / "lib/modules" / version
    for path in sorted((moddir / "kernel").rglob("*.ko"), reverse=True):
        rel = str(path.relative_to(moddir))
        if rel.startswith(MODULE_DIRS_KEPT) or rel.startswith(MODULE_DRIVERS_KEPT):
            continue
        path.unlink()
    _run(["chroot", str(root), "/sbin/depmod", "-a", version], "depmod")
    return version


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed ELF kernel inside a bzImage (Debian compresses with xz).

    Raises ``BuildError`` when no xz stream in it decompresses to an ELF file.
    """
    start = 0
    while (start := bzimage.find(b"\xfd7zXZ\x00", start)) >= 0:
        try:
            data = lzma.LZMADecompressor().decompress(bzimage[start:])
        except lzma.LZMAError:
            start += 1
            continue
        if data[:4] == b"\x7fELF":
            return data
        start += 1
    raise BuildError("no xz-compressed ELF kernel found in vmlinuz")


def _module_order(moddir: Path, wanted: list[str]) -> list[str]:
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[Path(path).name.removesuffix(".ko").replace("-", "_")] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise BuildError(f"kernel module {name} is missing from the kernel package")
        visit(by_name[name])
    return order


def _write_initramfs(root: Path, kernel_version: str, target: Path) -> None:
    moddir = root / "lib/modules" / kernel_version
    available = {p.stem.replace("-", "_") for p in moddir.rglob("*.ko")}
    optional = [m for m in INITRAMFS_OPTIONAL if m in available]
    required = _module_order(moddir, INITRAMFS_MODULES)
    # The other hypervisors' drivers load only on their boot disks (which
    # say dockyard.root=): under QEMU, AHCI probing six empty ports and the
    # Hyper-V modules failing to bind cost ~1.5 s of TCG boot.
    extra = [m for m in _module_order(moddir, optional) if m not in required]
    entries: list[tuple[str, bytes | None, int]] = []
    for d in ("bin", "dev", "proc", "sys", "modules"):
        entries.append((d, None, stat.S_IFDIR | 0o755))
    entries.append(
        ("bin/busybox", (root / "bin/busybox").read_bytes(), stat.S_IFREG | 0o755)
    )
    init = (GUEST_DIR / "initramfs-init").read_bytes()
    entries.append(("init", init, stat.S_IFREG | 0o755))
    for list_name, order in (("modules.list", required), ("modules-other.list", extra)):
        names = []
        for rel in order:
            name = Path(rel).name
            names.append(name)
            entries.append(
                (f"modules/{name}", (moddir / rel).read_bytes(), stat.S_IFREG | 0o644)
            )
        text = "".join(f"{name}\n" for name in names)
        entries.append((list_name, text.encode(), stat.S_IFREG | 0o644))
    entries.append(("dev/console", None, stat.S_IFCHR | 0o600))
    target.write_bytes(_cpio(entries))


def _cpio(entries: list[tuple[str, bytes | None, int]]) -> bytes:
    """A newc cpio archive, as the kernel unpacks into its initramfs."""
    out = io.BytesIO()

    def add(ino: int, name: str, data: bytes, mode: int, rdev: tuple[int, int]) -> None:
        namez = name.encode() + b"\0"
        fields = [
            ino,
            mode,
            0,
            0,
            1,
            0,
            len(data),
            0,
            0,
            rdev[0],
            rdev[1],
            len(namez),
            0,
        ]
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + namez)
        out.write(b"\0" * (-out.tell() % 4))
        out.write(data)
        out.write(b"\0" * (-out.tell() % 4))

    for ino, (name, data, mode) in enumerate(entries, start=1):
        rdev = (5, 1) if name == "dev/console" else (0, 0)
        add(ino, name, data or b"", mode, rdev)
    add(0, "TRAILER!!!", b"", 0, (0, 0))
    return out.getvalue()


def _customize(root: Path, kernel_version: str) -> None:
    init = root / "sbin/dockyard-init"
    shutil.copyfile(GUEST_DIR / "dockyard-init", init)
    init.chmod(0o755)
    (root / "etc/dockyard").mkdir(exist_ok=True)
    shutil.copyfile(GUEST_DIR / "sshd_config", root / "etc/dockyard/sshd_config")
    hook = root / "etc/dockyard/udhcpc.sh"
    shutil.copyfile(GUEST_DIR / "udhcpc.sh", hook)
    hook.chmod(0o755)
    (root / "etc/hostname").write_text("dockyard\n")
    (root / "etc/dockyard/image-version").write_text(
        f"{IMAGE_VERSION} {kernel_version}\n"
    )
    for d in ("mnt/data", "var/lib/dockyard", "run/dockyard"):
        (root / d).mkdir(parents=True, exist_ok=True)
    _move_root_home(root)
    # Keys come from the data disk; the package made some at install time.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")
    for junk in ("var/lib/apt/lists", "var/cache/apt", "var/log", "boot"):
        path = root / junk
        if path.exists():
            shutil.rmtree(path)
            path.mkdir()
    (root / "var/log/apt").mkdir(parents=True, exist_ok=True)


def _move_root_home(root: Path) -> None:
    """Give the guest's root user ``GUEST_ROOT_HOME`` with Debian's dot files."""
    home = root / GUEST_ROOT_HOME.lstrip("/")
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in (".bashrc", ".profile"):
        source = root / "root" / name
        if source.exists():
            shutil.copyfile(source, home / name)
    passwd = root / "etc/passwd"
    lines = passwd.read_text().splitlines()
    for index, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root":
            fields[5] = GUEST_ROOT_HOME
            lines[index] = ":".join(fields)
    passwd.write_text("\n".join(lines) + "\n")


def _make_rootfs(root: Path, target: Path) -> None:
    used = sum(p.lstat().st_size for p in root.rglob("*") if not p.is_symlink())
    size_mib = int(used * 1.25 / 2**20) + 64
    _run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "dockyard-root",
            "-O",
            "^has_journal",
            "-m",
            "0",
            "-d",
            str(root),
            str(target),
            f"{size_mib}M",
        ],
        "mkfs.ext4 of the root image",
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
