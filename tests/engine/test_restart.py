"""Restart policies: no, on-failure[:N], always, unless-stopped."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.engine.test_containers import inspect
from tests.support.engine import EngineProcess

pytestmark = pytest.mark.root


def settle(
    engine: EngineProcess,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    timeout: float = 15,
) -> dict[str, Any]:
    """Inspect ``name`` until ``check`` holds (or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    info = inspect(engine, name)
    while not check(info) and time.monotonic() < deadline:
        time.sleep(0.1)
        info = inspect(engine, name)
    return info


def test_on_failure_with_limit(engine: EngineProcess, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "onf", "--restart", "on-failure:2", busybox,
                  "sh", "-c", "exit 4", check=True)  # fmt: skip
    try:
        info = settle(engine, "onf", lambda i: i["RestartCount"] == 2
                      and i["State"]["Status"] == "exited")  # fmt: skip
        assert info["RestartCount"] == 2
        assert info["State"]["ExitCode"] == 4
        assert info["HostConfig"]["RestartPolicy"] == {
            "Name": "on-failure",
            "MaximumRetryCount": 2,
        }
        time.sleep(1)
        assert inspect(engine, "onf")["RestartCount"] == 2
    finally:
        engine.docker("rm", "-f", "onf")


def test_on_failure_not_after_success(engine: EngineProcess, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "onok", "--restart", "on-failure", busybox, "true",
                  check=True)  # fmt: skip
    try:
        engine.docker("wait", "onok", check=True)
        time.sleep(0.5)
        info = inspect(engine, "onok")
        assert info["RestartCount"] == 0 and info["State"]["Status"] == "exited"
    finally:
        engine.docker("rm", "-f", "onok")


def test_always_restarts_until_stopped(engine: EngineProcess, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "alw2", "--restart", "always", busybox,
                  "sh", "-c", "sleep 0.2; exit 0", check=True)  # fmt: skip
    try:
        info = settle(engine, "alw2", lambda i: i["RestartCount"] >= 2)
        assert info["RestartCount"] >= 2
        engine.docker("stop", "-t", "1", "alw2", check=True)
        count = inspect(engine, "alw2")["RestartCount"]
        time.sleep(1)
        info = inspect(engine, "alw2")
        assert info["RestartCount"] == count and not info["State"]["Running"]
    finally:
        engine.docker("rm", "-f", "alw2")


def test_unless_stopped_and_no(engine: EngineProcess, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "uls", "--restart", "unless-stopped", busybox,
                  "sleep", "60", check=True)  # fmt: skip
    engine.docker(
        "run", "-d", "--name", "nores", busybox, "sh", "-c", "exit 1", check=True
    )
    try:
        pid = inspect(engine, "uls")["State"]["Pid"]
        os.kill(pid, signal.SIGKILL)  # a crash, not a stop: it comes back
        info = settle(
            engine,
            "uls",
            lambda i: i["RestartCount"] == 1 and i["State"]["Status"] == "running",
        )
        assert info["State"]["Running"] and info["RestartCount"] == 1
        engine.docker("wait", "nores", check=True)
        time.sleep(0.3)
        assert inspect(engine, "nores")["RestartCount"] == 0
    finally:
        engine.docker("rm", "-f", "uls", "nores")


def test_bad_policies(engine: EngineProcess, busybox: str) -> None:
    bad = engine.docker("create", "--restart", "sometimes", busybox, "true")
    assert bad.returncode != 0
    both = engine.docker("create", "--rm", "--restart", "always", busybox, "true")
    assert both.returncode != 0


def test_restarting_container_rm(engine: EngineProcess, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "flap", "--restart", "always", busybox,
                  "sh", "-c", "exit 1", check=True)  # fmt: skip
    try:
        # The delay doubles: after four runs it waits 1.6 s, long enough to look at.
        info = settle(
            engine,
            "flap",
            lambda i: i["RestartCount"] >= 4 and i["State"]["Status"] == "restarting",
        )
        assert info["State"]["Restarting"] and info["State"]["Running"]
        refused = engine.docker("rm", "flap")
        assert refused.returncode != 0
        assert "stop the container before removing or force remove" in refused.stderr
        engine.docker("rm", "-f", "flap", check=True)
        assert engine.docker("inspect", "flap").returncode != 0
    finally:
        engine.docker("rm", "-f", "flap")
