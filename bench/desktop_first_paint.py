"""How long ``dockyard-desktop --show-dashboard`` takes to paint its window.

    .venv/bin/python bench/desktop_first_paint.py [--runs 7] [--docker-host URL]

Each run starts the app as a new process under a private Xvfb, with
``DOCKYARD_FIRST_PAINT_FILE`` set: the dashboard writes the wall time of its
first paint there and quits. The figure is that time minus the moment just
before the process was spawned, so it includes the interpreter, the imports
and Qt's start. The target is 1.5 s.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.screenshots import xvfb  # noqa: E402

TARGET_S = 1.5


def one_run(host: str, env: dict[str, str], work: Path) -> float:
    marker = work / "painted"
    marker.unlink(missing_ok=True)
    env = dict(env, DOCKYARD_FIRST_PAINT_FILE=str(marker))
    started = time.time()
    subprocess.run(
        [sys.executable, "-m", "desktop.gui.app", "--docker-host", host],
        env=env,
        cwd=ROOT,
        check=True,
        timeout=60,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return float(marker.read_text()) - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--docker-host",
        default=os.environ.get("DOCKER_HOST", "unix:///run/dockyard/docker.sock"),
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dypaint-"))
    try:
        with xvfb() as display:
            env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb")
            env["XDG_CONFIG_HOME"] = str(work / "config")
            env["XDG_STATE_HOME"] = str(work / "state")
            times = [one_run(args.docker_host, env, work) for _ in range(args.runs)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = statistics.median(times)
    print("first paint (s): " + " ".join(f"{t:.3f}" for t in times))
    print(f"median {median:.3f} s, best {min(times):.3f} s, target {TARGET_S} s")
    return 0 if median <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
