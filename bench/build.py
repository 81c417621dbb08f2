"""Cold and cached ``docker build`` on Dockyard against dockerd's legacy builder.

Both engines run side by side on this machine, get the same busybox image
and build the same Dockerfile (RUN and COPY steps) through the same docker
CLI with ``DOCKER_BUILDKIT=0``:

- cold: ``docker build --no-cache`` (every step runs);
- cached: the same build again (every step from the cache).

Prints the median wall time of each and Dockyard's ratio to dockerd::

    sudo .venv/bin/python -m bench.build --runs 5

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
from pathlib import Path

from tests.support.engine import EngineProcess
from tests.support.images import busybox_archive

ANCHOR = Path("/work/shared/tools/dockerd-anchor.sh")
Timings = tuple[list[float], list[float]]  # (cold, cached) seconds
IMAGE = "dockyard-test/busybox:latest"
DOCKERFILE = """\
FROM dockyard-test/busybox
ENV APP_HOME=/app
WORKDIR /app
RUN mkdir -p /opt/deps && echo dep > /opt/deps/installed
COPY requirements.txt /app/
RUN cat /app/requirements.txt > /opt/deps/list
COPY src /app/src
RUN ls -R /app/src > /app/manifest
CMD ["sh", "-c", "cat /app/manifest"]
"""


def _context(root: Path) -> Path:
    ctx = root / "ctx"
    (ctx / "src" / "pkg").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "requirements.txt").write_text("flask\nrequests\n")
    for index in range(50):
        (ctx / "src" / "pkg" / f"mod{index}.py").write_text(f"VALUE = {index}\n" * 20)
    return ctx


def _docker(host: str, *args: str, cwd: Path | None = None) -> float:
    env = {**os.environ, "DOCKER_HOST": host, "DOCKER_BUILDKIT": "0"}
    env.pop("DOCKER_CONTEXT", None)
    start = time.perf_counter()
    result = subprocess.run(
        ["docker", *args], env=env, cwd=cwd, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(
            f"docker {' '.join(args)} on {host} failed:\n{result.stderr}"
        )
    return elapsed


def _measure(hosts: dict[str, str], ctx: Path, runs: int) -> dict[str, Timings]:
    """Cold and cached builds, the engines taking turns so load hits both alike."""
    timings: dict[str, Timings] = {name: ([], []) for name in hosts}
    for host in hosts.values():
        _docker(host, "build", "-q", "-t", "bench/build:warm", ".", cwd=ctx)
    for index in range(runs):
        tag = f"bench/build:{index}"
        for name, host in hosts.items():
            cold = _docker(host, "build", "--no-cache", "-q", "-t", tag, ".", cwd=ctx)
            timings[name][0].append(cold)
        for name, host in hosts.items():
            cached = _docker(host, "build", "-q", "-t", tag, ".", cwd=ctx)
            timings[name][1].append(cached)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="bench-build-", dir="/var/tmp"))
    archive = busybox_archive(work / "busybox.tar")
    ctx = _context(work)
    engine = EngineProcess(
        root=work / "dockyard",
        extra_args=[
            "--bridge-name",
            "dybench0",
            "--bip",
            "172.29.250.1/24",
            "--log-level",
            "info",
        ],
    )
    anchor_dir = work / "dockerd"
    results: dict[str, Timings] = {}
    try:
        engine.start()
        engine.docker("load", "-i", str(archive), check=True)
        anchor = subprocess.run(
            [str(ANCHOR), "start", str(anchor_dir)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        _docker(anchor, "load", "-i", str(archive))
        hosts = {"dockyard": engine.host, "dockerd": anchor}
        results = _measure(hosts, ctx, args.runs)
    finally:
        subprocess.run([str(ANCHOR), "stop", str(anchor_dir)], capture_output=True)
        if engine.proc is not None:
            ids = engine.docker("ps", "-aq").stdout.split()
            if ids:
                engine.docker("rm", "-f", *ids)
        engine.stop()
        subprocess.run(["umount", "-R", str(work)], capture_output=True)
        subprocess.run(["rm", "-rf", str(work)], capture_output=True)

    print(
        f"docker build of a {DOCKERFILE.count(chr(10))}-step Dockerfile, {args.runs} runs, median seconds"
    )
    print(f"{'':10}{'cold':>10}{'cached':>10}")
    medians = {}
    for name, (cold, cached) in results.items():
        medians[name] = (statistics.median(cold), statistics.median(cached))
        print(f"{name:10}{medians[name][0]:10.3f}{medians[name][1]:10.3f}")
    ratio_cold = medians["dockyard"][0] / medians["dockerd"][0]
    ratio_cached = medians["dockyard"][1] / medians["dockerd"][1]
    print(f"{'ratio':10}{ratio_cold:9.2f}x{ratio_cached:9.2f}x   (dockyard / dockerd)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
