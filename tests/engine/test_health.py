"""Container health checks through the real docker CLI 28.

Probes run as execs under conmon inside busybox containers. Waits poll
``docker inspect`` until a deadline; what is asserted is the state reached,
never how fast.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.engine import EngineProcess

pytestmark = pytest.mark.root

FAST = ("--health-interval", "1s", "--health-retries", "2")


def inspect(engine: EngineProcess, name: str) -> dict[str, Any]:
    out = engine.docker("inspect", name, check=True).stdout
    return json.loads(out)[0]  # type: ignore[no-any-return]


def health(engine: EngineProcess, name: str) -> dict[str, Any] | None:
    return inspect(engine, name)["State"].get("Health")  # type: ignore[no-any-return]


def wait_health(
    engine: EngineProcess, name: str, status: str, deadline: float = 60
) -> dict[str, Any]:
    """State.Health once its Status is ``status``; fails at the deadline."""
    end = time.monotonic() + deadline
    seen: dict[str, Any] | None = None
    while time.monotonic() < end:
        seen = health(engine, name)
        if seen and seen.get("Status") == status:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{name} never became {status}: {seen}\n{engine.log_tail()}")


def ps(engine: EngineProcess, *args: str) -> list[str]:
    out = engine.docker("ps", "-a", *args, "--format", "{{.Names}}|{{.Status}}")
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def actions(engine: EngineProcess, name: str, since: int) -> list[str]:
    out = engine.docker(
        "events", "--since", str(since), "--until", str(int(time.time()) + 1),
        "--filter", f"container={name}", "--format", "{{.Action}}",
        check=True,
    )  # fmt: skip
    return out.stdout.splitlines()


@pytest.fixture
def names(engine: EngineProcess) -> Any:
    made: list[str] = []
    yield made
    if made:
        engine.docker("rm", "-f", *made)


def test_healthy_container_ps_filter_and_stop(
    engine: EngineProcess, busybox: str, names: list[str]
) -> None:
    since = int(time.time()) - 1
    names += ["hc-ok", "hc-slow"]
    engine.docker("run", "-d", "--name", "hc-ok", "--health-cmd", "echo ok", *FAST,
                  busybox, "sleep", "300", check=True)  # fmt: skip
    # The first probe comes after one interval: an hour here.
    engine.docker("run", "-d", "--name", "hc-slow", "--health-cmd", "true",
                  "--health-interval", "1h", busybox, "sleep", "300", check=True)  # fmt: skip

    state = wait_health(engine, "hc-ok", "healthy")
    assert state["FailingStreak"] == 0
    entry = state["Log"][-1]
    assert entry["ExitCode"] == 0 and entry["Output"] == "ok\n"
    assert entry["Start"] <= entry["End"]
    config = inspect(engine, "hc-ok")["Config"]["Healthcheck"]
    assert config["Test"] == ["CMD-SHELL", "echo ok"]
    assert config["Interval"] == 1_000_000_000 and config["Retries"] == 2

    rows = dict(row.split("|", 1) for row in ps(engine))
    assert rows["hc-ok"].startswith("Up ") and rows["hc-ok"].endswith(" (healthy)")
    assert rows["hc-slow"].endswith(" (health: starting)")
    assert health(engine, "hc-slow") == {
        "Status": "starting",
        "FailingStreak": 0,
        "Log": [],
    }
    healthy = [r.split("|")[0] for r in ps(engine, "--filter", "health=healthy")]
    assert "hc-ok" in healthy and "hc-slow" not in healthy
    starting = [r.split("|")[0] for r in ps(engine, "--filter", "health=starting")]
    assert starting == ["hc-slow"]
    bad = engine.docker("ps", "--filter", "health=bogus")
    assert bad.returncode != 0
    assert "Unrecognised filter value for health: bogus" in bad.stderr

    seen = actions(engine, "hc-ok", since)
    assert "health_status: healthy" in seen
    for action in (
        "exec_create: /bin/sh -c echo ok",
        "exec_start: /bin/sh -c echo ok",
        "exec_die",
    ):
        assert action in seen
    # A stopped container's health is unhealthy, as dockerd reports it.
    engine.docker("stop", "-t", "0", "hc-ok", check=True)
    assert health(engine, "hc-ok")["Status"] == "unhealthy"  # type: ignore[index]


def test_failing_probe_makes_container_unhealthy(
    engine: EngineProcess, busybox: str, names: list[str]
) -> None:
    since = int(time.time()) - 1
    names.append("hc-bad")
    engine.docker("run", "-d", "--name", "hc-bad", "--health-cmd",
                  "echo bad >&2; exit 3", *FAST, busybox, "sleep", "300",
                  check=True)  # fmt: skip
    state = wait_health(engine, "hc-bad", "unhealthy")
    assert state["FailingStreak"] >= 2
    assert 2 <= len(state["Log"]) <= 5
    assert all(e["ExitCode"] == 3 and e["Output"] == "bad\n" for e in state["Log"])
    rows = dict(row.split("|", 1) for row in ps(engine))
    assert rows["hc-bad"].endswith(" (unhealthy)")
    assert ps(engine, "--filter", "health=unhealthy", "--filter", "name=hc-bad")
    seen = actions(engine, "hc-bad", since)
    assert "health_status: unhealthy" in seen
    assert "health_status: healthy" not in seen

    # Only the last five results are kept.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and state["FailingStreak"] < 6:
        time.sleep(0.3)
        state = wait_health(engine, "hc-bad", "unhealthy")
    assert state["FailingStreak"] >= 6 and len(state["Log"]) == 5


def test_exec_form_and_missing_binary(
    engine: EngineProcess, busybox: str, names: list[str]
) -> None:
    names += ["hc-cmd", "hc-nocmd"]
    body_ok = {"Test": ["CMD", "cat", "/etc/hostname"], "Interval": 500_000_000}
    # The CLI has no flag for the exec form: go through the API.
    status, data = engine.request(
        "POST",
        "/v1.47/containers/create?name=hc-nocmd",
        json.dumps({
            "Image": busybox, "Cmd": ["sleep", "300"],
            "Healthcheck": {"Test": ["CMD", "/no/such/probe"],
                            "Interval": 500_000_000, "Retries": 1},
        }).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 201, data
    engine.docker("start", "hc-nocmd", check=True)
    status, data = engine.request(
        "POST",
        "/v1.47/containers/create?name=hc-cmd",
        json.dumps({"Image": busybox, "Cmd": ["sleep", "300"],
                    "Healthcheck": body_ok}).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 201, data
    engine.docker("start", "hc-cmd", check=True)
    state = wait_health(engine, "hc-cmd", "healthy")
    assert state["Log"][-1]["Output"].strip() == inspect(engine, "hc-cmd")["Id"][:12]

    state = wait_health(engine, "hc-nocmd", "unhealthy")
    entry = state["Log"][-1]
    assert entry["ExitCode"] != 0 and entry["Output"]


def test_image_healthcheck_and_no_healthcheck(
    engine: EngineProcess, busybox: str, names: list[str], tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(
        f"FROM {busybox}\n"
        "HEALTHCHECK --interval=1s --retries=2 CMD test -e /etc/passwd\n"
    )
    built = subprocess.run(
        ["docker", "build", "-t", "dockyard-test/healthy:1", str(tmp_path)],
        env={**engine.env(), "DOCKER_BUILDKIT": "0"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    names += ["hc-img", "hc-none", "hc-override"]
    try:
        engine.docker("run", "-d", "--name", "hc-img", "dockyard-test/healthy:1",
                      "sleep", "300", check=True)  # fmt: skip
        engine.docker("run", "-d", "--name", "hc-none", "--no-healthcheck",
                      "dockyard-test/healthy:1", "sleep", "300", check=True)  # fmt: skip
        # A run flag without a command keeps the image's test.
        engine.docker("run", "-d", "--name", "hc-override", "--health-retries", "7",
                      "dockyard-test/healthy:1", "sleep", "300", check=True)  # fmt: skip

        state = wait_health(engine, "hc-img", "healthy")
        assert state["Log"][-1]["ExitCode"] == 0
        none = inspect(engine, "hc-none")
        assert none["Config"]["Healthcheck"]["Test"] == ["NONE"]
        assert none["State"].get("Health") is None
        rows = dict(row.split("|", 1) for row in ps(engine))
        assert rows["hc-none"].startswith("Up ") and "health" not in rows["hc-none"]
        unchecked = [r.split("|")[0] for r in ps(engine, "--filter", "health=none")]
        assert "hc-none" in unchecked and "hc-img" not in unchecked
        check = inspect(engine, "hc-override")["Config"]["Healthcheck"]
        assert check["Test"] == ["CMD-SHELL", "test -e /etc/passwd"]
        assert check["Retries"] == 7 and check["Interval"] == 1_000_000_000
        wait_health(engine, "hc-override", "healthy")
    finally:
        engine.docker("rm", "-f", *names)
        names.clear()
        engine.docker("rmi", "dockyard-test/healthy:1")


def test_timeout_kills_a_hanging_probe(
    engine: EngineProcess, busybox: str, names: list[str]
) -> None:
    names.append("hc-hang")
    engine.docker("run", "-d", "--name", "hc-hang", "--health-cmd", "sleep 1000",
                  "--health-timeout", "1s", "--health-interval", "1s",
                  "--health-retries", "2", busybox, "sleep", "300",
                  check=True)  # fmt: skip
    state = wait_health(engine, "hc-hang", "unhealthy")
    entry = state["Log"][0]
    assert entry["ExitCode"] == -1
    assert entry["Output"] == "Health check exceeded timeout (1s)"
    # Killed probes are gone: at most the one in flight is left.
    top = engine.docker("top", "hc-hang", check=True).stdout
    assert top.count("sleep 1000") <= 1, top


def test_invalid_healthcheck_is_refused(engine: EngineProcess, busybox: str) -> None:
    result = engine.docker("create", "--health-cmd", "true", "--health-interval",
                           "100us", busybox)  # fmt: skip
    assert result.returncode != 0
    assert "Interval in Healthcheck cannot be less than 1ms" in result.stderr
    # The CLI checks --health-retries itself: ask the API.
    status, data = engine.request(
        "POST",
        "/v1.47/containers/create",
        json.dumps({"Image": busybox, "Healthcheck": {"Test": ["CMD", "true"],
                                                      "Retries": -1}}).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 400
    assert json.loads(data) == {"message": "Retries in Healthcheck cannot be negative"}


def test_health_survives_an_engine_restart(
    fresh_engine: EngineProcess, busybox: str
) -> None:
    eng = fresh_engine
    eng.docker("run", "-d", "--name", "hc-keep", "--health-cmd",
               "test ! -e /tmp/broken", *FAST, busybox, "sleep", "300",
               check=True)  # fmt: skip
    wait_health(eng, "hc-keep", "healthy")
    eng.stop()
    eng.start()

    # The status came back from the record, and probes go on.
    assert health(eng, "hc-keep")["Status"] == "healthy"  # type: ignore[index]
    eng.docker("exec", "hc-keep", "touch", "/tmp/broken", check=True)
    state = wait_health(eng, "hc-keep", "unhealthy")
    assert state["Log"][-1]["ExitCode"] == 1


def test_start_period_failures_do_not_count(
    engine: EngineProcess, busybox: str, names: list[str]
) -> None:
    names.append("hc-start")
    # Interval stays at its 30 s default: only StartInterval probes run here.
    engine.docker("run", "-d", "--name", "hc-start", "--health-cmd", "exit 1",
                  "--health-retries", "1", "--health-start-period", "1h",
                  "--health-start-interval", "1s", busybox, "sleep", "300",
                  check=True)  # fmt: skip
    deadline = time.monotonic() + 60
    state = health(engine, "hc-start") or {}
    while time.monotonic() < deadline and len(state.get("Log") or []) < 2:
        time.sleep(0.2)
        state = health(engine, "hc-start") or {}
    assert len(state["Log"]) >= 2
    assert state["Status"] == "starting" and state["FailingStreak"] == 0
    assert all(e["ExitCode"] == 1 for e in state["Log"])


def test_durations_and_merge_rules() -> None:
    from engine.containers.health import go_duration, merge, probe_command

    assert go_duration(1_000_000_000) == "1s"
    assert go_duration(1_500_000_000) == "1.5s"
    assert go_duration(500_000_000) == "500ms"
    assert go_duration(90_000_000_000) == "1m30s"
    assert go_duration(3_600_000_000_000) == "1h0m0s"
    image = {"Test": ["CMD", "true"], "Interval": 5, "Retries": 4}
    assert merge({"Retries": 2}, image) == {**image, "Retries": 2}
    assert merge(None, image) == image
    assert merge({"Test": ["NONE"]}, image) == {**image, "Test": ["NONE"]}
    assert probe_command({"Healthcheck": {"Test": ["NONE"]}}) is None
    assert probe_command({"Healthcheck": {"Test": ["CMD-SHELL", "a b"]}}) == [
        "/bin/sh", "-c", "a b",
    ]  # fmt: skip
    assert probe_command(
        {"Shell": ["/bin/ash", "-ec"], "Healthcheck": {"Test": ["CMD-SHELL", "x"]}}
    ) == ["/bin/ash", "-ec", "x"]
