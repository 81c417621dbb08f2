"""Containers outlive the engine: SIGTERM or SIGKILL it, restart, adopt."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.engine.test_containers import inspect, output, wait_output
from tests.support.engine import EngineProcess

pytestmark = pytest.mark.root


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_running_container_survives_engine(
    fresh_engine: EngineProcess, busybox: str, sig: int
) -> None:
    eng = fresh_engine
    eng.docker("run", "-d", "--name", "long", busybox, "sh", "-c",
               "echo before; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo after; exit 7",
               check=True)  # fmt: skip
    eng.docker("run", "-d", "--name", "keeps", busybox, "sleep", "300", check=True)
    keeps_pid = inspect(eng, "keeps")["State"]["Pid"]
    wait_output(eng, "long", "before")
    eng.stop(sig)

    # While the engine is away the first container finishes.
    long_pid = _pid_of_container(eng, "long")
    assert os.path.exists(f"/proc/{keeps_pid}")
    with open(f"/proc/{long_pid}/root/tmp/go", "w"):
        pass
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{long_pid}") and time.monotonic() < deadline:
        time.sleep(0.05)

    eng.start()
    st = inspect(eng, "long")["State"]
    assert st["Status"] == "exited" and st["ExitCode"] == 7
    assert output(eng, "long") == "before\nafter\n"
    logs = eng.docker("logs", "long", check=True)
    assert logs.stdout == "before\nafter\n"
    st = inspect(eng, "keeps")["State"]
    assert st["Running"] and st["Pid"] == keeps_pid
    # The adopted container is watched again: stop sees its exit.
    eng.docker("stop", "-t", "0", "keeps", check=True)
    assert inspect(eng, "keeps")["State"]["ExitCode"] == 137
    assert not os.path.exists(f"/proc/{keeps_pid}")


def _pid_of_container(eng: EngineProcess, name: str) -> int:
    """The container's pid from the record the engine left (it is down now)."""
    for record in (eng.root / "data" / "containers").glob("*/container.json"):
        data = json.loads(record.read_text())
        if data["Name"] == name:
            return int(data["State"]["Pid"])
    raise AssertionError(f"no record of {name}")


def test_always_comes_back_after_engine_restart(
    fresh_engine: EngineProcess, busybox: str
) -> None:
    eng = fresh_engine
    eng.docker("run", "-d", "--name", "alw", "--restart", "always", busybox, "sleep", "300",
               check=True)  # fmt: skip
    eng.docker("run", "-d", "--name", "nop", busybox, "sleep", "300", check=True)
    pids = [inspect(eng, n)["State"]["Pid"] for n in ("alw", "nop")]
    eng.stop(signal.SIGKILL)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    eng.start()
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline
        and inspect(eng, "alw")["State"]["Status"] != "running"
    ):
        time.sleep(0.1)
    assert inspect(eng, "alw")["State"]["Status"] == "running"
    assert inspect(eng, "nop")["State"]["Status"] == "exited"
