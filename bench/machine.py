"""Benchmark a Dockyard machine: start time by stage, port-forward and share throughput.

    sudo .venv/bin/python -m bench.machine [--size-mib 64] [--json out.json]
        [--warm N] [--starts-only] [--image DIR]

Builds the guest image (cached), creates a throwaway machine under a
temporary DOCKYARD_HOME, and measures:

- ``machine start`` to engine-ready, split by stage: the first start (engine
  wheel installed) and a warm start (engine already on the data disk);
- host -> container and container -> host throughput through a published
  port (host 127.0.0.1 -> forwarder -> SSH channel -> guest -> container);
- write and read throughput of a 9p share against the guest's own data disk
  (dd in the guest, page cache dropped before each read).

Everything runs on this machine; traffic stays on loopback and inside the VM.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from desktop.machine import MachineManager, MachineSpec, StageEvent
from desktop.machine.backend_qemu import ensure_libvirtd
from tests.support.images import BUSYBOX_REF, busybox_archive
from vmimage import DEFAULT_CACHE


def start_timings(machine) -> dict[str, float]:  # type: ignore[no-untyped-def]
    stages: dict[str, float] = {}
    began: dict[str, float] = {}

    def progress(event: StageEvent) -> None:
        if event.done:
            stages[event.stage] = round(
                event.elapsed - began.get(event.stage, event.elapsed), 2
            )
        else:
            began[event.stage] = event.elapsed

    installs = _installs(machine)
    t0 = time.monotonic()
    machine.start(progress=progress)
    stages["total"] = round(time.monotonic() - t0, 2)
    stages.pop("ready", None)
    # Another edit of engine/ between two starts makes a warm start install
    # the engine again: flag it rather than count it as warm.
    if _installs(machine) > installs:
        stages["installed_engine"] = 1.0
    return stages


def _installs(machine) -> int:  # type: ignore[no-untyped-def]
    try:
        return machine.log_path.read_text().count("[engine] installing engine")
    except OSError:
        return 0


def docker(machine, *args: str, check: bool = True) -> str:  # type: ignore[no-untyped-def]
    env = dict(os.environ, DOCKER_HOST=machine.docker_host)
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, env=env, timeout=300
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connect_when_ready(port: int, timeout: float = 30) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=60)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def port_throughput(machine, size: int, bind: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """``bind`` 127.0.0.1: the SSH-channel path; 0.0.0.0: QEMU's NAT path.

    Either way the benchmark connects to 127.0.0.1 only.
    """
    results = {}
    prefix = "127.0.0.1:" if bind == "127.0.0.1" else ""
    # Host -> container: the container's nc discards what it gets.
    port = free_port()
    docker(
        machine,
        "run",
        "-d",
        "--name",
        "sink",
        "-p",
        f"{prefix}{port}:9000",
        BUSYBOX_REF,
        "sh",
        "-c",
        "nc -l -p 9000 >/dev/null",
    )
    time.sleep(2)
    sock = connect_when_ready(port)
    chunk = b"\0" * (1 << 20)
    t0 = time.monotonic()
    for _ in range(size >> 20):
        sock.sendall(chunk)
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(65536):
        pass
    results["host_to_container_MBps"] = round(size / 2**20 / (time.monotonic() - t0), 1)
    sock.close()
    docker(machine, "rm", "-f", "sink", check=False)

    # Container -> host: busybox httpd sends a file in large writes. busybox
    # nc writes a few KiB at a time, which under TCG caps it at ~6 MB/s
    # even straight into QEMU's NAT: that measured nc, not the path.
    port = free_port()
    docker(
        machine,
        "run",
        "-d",
        "--name",
        "source",
        "-p",
        f"{prefix}{port}:9000",
        BUSYBOX_REF,
        "sh",
        "-c",
        f"mkdir -p /www && dd if=/dev/zero of=/www/big bs=1M count={size >> 20} "
        "2>/dev/null && httpd -f -p 9000 -h /www",
    )
    time.sleep(2)
    got = 0
    for _ in range(30):  # until httpd answers (the file is written first)
        sock = connect_when_ready(port)
        t0 = time.monotonic()
        got = 0
        try:
            sock.sendall(b"GET /big HTTP/1.0\r\n\r\n")
            while data := sock.recv(1 << 20):
                got += len(data)
        except OSError:
            got = 0
        elapsed = time.monotonic() - t0
        sock.close()
        if got >= size:
            break
        time.sleep(0.5)
    docker(machine, "rm", "-f", "source", check=False)
    results["container_to_host_MBps"] = round(got / 2**20 / elapsed, 1) if got else 0.0
    return results


def guest(machine, command: str) -> str:  # type: ignore[no-untyped-def]
    proc = subprocess.run(
        [*machine.ssh_command(), command], capture_output=True, text=True, timeout=600
    )
    return proc.stdout + proc.stderr


def dd_rate(output: str) -> float:
    match = re.search(r"copied, ([\d.]+) s", output)
    if not match:
        return 0.0
    size = re.search(r"^(\d+) bytes", output, re.M)
    return round(int(size.group(1)) / 2**20 / float(match.group(1)), 1) if size else 0.0


def share_throughput(machine, share: Path, size_mib: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    results = {}
    for label, folder in (("share_9p", str(share)), ("guest_disk", "/mnt/data")):
        path = f"{folder}/bench.bin"
        write = guest(
            machine, f"dd if=/dev/zero of={path} bs=1M count={size_mib} conv=fsync 2>&1"
        )
        read = guest(
            machine,
            f"sync; echo 3 > /proc/sys/vm/drop_caches; dd if={path} of=/dev/null bs=1M 2>&1; rm -f {path}",
        )
        results[f"{label}_write_MBps"] = dd_rate(write)
        results[f"{label}_read_MBps"] = dd_rate(read)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.machine")
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--warm", type=int, default=1, help="warm starts to time (the median is kept)"
    )
    parser.add_argument(
        "--starts-only", action="store_true", help="skip the throughput measurements"
    )
    parser.add_argument(
        "--image",
        type=Path,
        default=Path(os.environ.get("DOCKYARD_IMAGE", str(DEFAULT_CACHE))),
        help="guest image cache (built there if stale)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print(
            "bench.machine: run as root (libvirt system daemon, image build)",
            file=sys.stderr,
        )
        return 1
    ensure_libvirtd()
    import vmimage

    vmimage.build(args.image)
    home = Path(tempfile.mkdtemp(prefix="dybench-", dir="/var/tmp"))
    share = Path(tempfile.mkdtemp(prefix="dybshare-", dir="/var/tmp"))
    manager = MachineManager(home, image_dir=args.image)
    results: dict[str, object] = {}
    try:
        machine = manager.create(
            MachineSpec(cpus=2, memory_mib=2048, disk_gib=8, shares=[str(share)])
        )
        results["first_start_s"] = start_timings(machine)
        warm = []
        for _ in range(args.warm):
            machine.stop()
            warm.append(start_timings(machine))
        # The median by total of the truly warm runs; every total is kept
        # (an "i" marks a reinstall): TCG timings here are noisy.
        truly = [t for t in warm if "installed_engine" not in t] or warm
        results["warm_start_s"] = sorted(truly, key=lambda t: t["total"])[
            len(truly) // 2
        ]
        results["warm_totals_s"] = [
            f"{t['total']}{'i' if 'installed_engine' in t else ''}" for t in warm
        ]
        if args.starts_only:
            return _report(results, args.json)
        tar = busybox_archive(home / "busybox.tar")
        docker(machine, "load", "-i", str(tar))
        size = args.size_mib << 20
        for label, bind in (
            ("port_forward_ssh", "127.0.0.1"),
            ("port_forward_nat", "0.0.0.0"),
        ):
            try:
                results[label] = port_throughput(machine, size, bind)
            except Exception as err:  # the engine may not run containers yet
                results[label] = {"error": str(err)}
        results["share"] = share_throughput(machine, share, args.size_mib * 2)
    finally:
        if (home / "machines").is_dir():
            for status in manager.list():
                manager.remove(status.name, force=True)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(share, ignore_errors=True)
    return _report(results, args.json)


def _report(results: dict[str, object], path: Path | None) -> int:
    print(json.dumps(results, indent=2))
    if path:
        path.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
