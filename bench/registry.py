"""Push and pull throughput against a local registry: Dockyard vs dockerd.

    sudo .venv/bin/python -m bench.registry [--layers 5] [--layer-mb 40] [--runs 3]

One run starts Debian's docker-registry on loopback, a Dockyard engine and
Debian's dockerd (as ``/work/shared/tools/dockerd-anchor.sh`` does, but with
``--bridge=none``: pushes and pulls need no container network, and the
anchor's fixed bridge may be in use by another benchmark), loads the same
multi-layer image of random data (about 200 MB) into both, and times with
the real docker CLI, for each engine, in rounds that alternate which engine
goes first, each round against a fresh registry:

- push: ``docker push`` of the loaded image (every layer compressed and
  uploaded, as neither engine has pushed it before);
- pull: ``docker rmi`` then ``docker pull`` of what that engine pushed.

MB/s counts the image's uncompressed layer bytes (random data does not
compress, so the wire carries about as much). Everything it started is
stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.engine import EngineProcess
from tests.support.images import busybox_rootfs_tar
from tests.support.registry import RegistryProcess, layered_archive


class Dockerd:
    """Debian's dockerd on its own socket, data root and exec root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [
                "dockerd",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "-H",
                self.host,
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "run"),
                "--pidfile",
                str(self.root / "dockerd.pid"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        env = {**os.environ, "DOCKER_HOST": self.host}
        for _ in range(150):
            probe = subprocess.run(["docker", "version"], env=env, capture_output=True)
            if probe.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"dockerd did not come up; see {self.root / 'dockerd.log'}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        subprocess.run(["umount", "-R", str(self.root / "data")], capture_output=True)


def docker(host: str, config: Path, *args: str, timeout: float = 600) -> float:
    """Run the docker CLI against ``host``; returns the seconds it took."""
    env = {**os.environ, "DOCKER_HOST": host, "DOCKER_CONFIG": str(config)}
    env.pop("DOCKER_CONTEXT", None)
    started = time.monotonic()
    result = subprocess.run(
        ["docker", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    took = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {result.stdout}\n{result.stderr}")
    return took


def measure(
    name: str, host: str, work: Path, archive: Path, ref: str, repo: str
) -> dict[str, float]:
    """One round for one engine: push the loaded image, then rmi and pull it."""
    config = work / f"{name}-cli"
    config.mkdir(exist_ok=True)
    docker(host, config, "load", "-i", str(archive))
    target = f"{repo}:1"
    docker(host, config, "tag", ref, target)
    push = docker(host, config, "push", target)
    docker(host, config, "rmi", target, ref)
    pull = docker(host, config, "pull", target)
    docker(host, config, "rmi", target)
    return {"push": push, "pull": pull}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--layer-mb", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-dockerd", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench.registry: needs root (both engines)", file=sys.stderr)
        return 1

    work = Path(tempfile.mkdtemp(prefix="dybench-reg-", dir="/var/tmp"))
    ref = "bench/registry:1"
    archive = work / "image.tar"
    size = layered_archive(
        archive,
        ref,
        [args.layer_mb * 1_000_000] * args.layers,
        base=busybox_rootfs_tar(),
    )
    mb = size / 1e6
    print(f"image: {args.layers + 1} layers, {mb:.0f} MB; {args.runs} rounds")

    engine = EngineProcess(
        root=work / "dockyard",
        extra_args=["--bridge-name", "dyregb0", "--bip", "172.29.251.1/24"],
    )
    dockerd = Dockerd(work / "dockerd")
    hosts = {"dockyard": engine.host}
    results: dict[str, list[dict[str, float]]] = {"dockyard": []}
    try:
        engine.start()
        if not args.skip_dockerd:
            dockerd.start()
            hosts["dockerd"] = dockerd.host
            results["dockerd"] = []
        for round_ in range(args.runs):
            # A fresh registry each round: every blob is uploaded again, no
            # engine can mount it from an earlier push.
            registry = RegistryProcess(work / f"registry-{round_}")
            registry.start()
            try:
                names = list(hosts)
                if round_ % 2:
                    names.reverse()
                for name in names:
                    repo = f"{registry.host}/bench/{name}"
                    results[name].append(
                        measure(name, hosts[name], work, archive, ref, repo)
                    )
            finally:
                registry.stop()
    finally:
        engine.stop()
        dockerd.stop()
        subprocess.run(["umount", "-R", str(work)], check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'engine':10} {'push MB/s':>10} {'pull MB/s':>10}  (medians)")
    medians: dict[str, dict[str, float]] = {}
    for name, rounds in results.items():
        medians[name] = {
            kind: statistics.median(r[kind] for r in rounds)
            for kind in ("push", "pull")
        }
        print(
            f"{name:10} {mb / medians[name]['push']:10.1f}"
            f" {mb / medians[name]['pull']:10.1f}"
        )
    if "dockerd" in medians:
        ours, theirs = medians["dockyard"], medians["dockerd"]
        print(
            f"{'ratio':10} {theirs['push'] / ours['push']:9.2f}x"
            f" {theirs['pull'] / ours['pull']:9.2f}x  (throughput, dockyard / dockerd)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
