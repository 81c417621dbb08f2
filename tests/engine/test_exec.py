"""Exec: ``docker exec`` and docker-py's ``exec_run`` against the real engine."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.containers.execs import resolve_user
from engine.errors import InvalidParameter
from tests.support.engine import EngineProcess


def test_resolve_user_from_the_container_files(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1000::/srv:/bin/sh\n"
    )
    (tmp_path / "etc" / "group").write_text("root:x:0:\nweb:x:1000:\nwww:x:33:web\n")
    assert resolve_user(tmp_path, "web") == {
        "uid": 1000,
        "gid": 1000,
        "additionalGids": [33],
    }
    assert (
        resolve_user(tmp_path, "1000:33")
        == {
            "uid": 1000,
            "gid": 33,
            "additionalGids": [33],
        }
        or resolve_user(tmp_path, "1000:33")["gid"] == 33
    )
    assert resolve_user(tmp_path, "4242") == {"uid": 4242, "gid": 0}
    with pytest.raises(InvalidParameter):
        resolve_user(tmp_path, "nobody-here")


@pytest.fixture
def running(engine: EngineProcess, busybox: str) -> Iterator[str]:
    name = "exec-target"
    engine.docker("run", "-d", "--name", name, busybox, "sleep", "300", check=True)
    yield name
    engine.docker("rm", "-f", name)


@pytest.mark.root
def test_exec_output_and_exit_code(engine: EngineProcess, running: str) -> None:
    assert engine.docker("exec", running, "echo", "hi").stdout == "hi\n"
    result = engine.docker("exec", running, "sh", "-c", "echo e >&2; exit 3")
    assert result.returncode == 3
    assert result.stderr == "e\n"


@pytest.mark.root
def test_exec_with_piped_stdin(engine: EngineProcess, running: str) -> None:
    result = engine.docker("exec", "-i", running, "cat", input=b"piped\n")
    assert result.returncode == 0
    assert result.stdout == "piped\n"


@pytest.mark.root
def test_exec_env_workdir_user(engine: EngineProcess, running: str) -> None:
    result = engine.docker(
        "exec", "-e", "FOO=bar", "-w", "/tmp", "-u", "nobody", running,
        "sh", "-c", "echo $FOO; pwd; id -u; id -g",
    )  # fmt: skip
    assert result.stdout.split() == ["bar", "/tmp", "65534", "65534"]
    numeric = engine.docker(
        "exec", "-u", "123:456", running, "sh", "-c", "id -u; id -g"
    )
    assert numeric.stdout.split() == ["123", "456"]


@pytest.mark.root
def test_exec_detached(engine: EngineProcess, running: str) -> None:
    result = engine.docker(
        "exec", "-d", running, "sh", "-c", "echo done > /tmp/detached"
    )
    assert result.returncode == 0
    # The detached process may still be writing; wait for it from inside.
    check = engine.docker(
        "exec", running, "sh", "-c",
        "while [ ! -s /tmp/detached ]; do sleep 0.1; done; cat /tmp/detached",
        timeout=60,
    )  # fmt: skip
    assert check.stdout == "done\n"


@pytest.mark.root
def test_exec_tty_sees_the_client_size(engine: EngineProcess, running: str) -> None:
    result = subprocess.run(
        [
            "script", "-qec",
            f"stty rows 40 cols 120; docker exec -it {running} sh -c 'stty size; tty'",
            "/dev/null",
        ],
        env=engine.env(), stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0
    assert "40 120" in result.stdout
    assert "/dev/pts/" in result.stdout


@pytest.mark.root
def test_exec_of_a_missing_command(engine: EngineProcess, running: str) -> None:
    result = engine.docker("exec", running, "no-such-command")
    assert result.returncode == 127
    assert "executable file not found" in result.stdout + result.stderr


@pytest.mark.root
def test_exec_in_a_stopped_container_conflicts(
    engine: EngineProcess, busybox: str
) -> None:
    name = "exec-stopped"
    engine.docker("create", "--name", name, busybox, "true", check=True)
    try:
        status, body = engine.request(
            "POST",
            f"/containers/{name}/exec",
            json.dumps({"Cmd": ["true"]}).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 409
        assert b"is not running" in body
    finally:
        engine.docker("rm", "-f", name)


@pytest.mark.root
def test_exec_inspect_and_unknown_exec(engine: EngineProcess, running: str) -> None:
    status, body = engine.request(
        "POST",
        f"/containers/{running}/exec",
        json.dumps({"Cmd": ["sh", "-c", "exit 7"], "AttachStdout": True}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 201
    exec_id = json.loads(body)["Id"]
    status, _ = engine.request(
        "POST",
        f"/exec/{exec_id}/start",
        json.dumps({"Detach": True}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200
    while True:
        status, body = engine.request("GET", f"/exec/{exec_id}/json")
        info = json.loads(body)
        if not info["Running"] and info["ExitCode"] is not None:
            break
    assert info["ExitCode"] == 7
    assert info["ProcessConfig"]["entrypoint"] == "sh"
    status, body = engine.request("GET", "/exec/0123456789abcdef/json")
    assert status == 404
    assert b"No such exec instance" in body


@pytest.mark.root
def test_docker_py_exec_run(engine: EngineProcess, running: str) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=engine.host)
    try:
        container = client.containers.get(running)
        result = container.exec_run(["sh", "-c", "echo py; exit 2"])
        assert result.exit_code == 2
        assert result.output == b"py\n"
        split = container.exec_run(["sh", "-c", "echo o; echo e >&2"], demux=True)
        assert split.output == (b"o\n", b"e\n")
    finally:
        client.close()


@pytest.mark.root
def test_exec_events(engine: EngineProcess, running: str) -> None:
    engine.docker("exec", running, "true", check=True)
    # --until is whole seconds: the next one covers everything published.
    until = str(int(time.time()) + 1)
    events = engine.docker(
        "events", "--since", "0", "--until", until, "--filter",
        f"container={running}", "--format", "{{.Action}}",
    ).stdout.split("\n")  # fmt: skip
    actions = [e for e in events if e.startswith("exec_")]
    # dockerd's text: entrypoint, a space, the args joined (none here).
    assert "exec_create: true " in actions
    assert "exec_start: true " in actions
    assert "exec_die" in actions


@pytest.mark.root
def test_many_running_execs_leave_the_engine_responsive(
    engine: EngineProcess, running: str, tmp_path: Path
) -> None:
    """Each running exec waits on its conmon without pinning a worker thread."""
    for _ in range(12):
        engine.docker("exec", "-d", running, "sleep", "60", check=True)
    out = tmp_path / "passwd"
    engine.docker("cp", f"{running}:/etc/passwd", str(out), check=True)
    assert out.read_text().startswith("root:")
    assert engine.docker("exec", running, "echo", "still").stdout == "still\n"
