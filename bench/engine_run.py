"""Container lifecycle speed: Dockyard against Debian's dockerd, interleaved.

Both engines run side by side with the same busybox test image and are
driven by the same docker CLI, one run of each in turn so that machine
noise hits both alike:

- ``docker run --rm IMG true`` on the default bridge, and with
  ``--network none``;
- ``docker run -d IMG <a shell that exits on TERM>`` + ``docker stop`` +
  ``docker rm``.

Prints each median (ms) and Dockyard's ratio to dockerd::

    sudo .venv/bin/python -m bench.engine_run --runs 15

Needs root, Debian's docker.io (dockerd) and /work/shared/tools/dockerd-anchor.sh.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.engine import EngineProcess
from tests.support.images import BUSYBOX_REF, busybox_archive

ANCHOR = Path("/work/shared/tools/dockerd-anchor.sh")
# Exits at once on SIGTERM: `wait` is interrupted by the trapped signal.
SERVICE = ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]


def _docker(host: str, *args: str) -> str:
    env = {**os.environ, "DOCKER_HOST": host}
    env.pop("DOCKER_CONTEXT", None)
    result = subprocess.run(["docker", *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)} on {host} failed: {result.stderr}")
    return result.stdout.strip()


def _timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def scenarios(host: str) -> dict[str, Callable[[], None]]:
    def run_rm() -> None:
        _docker(host, "run", "--rm", BUSYBOX_REF, "true")

    def run_rm_none() -> None:
        _docker(host, "run", "--rm", "--network", "none", BUSYBOX_REF, "true")

    def run_stop_rm() -> None:
        cid = _docker(host, "run", "-d", BUSYBOX_REF, *SERVICE)
        _docker(host, "stop", cid)
        _docker(host, "rm", cid)

    return {
        "run --rm true (bridge)": run_rm,
        "run --rm true (--network none)": run_rm_none,
        "run -d + stop + rm (bridge)": run_stop_rm,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 1

    work = Path(tempfile.mkdtemp(prefix="dybench-run-", dir="/var/tmp"))
    # dockerd gives hard links their own (0644) mode: use the fixed archive.
    archive = busybox_archive(work / "busybox.tar")
    dockyard = EngineProcess(
        root=work / "dockyard",
        extra_args=["--bridge-name", "dybench0", "--bip", "172.29.251.1/24",
                    "--log-level", "info"],
    )  # fmt: skip
    anchor_dir = work / "dockerd"
    try:
        dockyard.start()
        anchor_host = subprocess.run(
            [str(ANCHOR), "start", str(anchor_dir)],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        hosts = {"dockyard": dockyard.host, "dockerd": anchor_host}
        for host in hosts.values():
            _docker(host, "load", "-i", str(archive))
        plans = {name: scenarios(host) for name, host in hosts.items()}
        times: dict[str, dict[str, list[float]]] = {
            name: {s: [] for s in plan} for name, plan in plans.items()
        }
        # One warm-up round, not counted.
        for plan in plans.values():
            for action in plan.values():
                action()
        for _ in range(args.runs):
            for scenario in plans["dockyard"]:
                for name in ("dockyard", "dockerd"):
                    times[name][scenario].append(_timed(plans[name][scenario]))

        print(
            f"{'scenario':34} {'dockyard':>10} {'dockerd':>10} {'ratio':>7}  (median ms, {args.runs} runs)"
        )
        for scenario in plans["dockyard"]:
            ours = statistics.median(times["dockyard"][scenario])
            theirs = statistics.median(times["dockerd"][scenario])
            print(f"{scenario:34} {ours:10.0f} {theirs:10.0f} {ours / theirs:7.2f}")
    finally:
        if dockyard.proc is not None:
            leftovers = (
                _docker(dockyard.host, "ps", "-aq").split() if dockyard.ping() else []
            )
            if leftovers:
                _docker(dockyard.host, "rm", "-f", *leftovers)
            dockyard.stop()
        subprocess.run([str(ANCHOR), "stop", str(anchor_dir)], capture_output=True)
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
