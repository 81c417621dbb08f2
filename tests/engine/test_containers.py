"""Containers through the real docker CLI: create, inspect, ps, rename, errors.

Output is read from the container's k8s-file log (conmon writes it), so
these tests do not depend on the logs endpoint.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.support.engine import EngineProcess

pytestmark = pytest.mark.root


def output(engine: EngineProcess, name: str, stream: str = "stdout") -> str:
    """What the container wrote to ``stream``, from conmon's k8s-file log."""
    cid = engine.docker("inspect", "-f", "{{.Id}}", name, check=True).stdout.strip()
    log = engine.root / "data" / "containers" / cid / "ctr.log"
    text = ""
    for line in log.read_text().splitlines():
        _stamp, kind, tag, rest = ([*line.split(" ", 3), ""])[:4]
        if kind == stream:
            text += rest + ("\n" if tag == "F" else "")
    return text


def wait_output(
    engine: EngineProcess, name: str, text: str, timeout: float = 15
) -> str:
    """Poll the container's stdout until ``text`` shows up; returns the output."""
    deadline = time.monotonic() + timeout
    seen = output(engine, name)
    while text not in seen and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = output(engine, name)
    assert text in seen, seen
    return seen


def run_d(engine: EngineProcess, *args: str) -> str:
    """``docker run -d`` then ``docker wait``: the container's id, after it exits."""
    cid = engine.docker("run", "-d", *args, check=True).stdout.strip()
    engine.docker("wait", cid, check=True)
    return cid


def inspect(engine: EngineProcess, name: str) -> dict:
    return json.loads(engine.docker("inspect", name, check=True).stdout)[0]


def test_create_then_inspect_has_docker_fields(
    engine: EngineProcess, busybox: str
) -> None:
    engine.docker(
        "create", "--name", "insp1", "-l", "k=v", "-e", "A=1", busybox, "sleep", "5",
        check=True,
    )  # fmt: skip
    try:
        info = inspect(engine, "insp1")
        for key in (
            "Id", "Created", "Path", "Args", "State", "Image", "ResolvConfPath",
            "HostnamePath", "HostsPath", "LogPath", "Name", "RestartCount", "Driver",
            "Platform", "MountLabel", "ProcessLabel", "AppArmorProfile", "ExecIDs",
            "HostConfig", "GraphDriver", "Mounts", "Config", "NetworkSettings",
        ):  # fmt: skip
            assert key in info, key
        assert info["Name"] == "/insp1"
        assert re.fullmatch(r"[0-9a-f]{64}", info["Id"])
        assert info["Path"] == "sleep" and info["Args"] == ["5"]
        assert info["State"]["Status"] == "created"
        assert info["Driver"] == "overlay2"
        assert info["Config"]["Labels"] == {"k": "v"}
        assert "A=1" in info["Config"]["Env"]
        assert any(e.startswith("PATH=") for e in info["Config"]["Env"])
        assert info["Config"]["Hostname"] == info["Id"][:12]
        assert info["Image"].startswith("sha256:")
    finally:
        engine.docker("rm", "-f", "insp1")


def test_name_clash_is_409(engine: EngineProcess, busybox: str) -> None:
    first = engine.docker("create", "--name", "clash", busybox, "true", check=True)
    try:
        again = engine.docker("create", "--name", "clash", busybox, "true")
        assert again.returncode != 0
        assert (
            f'The container name "/clash" is already in use by container "{first.stdout.strip()}"'
            in again.stderr
        )
        status, _ = engine.request(
            "POST",
            "/v1.47/containers/create?name=clash",
            json.dumps({"Image": busybox, "Cmd": ["true"]}).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 409
    finally:
        engine.docker("rm", "clash")


def test_generated_names_are_adjective_surname(
    engine: EngineProcess, busybox: str
) -> None:
    cid = engine.docker("create", busybox, "true", check=True).stdout.strip()
    try:
        name = inspect(engine, cid)["Name"]
        assert re.fullmatch(r"/[a-z]+_[a-z]+\d*", name)
    finally:
        engine.docker("rm", cid)


def test_bad_names_and_unknown_ids(engine: EngineProcess, busybox: str) -> None:
    bad = engine.docker("create", "--name", "no spaces!", busybox, "true")
    assert bad.returncode != 0 and "Invalid container name" in bad.stderr
    missing = engine.docker("stop", "nosuchcontainer")
    assert "No such container: nosuchcontainer" in missing.stderr
    status, body = engine.request("GET", "/v1.47/containers/nosuch/json")
    assert status == 404
    assert json.loads(body) == {"message": "No such container: nosuch"}


def test_missing_image_is_404(engine: EngineProcess) -> None:
    status, body = engine.request(
        "POST",
        "/v1.47/containers/create",
        json.dumps({"Image": "nosuch/image:1", "Cmd": ["true"]}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 404
    assert "No such image: nosuch/image:1" in json.loads(body)["message"]


def test_malformed_json_then_engine_still_serves(engine: EngineProcess) -> None:
    status, body = engine.request(
        "POST",
        "/v1.47/containers/create",
        b'{"Image": "x", "Cmd": [',
        {"Content-Type": "application/json"},
    )
    assert status == 400
    assert "invalid JSON" in json.loads(body)["message"]
    status, body = engine.request(
        "POST",
        "/v1.47/containers/create",
        b"[1, 2]",
        {"Content-Type": "application/json"},
    )
    assert status == 400
    assert engine.ping()


def test_unsupported_option_is_refused_by_name(
    engine: EngineProcess, busybox: str
) -> None:
    result = engine.docker("create", "--blkio-weight", "300", busybox, "true")
    assert result.returncode != 0
    assert "--blkio-weight" in result.stderr
    result = engine.docker("create", "--log-driver", "syslog", busybox, "true")
    assert result.returncode != 0 and "syslog" in result.stderr


def test_ps_formats_and_filters(engine: EngineProcess, busybox: str) -> None:
    run_d(engine, "--name", "psdone", "-l", "team=a", busybox, "sh", "-c", "exit 3")
    engine.docker("run", "-d", "--name", "pslive", "-l", "team=b", busybox, "sleep", "60",
                  check=True)  # fmt: skip
    try:
        running = engine.docker(
            "ps", "--format", "{{.Names}}", check=True
        ).stdout.split()
        assert "pslive" in running and "psdone" not in running
        every = engine.docker(
            "ps", "-a", "--format", "{{.Names}} {{.Status}}", check=True
        )
        lines = dict(line.split(" ", 1) for line in every.stdout.splitlines())
        assert lines["pslive"].startswith("Up ")
        assert re.match(r"Exited \(3\) .* ago", lines["psdone"])
        quiet = engine.docker("ps", "-aq", check=True).stdout.split()
        assert all(len(q) == 12 for q in quiet)
        full = engine.docker(
            "ps", "-a", "--no-trunc", "--format", "{{.ID}}", check=True
        )
        assert all(len(i) == 64 for i in full.stdout.split())

        def names(*filters: str) -> list[str]:
            args = [a for f in filters for a in ("--filter", f)]
            out = engine.docker("ps", "-a", *args, "--format", "{{.Names}}", check=True)
            return out.stdout.split()

        assert names("exited=3", "label=team") == ["psdone"]
        assert names("status=running", "label=team") == ["pslive"]
        assert names("label=team=b") == ["pslive"]
        assert "psdone" in names("ancestor=" + busybox)
        assert names("since=psdone", "label=team") == ["pslive"]
        assert names("before=pslive", "label=team") == ["psdone"]
        sized = engine.docker("ps", "-a", "-s", "--filter", "name=psdone", "--format",
                              "{{.Size}}", check=True)  # fmt: skip
        assert "virtual" in sized.stdout
        bad = engine.docker("ps", "--filter", "color=red")
        assert bad.returncode != 0 and "invalid filter" in bad.stderr
    finally:
        engine.docker("rm", "-f", "psdone", "pslive")


def test_rename(engine: EngineProcess, busybox: str) -> None:
    engine.docker("create", "--name", "ren1", busybox, "true", check=True)
    engine.docker("create", "--name", "ren2", busybox, "true", check=True)
    try:
        taken = engine.docker("rename", "ren1", "ren2")
        assert taken.returncode != 0 and "is already in use" in taken.stderr
        engine.docker("rename", "ren1", "ren3", check=True)
        assert inspect(engine, "ren3")["Name"] == "/ren3"
        assert engine.docker("inspect", "ren1").returncode != 0
    finally:
        engine.docker("rm", "-f", "ren2", "ren3")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "sh"),  # the image's CMD
        (["echo", "a", "b"], "a b"),  # args replace CMD
        (["--entrypoint", "echo", "IMAGE"], ""),  # an entrypoint drops the image CMD
        (["--entrypoint", "echo", "IMAGE", "x", "y"], "x y"),
        (["--entrypoint", "", "IMAGE", "echo", "cleared"], "cleared"),
    ],
)
def test_cmd_and_entrypoint(
    engine: EngineProcess, busybox: str, args: list[str], expected: str
) -> None:
    if "IMAGE" in args:
        argv = [busybox if a == "IMAGE" else a for a in args]
    else:
        argv = [busybox, *args]
    cid = run_d(engine, *argv)
    try:
        info = inspect(engine, cid)
        if expected == "sh":
            assert [info["Path"], *info["Args"]] == ["sh"]
        else:
            assert output(engine, cid).strip() == expected
    finally:
        engine.docker("rm", cid)


def test_env_workdir_user_hostname(
    engine: EngineProcess, busybox: str, tmp_path: Path
) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("FROM_FILE=yes\n")
    cid = run_d(
        engine, "-e", "FOO=bar", "--env-file", str(env_file), "-w", "/made/here",
        "-u", "nobody", "--hostname", "boxy", busybox,
        "sh", "-c", "echo $FOO $FROM_FILE $HOSTNAME; pwd; id -u; id -g; hostname",
    )  # fmt: skip
    try:
        assert output(engine, cid).split("\n")[:5] == [
            "bar yes boxy", "/made/here", "65534", "65534", "boxy",
        ]  # fmt: skip
        uid = run_d(engine, "-u", "123:456", busybox, "sh", "-c", "id -u; id -g")
        assert output(engine, uid).split() == ["123", "456"]
        engine.docker("rm", uid)
        bad = engine.docker("run", "-d", "-u", "nosuchuser", busybox, "true")
        assert "unable to find user nosuchuser" in bad.stderr
    finally:
        engine.docker("rm", cid)
        engine.docker("container", "prune", "-f")


def test_init_runs_tini_as_pid1(engine: EngineProcess, busybox: str) -> None:
    cid = run_d(
        engine, "--init", busybox, "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"
    )
    try:
        assert output(engine, cid).startswith("/sbin/docker-init -- sh")
    finally:
        engine.docker("rm", cid)


def test_command_not_found(engine: EngineProcess, busybox: str) -> None:
    result = engine.docker("run", "-d", "--name", "nocmd", busybox, "no-such-binary")
    try:
        assert result.returncode != 0
        assert "no-such-binary" in result.stderr
        info = inspect(engine, "nocmd")
        assert info["State"]["ExitCode"] == 127
        assert "executable file not found" in info["State"]["Error"]
        # --rm: the start error once, exit 127, and nothing left behind.
        gone = engine.docker(
            "run", "--rm", "--name", "nocmd2", busybox, "no-such-binary"
        )
        assert gone.returncode == 127
        assert gone.stderr.count("no-such-binary") == 1
        assert engine.docker("inspect", "nocmd2").returncode != 0
    finally:
        engine.docker("rm", "-f", "nocmd")


def test_commit_keeps_changes(engine: EngineProcess, busybox: str) -> None:
    cid = run_d(engine, busybox, "sh", "-c", "echo kept > /marker")
    try:
        engine.docker(
            "commit", "-c", "CMD cat /marker", cid, "dyt/committed:1", check=True
        )
        out = run_d(engine, "dyt/committed:1")
        assert output(engine, out) == "kept\n"
        engine.docker("rm", out)
    finally:
        engine.docker("rm", cid)
        engine.docker("rmi", "dyt/committed:1")


def test_capabilities_and_privileged(engine: EngineProcess, busybox: str) -> None:
    read_caps = ["sh", "-c", "grep CapEff /proc/self/status; ls /dev | wc -l"]
    default = run_d(engine, busybox, *read_caps)
    added = run_d(
        engine, "--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN", busybox, *read_caps
    )
    privileged = run_d(engine, "--privileged", busybox, *read_caps)
    try:
        caps = {
            name: int(output(engine, cid).split()[1], 16)
            for name, cid in (
                ("default", default),
                ("added", added),
                ("priv", privileged),
            )
        }
        assert caps["default"] == 0xA80425FB  # docker's default set
        assert caps["added"] == (0xA80425FB | 1 << 12) & ~1
        assert caps["priv"] > caps["default"]
        assert int(output(engine, privileged).split()[2]) > int(
            output(engine, default).split()[2]
        )
    finally:
        engine.docker("rm", default, added, privileged)


def test_log_max_size_and_refused_log_options(
    engine: EngineProcess, busybox: str
) -> None:
    cid = run_d(engine, "--log-opt", "max-size=1k", busybox, "sh", "-c", "seq 1 2000")
    try:
        log = engine.root / "data" / "containers" / cid / "ctr.log"
        assert log.stat().st_size < 4096
    finally:
        engine.docker("rm", cid)
    refused = engine.docker("create", "--log-opt", "max-file=3", busybox, "true")
    assert refused.returncode != 0 and "max-file=3" in refused.stderr


def test_seccomp_filter(engine: EngineProcess, busybox: str) -> None:
    read = [
        "sh",
        "-c",
        "grep '^Seccomp:' /proc/self/status; unshare -U true; echo rc=$?",
    ]
    filtered = run_d(engine, busybox, *read)
    unconfined = run_d(engine, "--security-opt", "seccomp=unconfined", busybox, *read)
    try:
        assert output(engine, filtered).split()[:2] == ["Seccomp:", "2"]
        assert "rc=1" in output(engine, filtered)  # unshare: EPERM from the filter
        assert output(engine, unconfined).split()[:2] == ["Seccomp:", "0"]
    finally:
        engine.docker("rm", filtered, unconfined)
