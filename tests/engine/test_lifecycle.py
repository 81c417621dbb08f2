"""Start, stop, kill, restart, pause, wait and rm with the real docker CLI."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.engine.test_containers import inspect, output, wait_output
from tests.support.engine import EngineProcess

pytestmark = pytest.mark.root


def state(engine: EngineProcess, name: str) -> dict:
    return inspect(engine, name)["State"]


def test_run_detached_exit_code(engine: EngineProcess, busybox: str) -> None:
    cid = engine.docker("run", "-d", busybox, "sh", "-c", "echo out; echo err >&2; exit 3",
                        check=True).stdout.strip()  # fmt: skip
    try:
        assert engine.docker("wait", cid, check=True).stdout.strip() == "3"
        st = state(engine, cid)
        assert st["Status"] == "exited" and st["ExitCode"] == 3
        assert st["FinishedAt"] >= st["StartedAt"]
        assert output(engine, cid) == "out\n"
        assert output(engine, cid, "stderr") == "err\n"
    finally:
        engine.docker("rm", cid)


def test_run_attached_exit_code_and_output(engine: EngineProcess, busybox: str) -> None:
    """Needs the attach endpoint (container I/O helper)."""
    result = engine.docker(
        "run", "--name", "fg1", busybox, "sh", "-c", "echo out; exit 3"
    )
    try:
        assert result.returncode == 3
        assert result.stdout == "out\n"
    finally:
        engine.docker("rm", "-f", "fg1")


def test_run_rm_removes_container(engine: EngineProcess, busybox: str) -> None:
    """Needs the attach endpoint (container I/O helper)."""
    result = engine.docker(
        "run", "--rm", "--name", "gone1", busybox, "sh", "-c", "exit 4"
    )
    assert result.returncode == 4
    assert engine.docker("inspect", "gone1").returncode != 0


def test_run_rm_detached(engine: EngineProcess, busybox: str) -> None:
    cid = engine.docker("run", "-d", "--rm", busybox, "true", check=True).stdout.strip()
    status, _ = engine.request(
        "POST", f"/v1.47/containers/{cid}/wait?condition=removed"
    )
    assert status in (200, 404)
    assert engine.docker("inspect", cid).returncode != 0


def test_start_twice_is_304_and_stop_twice_too(
    engine: EngineProcess, busybox: str
) -> None:
    engine.docker("run", "-d", "--name", "twice", busybox, "sleep", "60", check=True)
    try:
        status, _ = engine.request("POST", "/v1.47/containers/twice/start")
        assert status == 304
        engine.docker("stop", "-t", "0", "twice", check=True)
        status, _ = engine.request("POST", "/v1.47/containers/twice/stop")
        assert status == 304
    finally:
        engine.docker("rm", "-f", "twice")


def test_stop_sends_stopsignal_then_kill(engine: EngineProcess, busybox: str) -> None:
    # A shell that traps TERM exits 0 on stop; plain sleep as pid 1 ignores it.
    engine.docker("run", "-d", "--name", "polite", busybox, "sh", "-c",
                  "trap 'exit 0' TERM; echo ready; while :; do sleep 0.1; done",
                  check=True)  # fmt: skip
    engine.docker("run", "-d", "--name", "stubborn", busybox, "sleep", "60", check=True)
    try:
        wait_output(engine, "polite", "ready")
        engine.docker("stop", "-t", "5", "polite", check=True)
        assert state(engine, "polite")["ExitCode"] == 0
        engine.docker("stop", "-t", "1", "stubborn", check=True)
        st = state(engine, "stubborn")
        assert st["ExitCode"] == 137 and not st["Running"]
        engine.docker("run", "-d", "--name", "usr1", "--stop-signal", "USR1", busybox,
                      "sh", "-c", "trap 'exit 9' USR1; echo ready; while :; do sleep 0.1; done",
                      check=True)  # fmt: skip
        wait_output(engine, "usr1", "ready")
        engine.docker("stop", "usr1", check=True)
        assert state(engine, "usr1")["ExitCode"] == 9
    finally:
        engine.docker("rm", "-f", "polite", "stubborn", "usr1")


def test_kill_with_signal(engine: EngineProcess, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "killme", busybox, "sh", "-c",
                  "trap 'echo got-hup' HUP; echo ready; while :; do sleep 0.1; done",
                  check=True)  # fmt: skip
    try:
        wait_output(engine, "killme", "ready")
        engine.docker("kill", "-s", "HUP", "killme", check=True)
        wait_output(engine, "killme", "got-hup")
        assert state(engine, "killme")["Running"]
        engine.docker("kill", "killme", check=True)
        engine.docker("wait", "killme", check=True)
        assert state(engine, "killme")["ExitCode"] == 137
        again = engine.docker("kill", "killme")
        assert again.returncode != 0 and "is not running" in again.stderr
        bad = engine.docker("start", "killme")
        assert bad.returncode == 0
        wrong = engine.docker("kill", "-s", "NOPE", "killme")
        assert wrong.returncode != 0 and "Invalid signal" in wrong.stderr
    finally:
        engine.docker("rm", "-f", "killme")


def test_restart_pause_unpause(engine: EngineProcess, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "pz", busybox, "sleep", "60", check=True)
    try:
        pid1 = state(engine, "pz")["Pid"]
        engine.docker("restart", "-t", "0", "pz", check=True)
        st = state(engine, "pz")
        assert st["Running"] and st["Pid"] != pid1
        engine.docker("pause", "pz", check=True)
        st = state(engine, "pz")
        assert st["Paused"] and st["Status"] == "paused"
        frozen = Path(f"/proc/{st['Pid']}/status").read_text()
        assert "State:" in frozen
        ps = engine.docker("ps", "--filter", "status=paused", "--format", "{{.Names}}")
        assert ps.stdout.split() == ["pz"]
        again = engine.docker("pause", "pz")
        assert again.returncode != 0
        engine.docker("unpause", "pz", check=True)
        assert state(engine, "pz")["Status"] == "running"
    finally:
        engine.docker("rm", "-f", "pz")


def test_rm_running_needs_force(engine: EngineProcess, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "rmme", busybox, "sleep", "60", check=True)
    pid = state(engine, "rmme")["Pid"]
    refused = engine.docker("rm", "rmme")
    assert refused.returncode != 0
    assert "stop the container before removing or force remove" in refused.stderr
    engine.docker("rm", "-f", "rmme", check=True)
    assert engine.docker("inspect", "rmme").returncode != 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_wait_conditions(engine: EngineProcess, busybox: str) -> None:
    engine.docker("create", "--name", "waiter", busybox, "sh", "-c", "sleep 0.3; exit 6",
                  check=True)  # fmt: skip
    try:
        # not-running on a created container answers at once.
        status, body = engine.request("POST", "/v1.47/containers/waiter/wait")
        assert status == 200 and json.loads(body)["StatusCode"] == 0
        # next-exit waits through the start that follows.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(
                engine.request,
                "POST",
                "/v1.47/containers/waiter/wait?condition=next-exit",
            )
            time.sleep(0.3)
            assert not waiting.done()
            engine.docker("start", "waiter", check=True)
            status, body = waiting.result(timeout=30)
        assert status == 200 and json.loads(body)["StatusCode"] == 6
        engine.docker("start", "waiter", check=True)
        assert engine.docker("wait", "waiter", check=True).stdout.strip() == "6"
        bad = engine.request("POST", "/v1.47/containers/waiter/wait?condition=bogus")
        assert bad[0] == 400
    finally:
        engine.docker("rm", "-f", "waiter")


def test_rm_v_removes_anonymous_volume(engine: EngineProcess, busybox: str) -> None:
    """Needs the storage helper's mounts (engine/storage/mounts.py)."""
    cid = engine.docker(
        "create", "-v", "/data", busybox, "true", check=True
    ).stdout.strip()
    mounts = inspect(engine, cid)["Mounts"]
    assert len(mounts) == 1 and mounts[0]["Type"] == "volume"
    name = mounts[0]["Name"]
    engine.docker("rm", "-v", cid, check=True)
    assert engine.docker("volume", "inspect", name).returncode != 0


def test_events_of_a_run(engine: EngineProcess, busybox: str) -> None:
    since = str(time.time() - 1)
    cid = engine.docker("run", "-d", "--name", "ev1", busybox, "sleep", "60",
                        check=True).stdout.strip()  # fmt: skip
    engine.docker("stop", "-t", "0", "ev1", check=True)
    engine.docker("rename", "ev1", "ev2", check=True)
    engine.docker("rm", "ev2", check=True)
    until = str(time.time() + 1)
    out = engine.docker("events", "--since", since, "--until", until, "--filter",
                        f"container={cid}", "--format", "{{json .}}", check=True)  # fmt: skip
    events = [json.loads(line) for line in out.stdout.splitlines()]
    actions = [e["Action"] for e in events]
    for wanted in ("create", "start", "kill", "die", "stop", "rename", "destroy"):
        assert wanted in actions, actions
    die = next(e for e in events if e["Action"] == "die")
    assert die["Actor"]["Attributes"]["exitCode"] == "137"
    assert die["Actor"]["Attributes"]["image"] == busybox
    kill = next(e for e in events if e["Action"] == "kill")
    assert kill["Actor"]["Attributes"]["signal"] == "15"


def test_runtime_choice_is_logged(engine: EngineProcess) -> None:
    log = engine.log_path.read_text(errors="replace")
    line = next(x for x in log.splitlines() if "OCI runtime:" in x)
    assert " because " in line
    version = engine.docker(
        "version", "--format", "{{json .Server.Components}}", check=True
    )
    components = {c["Name"]: c for c in json.loads(version.stdout)}
    runtime = "crun" if "crun" in components else "runc"
    assert runtime in line
    # Versions as the binaries report them, like dockerd's runc entry.
    for name in (runtime, "conmon"):
        first = subprocess.run(
            [name, "--version"], capture_output=True, text=True, check=True
        ).stdout.splitlines()[0]
        assert first == f"{name} version {components[name]['Version']}"
        assert components[name]["Details"].get("GitCommit")
    # `docker info` prints the default runtime's commit as "runc version".
    commit = engine.docker("info", "--format", "{{.RuncCommit.ID}}", check=True)
    assert commit.stdout.strip() == components[runtime]["Details"]["GitCommit"]
    # --init's tini (scripts/install.sh installs it) as docker-init.
    tini = subprocess.run(
        ["tini", "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[2]
    assert components["docker-init"]["Version"] == tini
    init = engine.docker(
        "info", "--format", "{{.InitBinary}} {{.InitCommit.ID}}", check=True
    )
    assert init.stdout.strip() == f"docker-init {tini}"
