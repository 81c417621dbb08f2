"""The reference client sessions, replayed against a real Dockyard engine.

/work/shared/reference/docker-cli-calls.txt records what the docker CLI 28,
docker-py 7.2 and docker-compose 1.29.2 sent Debian's dockerd for 80-odd
commands, and the exit code each command had. This module runs the same
commands (in the same groups, with the test's own busybox image in place of
``engrecon/busybox``, free ports in place of 8080-8082 and loopback
registries from tests/support/registry.py) with the real clients against a
dockyard-engine of its own, and checks the exit codes and the output dockerd
gave for them (compared by hand against dockerd 20.10; what differs on
purpose, such as API 1.47 fields, is not asserted).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import running_engine
from tests.support.engine import EngineProcess
from tests.support.images import BUSYBOX_REF
from tests.support.registry import REGISTRY_BIN, RegistryProcess, free_port

pytestmark = [pytest.mark.root]

BUSYBOX = BUSYBOX_REF.removesuffix(":latest")
COMPOSE_VENV = Path("/var/cache/dockyard/compose-venv")
# PyYAML 5.4 (what compose 1.29 pins) does not build with Cython 3.
COMPOSE_CONSTRAINTS = "cython<3\n"
COMPOSE_PACKAGES = ["docker-compose==1.29.2", "docker==6.1.3", "requests<2.32"]


@pytest.fixture(scope="module")
def dy(busybox_tar: Path) -> Iterator[EngineProcess]:
    """An engine of this module's own: the sweep names containers web, fg1..."""
    with running_engine(busybox_tar, prefix="dycompat-") as eng:
        yield eng


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    """The build context the reference used (work/ctx): a file and a Dockerfile."""
    folder = tmp_path / "ctx"
    folder.mkdir()
    (folder / "file.txt").write_text("hello\n")
    (folder / "Dockerfile").write_text(
        f"FROM {BUSYBOX}\n"
        "ARG X=0\n"
        "COPY file.txt /file.txt\n"
        "RUN echo built-$X > /built.txt\n"
        'CMD ["cat", "/built.txt"]\n'
    )
    return folder


def sh(
    engine: EngineProcess,
    command: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """A shell command line (pipes, timeout, script) with DOCKER_HOST set."""
    return subprocess.run(
        ["bash", "-c", command],
        env={**engine.env(), **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def expect(
    result: subprocess.CompletedProcess[str], code: int, engine: EngineProcess
) -> subprocess.CompletedProcess[str]:
    """Assert the exit code the reference recorded; show everything if not."""
    assert result.returncode == code, (
        f"{result.args}: exit {result.returncode}, want {code}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}\n{engine.log_tail(30)}"
    )
    return result


def ok(engine: EngineProcess, *args: str, timeout: float = 120) -> str:
    return expect(engine.docker(*args, timeout=timeout), 0, engine).stdout


def test_version_and_info(dy: EngineProcess) -> None:
    version = json.loads(ok(dy, "version", "--format", "{{json .}}"))
    assert version["Server"]["ApiVersion"] == "1.47"
    assert version["Client"]["Version"].startswith("28.")
    info = json.loads(ok(dy, "info", "--format", "{{json .}}"))
    assert info["OSType"] == "linux" and info["Images"] >= 1


def test_web_container_session(dy: EngineProcess, ctx: Path, tmp_path: Path) -> None:
    """run -d -p, curl, ps, exec, logs, inspect, port, top, stats, rename, cp,
    diff, commit, stop, rm: the reference's "web" container, in its order."""
    port = free_port()
    cid = ok(
        dy,
        "run",
        "-d",
        "-p",
        f"{port}:80",
        "--name",
        "web",
        BUSYBOX,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ).strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/passwd") as resp:
            assert resp.status == 200 and b"root:x:0:0" in resp.read()

        ps = ok(dy, "ps").splitlines()
        assert ps[0].split() == [
            "CONTAINER",
            "ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ]
        row = next(line for line in ps if line.endswith(" web"))
        assert row.startswith(cid[:12]) and '"httpd -f -p 80 -h /…"' in row
        assert f"0.0.0.0:{port}->80/tcp, [::]:{port}->80/tcp" in row
        assert " Up " in row
        assert cid[:12] in ok(dy, "ps", "-a")

        assert ok(dy, "exec", "web", "echo", "hi") == "hi\n"
        assert expect(sh(dy, "echo piped | docker exec -i web cat"), 0, dy).stdout == (
            "piped\n"
        )
        assert ok(dy, "exec", "-d", "web", "sleep", "1") == ""
        logs = dy.docker("logs", "web")
        assert expect(logs, 0, dy).stdout == "" and logs.stderr == ""
        # The reference ended `docker logs -f` with timeout(1): still following.
        expect(sh(dy, "timeout 2 docker logs -f web"), 124, dy)

        inspect = json.loads(ok(dy, "inspect", "web"))[0]
        assert inspect["Id"] == cid and inspect["Name"] == "/web"
        assert inspect["State"]["Status"] == "running"
        assert inspect["HostConfig"]["PortBindings"] == {
            "80/tcp": [{"HostIp": "", "HostPort": str(port)}]
        }
        # `docker inspect IMAGE` asks for a container first, then the image.
        image = json.loads(ok(dy, "inspect", BUSYBOX))[0]
        assert image["RepoTags"] == [BUSYBOX_REF] and image["Id"].startswith("sha256:")

        assert ok(dy, "port", "web") == (
            f"80/tcp -> 0.0.0.0:{port}\n80/tcp -> [::]:{port}\n"
        )
        top = ok(dy, "top", "web").splitlines()
        assert top[0].split() == [
            "UID",
            "PID",
            "PPID",
            "C",
            "STIME",
            "TTY",
            "TIME",
            "CMD",
        ]
        assert top[1].split()[0] == "root" and top[1].endswith("httpd -f -p 80 -h /etc")
        stats = ok(dy, "stats", "--no-stream", "web").splitlines()
        assert stats[0].split()[:4] == ["CONTAINER", "ID", "NAME", "CPU"]
        assert stats[1].split()[:2] == [cid[:12], "web"]

        assert ok(dy, "rename", "web", "web2") == ""
        ok(dy, "cp", str(ctx / "file.txt"), "web2:/tmp/file.txt")
        out = tmp_path / "cp-out.txt"
        ok(dy, "cp", "web2:/etc/passwd", str(out))
        assert out.read_text().startswith("root:x:0:0:root:/root:/bin/sh\n")
        assert ok(dy, "diff", "web2") == "C /tmp\nA /tmp/file.txt\n"

        committed = ok(dy, "commit", "web2", "dockyard-test/committed:1").strip()
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", committed)
        history = ok(dy, "history", "dockyard-test/committed:1").splitlines()
        assert len(history) == 3 and "httpd -f -p 80 -h /etc" in history[1]

        assert ok(dy, "stop", "web2") == "web2\n"
        assert ok(dy, "rm", "web2") == "web2\n"
        rmi = ok(dy, "rmi", "dockyard-test/committed:1").splitlines()
        assert rmi[0] == "Untagged: dockyard-test/committed:1"
        assert rmi[1] == f"Deleted: {committed}"
    finally:
        dy.docker("rm", "-f", "web", "web2")


def test_cp_errors(dy: EngineProcess, ctx: Path) -> None:
    """docker cp's refusals, word for word, and nothing more on stderr."""
    ok(dy, "run", "-d", "--name", "cpc", BUSYBOX, "sleep", "100")
    try:
        missing = expect(dy.docker("cp", "cpc:/nosuch", str(ctx / "out")), 1, dy)
        assert missing.stderr == (
            "Error response from daemon: Could not find the file /nosuch in container cpc\n"
        )
        # The 404 comes while the CLI still sends the tar: the engine must
        # not read the rest of it as a second request.
        into = dy.docker("cp", str(ctx / "file.txt"), "cpc:/nosuchdir/file.txt")
        expect(into, 1, dy)
        assert into.stderr == (
            "Error response from daemon: Could not find the file /nosuchdir in container cpc\n"
        )
        ok(dy, "cp", str(ctx), "cpc:/ctxcopy")
        assert ok(dy, "exec", "cpc", "ls", "/ctxcopy") == "Dockerfile\nfile.txt\n"
    finally:
        dy.docker("rm", "-f", "cpc")


def test_stats_shape(dy: EngineProcess) -> None:
    """One stats sample has the fields and list types dockerd gives."""
    ok(dy, "run", "-d", "--name", "st", BUSYBOX, "sleep", "100")
    try:
        status, body = dy.request("GET", "/v1.47/containers/st/stats?stream=0")
        assert status == 200
        sample = json.loads(body)
        assert sample["name"] == "/st" and sample["pids_stats"]["current"] >= 1
        assert sample["memory_stats"]["usage"] > 0
        blkio = sample["blkio_stats"]
        assert len(blkio) == 8
        if not Path("/sys/fs/cgroup/cgroup.controllers").exists():
            # cgroup v1, as dockerd: every list present, failcnt omitted at 0.
            assert all(isinstance(v, list) for v in blkio.values()), blkio
            assert sample["memory_stats"].get("failcnt", 1) > 0
    finally:
        dy.docker("rm", "-f", "st")


def test_foreground_attach_and_wait(dy: EngineProcess) -> None:
    result = expect(dy.docker("run", "--rm", BUSYBOX, "echo", "hi"), 0, dy)
    assert result.stdout == "hi\n"
    piped = sh(dy, f"echo piped | docker run -i --rm {BUSYBOX} cat")
    assert expect(piped, 0, dy).stdout == "piped\n"

    try:
        fg = dy.docker(
            "run",
            "--name",
            "fg1",
            BUSYBOX,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        )
        expect(fg, 3, dy)
        assert fg.stdout == "out\n" and fg.stderr == "err\n"
        row = next(line for line in ok(dy, "ps", "-a").splitlines() if "fg1" in line)
        assert "Exited (3)" in row
        assert "fg1" not in ok(dy, "ps")

        logs = expect(dy.docker("logs", "--tail", "5", "-t", "fg1"), 0, dy)
        stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z"
        assert re.fullmatch(f"{stamp} out\n", logs.stdout)
        assert re.fullmatch(f"{stamp} err\n", logs.stderr)

        again = expect(dy.docker("start", "-a", "fg1"), 3, dy)
        assert again.stdout == "out\n" and again.stderr == "err\n"

        listed = ok(
            dy,
            "container",
            "ls",
            "-a",
            "--format",
            "{{json .}}",
            "--filter",
            "status=exited",
        )
        rows = [json.loads(line) for line in listed.splitlines()]
        fg1 = next(r for r in rows if r["Names"] == "fg1")
        assert fg1["State"] == "exited" and fg1["Image"] == BUSYBOX
        assert fg1["Command"] == '"sh -c \'echo out; ec…"'
        assert fg1["Size"].endswith("(virtual 1.98MB)")

        # attach while it sleeps, then see every line it prints.
        script = "sleep 2; for i in 1 2 3; do echo line$i; sleep 0.3; done"
        attached = sh(
            dy,
            f"docker run -d --name att {BUSYBOX} sh -c '{script}' && docker attach att",
        )
        assert expect(attached, 0, dy).stdout.splitlines()[1:] == [
            "line1",
            "line2",
            "line3",
        ]
        assert ok(dy, "wait", "att") == "0\n"
        stopped = dy.docker("attach", "att")
        expect(stopped, 1, dy)
        assert "You cannot attach to a stopped container, start it first" in (
            stopped.stderr
        )
    finally:
        dy.docker("rm", "-f", "fg1", "att")


def test_logs_options(dy: EngineProcess) -> None:
    """--details, a bad --tail and --since as dockerd answers them."""
    script = "echo o1; echo e1 >&2; echo o2"
    ok(dy, "run", "--name", "lg", BUSYBOX, "sh", "-c", script)
    try:
        details = expect(dy.docker("logs", "--details", "lg"), 0, dy)
        # No log attributes: dockerd still puts their separator first.
        assert details.stdout == " o1\n o2\n" and details.stderr == " e1\n"
        stamped = ok(dy, "logs", "--details", "-t", "lg")
        assert re.fullmatch(r"(\S+Z  o\d\n){2}", stamped), stamped
        # dockerd reads a --tail that is no number as "all".
        everything = expect(dy.docker("logs", "--tail", "abc", "lg"), 0, dy)
        assert everything.stdout == "o1\no2\n" and everything.stderr == "e1\n"
        # stdout and stderr reach the log through two pipes: which line is
        # last is a race (dockerd's too), but it is one line.
        last = expect(dy.docker("logs", "--tail", "1", "lg"), 0, dy)
        assert (last.stdout + last.stderr) in ("o2\n", "e1\n")
        bad = expect(dy.docker("logs", "--since", "xyz", "lg"), 1, dy)
        assert 'invalid value for "since"' in bad.stderr
    finally:
        dy.docker("rm", "-f", "lg")


def test_created_container_lifecycle(dy: EngineProcess) -> None:
    try:
        cid = ok(
            dy,
            "create",
            "--name",
            "cr1",
            "-e",
            "A=1",
            "-v",
            "vol1:/data",
            "-l",
            "k=v",
            "--restart",
            "no",
            BUSYBOX,
            "sleep",
            "100",
        )
        assert re.fullmatch(r"[0-9a-f]{64}\n", cid)
        inspect = json.loads(ok(dy, "inspect", "cr1"))[0]
        assert "A=1" in inspect["Config"]["Env"]
        assert inspect["Config"]["Labels"] == {"k": "v"}
        assert inspect["Mounts"][0]["Name"] == "vol1"
        assert inspect["Mounts"][0]["Destination"] == "/data"
        assert inspect["State"]["Status"] == "created"

        assert ok(dy, "start", "cr1") == "cr1\n"
        assert ok(dy, "restart", "-t", "1", "cr1") == "cr1\n"
        assert ok(dy, "pause", "cr1") == "cr1\n"
        status = ok(dy, "ps", "--format", "{{.Status}}", "--filter", "name=cr1")
        assert status.startswith("Up ") and status.endswith("(Paused)\n")
        assert ok(dy, "unpause", "cr1") == "cr1\n"
        assert ok(dy, "kill", "cr1") == "cr1\n"
        assert ok(dy, "wait", "cr1") == "137\n"
        assert ok(dy, "rm", "-f", "cr1") == "cr1\n"
    finally:
        dy.docker("rm", "-f", "cr1")
        dy.docker("volume", "rm", "vol1")


def test_rm_force_several(dy: EngineProcess) -> None:
    """`docker rm -f cr1 fg1 att` prints each name, running or not."""
    ok(dy, "create", "--name", "many1", BUSYBOX, "true")
    ok(dy, "run", "-d", "--name", "many2", BUSYBOX, "sleep", "100")
    ok(dy, "run", "--name", "many3", BUSYBOX, "true")
    assert ok(dy, "rm", "-f", "many1", "many2", "many3") == "many1\nmany2\nmany3\n"
    # The CLI 28 still exits 0 for -f when the daemon says 404.
    missing = expect(dy.docker("rm", "-f", "many1"), 0, dy)
    assert missing.stderr == "Error response from daemon: No such container: many1\n"


def test_image_commands(dy: EngineProcess) -> None:
    images = ok(dy, "images").splitlines()
    assert images[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    row = next(line for line in images if line.startswith(BUSYBOX + " "))
    assert row.split()[1] == "latest" and row.endswith("1.98MB")
    assert any(
        line.startswith(BUSYBOX + " ")
        for line in ok(dy, "image", "ls", "-a").splitlines()
    )

    image_id = ok(dy, "image", "inspect", "--format", "{{.Id}}", BUSYBOX).strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image_id)
    assert ok(dy, "tag", BUSYBOX, "dockyard-test/tagged:1") == ""
    tagged = ok(dy, "image", "inspect", "--format", "{{.Id}}", "dockyard-test/tagged:1")
    assert tagged.strip() == image_id
    history = ok(dy, "history", BUSYBOX).splitlines()
    assert history[0].split() == [
        "IMAGE",
        "CREATED",
        "CREATED",
        "BY",
        "SIZE",
        "COMMENT",
    ]
    assert (
        history[1].startswith(image_id[7:19])
        and "busybox-static from Debian" in history[1]
    )
    assert (
        ok(dy, "rmi", "dockyard-test/tagged:1") == "Untagged: dockyard-test/tagged:1\n"
    )
    missing = expect(dy.docker("rmi", "nosuch"), 1, dy)
    assert "No such image: nosuch:latest" in missing.stderr


def test_legacy_builds(dy: EngineProcess, ctx: Path) -> None:
    legacy = {"DOCKER_BUILDKIT": "0"}
    try:
        first = expect(
            sh(dy, "docker build -t dockyard-test/built:1 .", ctx, legacy), 0, dy
        )
        assert first.stdout.startswith("Sending build context to Docker daemon")
        assert "Step 1/5 : FROM dockyard-test/busybox" in first.stdout
        assert "Step 4/5 : RUN echo built-$X > /built.txt" in first.stdout
        assert "Successfully tagged dockyard-test/built:1" in first.stdout
        assert "DEPRECATED: The legacy builder is deprecated" in first.stderr

        # No DOCKER_BUILDKIT and no buildx: the CLI 28 still uses /build.
        second = expect(sh(dy, "docker build -t dockyard-test/built:2 .", ctx), 0, dy)
        assert second.stdout.count(" ---> Using cache") == 4
        built = [
            ok(dy, "image", "inspect", "-f", "{{.Id}}", f"dockyard-test/built:{n}")
            for n in (1, 2)
        ]
        assert built[0] == built[1]

        quiet = expect(
            sh(
                dy,
                "docker build -q --build-arg X=1 --label a=b -f Dockerfile "
                "-t dockyard-test/built:3 .",
                ctx,
                legacy,
            ),
            0,
            dy,
        )
        assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", quiet.stdout)
        assert ok(dy, "run", "--rm", "dockyard-test/built:3") == "built-1\n"
        labels = ok(
            dy, "inspect", "-f", "{{json .Config.Labels}}", "dockyard-test/built:3"
        )
        assert json.loads(labels) == {"a": "b"}

        buildkit = sh(
            dy, "docker build -t dockyard-test/built:4 .", ctx, {"DOCKER_BUILDKIT": "1"}
        )
        expect(buildkit, 1, dy)
        assert (
            "BuildKit is enabled but the buildx component is missing" in buildkit.stderr
        )

        piped = sh(
            dy, "tar -c . | docker build -t dockyard-test/stdin-built -", ctx, legacy
        )
        assert (
            "Successfully tagged dockyard-test/stdin-built:latest"
            in expect(piped, 0, dy).stdout
        )
        rmi = ok(dy, "rmi", "dockyard-test/stdin-built").splitlines()
        assert rmi[0] == "Untagged: dockyard-test/stdin-built:latest"
        assert all(line.startswith("Deleted: sha256:") for line in rmi[1:])
    finally:
        dy.docker(
            "rmi",
            "dockyard-test/built:1",
            "dockyard-test/built:2",
            "dockyard-test/built:3",
            "dockyard-test/stdin-built",
        )


def test_network_commands(dy: EngineProcess) -> None:
    net_id = ok(dy, "network", "create", "n1").strip()
    created = ""
    try:
        assert re.fullmatch(r"[0-9a-f]{64}", net_id)
        listed = ok(dy, "network", "ls").splitlines()
        assert listed[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
        names = sorted(line.split()[1] for line in listed[1:])
        assert names == ["bridge", "host", "n1", "none"]
        assert f"{net_id[:12]}   n1        bridge    local" in listed

        inspect = json.loads(ok(dy, "network", "inspect", "n1"))[0]
        assert inspect["Id"] == net_id and inspect["Driver"] == "bridge"
        assert inspect["Containers"] == {} and inspect["Options"] == {}
        # The CLI sends IPAM.Options {}; dockerd gives back what it got.
        assert inspect["IPAM"]["Options"] == {}
        assert inspect["IPAM"]["Config"][0]["Subnet"].endswith(".0.0/16")

        ok(dy, "run", "--rm", "--network", "n1", BUSYBOX, "true")
        created = ok(dy, "create", BUSYBOX, "true").strip()
        assert ok(dy, "network", "connect", "n1", created) == ""
        networks = ok(
            dy, "inspect", "-f", "{{json .NetworkSettings.Networks}}", created
        )
        assert sorted(json.loads(networks)) == ["bridge", "n1"]
        ok(dy, "rm", created)
        assert ok(dy, "network", "rm", "n1") == "n1\n"
        gone = expect(dy.docker("network", "inspect", "n1"), 1, dy)
        assert "network n1 not found" in gone.stderr
    finally:
        if created:
            dy.docker("rm", "-f", created)
        dy.docker("network", "rm", "n1")


def test_volume_commands(dy: EngineProcess) -> None:
    assert ok(dy, "volume", "create", "v1") == "v1\n"
    try:
        listed = ok(dy, "volume", "ls").splitlines()
        assert listed[0].split() == ["DRIVER", "VOLUME", "NAME"]
        assert "local     v1" in listed
        inspect = json.loads(ok(dy, "volume", "inspect", "v1"))[0]
        assert inspect["Name"] == "v1" and inspect["Driver"] == "local"
        assert inspect["Scope"] == "local" and inspect["Options"] is None
        # The CLI sends no Labels: dockerd shows null, not {}.
        assert inspect["Labels"] is None
        assert inspect["Mountpoint"].endswith("/volumes/v1/_data")
        assert ok(dy, "volume", "rm", "v1") == "v1\n"
        again = expect(dy.docker("volume", "rm", "v1"), 1, dy)
        assert "get v1: no such volume" in again.stderr
    finally:
        dy.docker("volume", "rm", "v1")


@pytest.fixture(scope="module")
def registries() -> Iterator[tuple[RegistryProcess, RegistryProcess]]:
    """The reference's two registries: open (5000) and htpasswd (5001)."""
    if not REGISTRY_BIN.exists():
        pytest.skip("needs Debian's docker-registry (/usr/bin/docker-registry)")
    root = Path(tempfile.mkdtemp(prefix="dycompat-reg-", dir="/var/tmp"))
    try:
        with (
            RegistryProcess(root / "open") as open_reg,
            RegistryProcess(root / "basic", users={"testuser": "testpass"}) as basic,
        ):
            yield open_reg, basic
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.registry
def test_registry_commands(
    dy: EngineProcess, registries: tuple[RegistryProcess, RegistryProcess]
) -> None:
    open_reg, basic = registries
    public = f"{open_reg.host}/engrecon/busybox:1"
    private = f"{basic.host}/private/busybox:1"
    try:
        assert ok(dy, "tag", BUSYBOX, public) == ""
        pushed = ok(dy, "push", public, timeout=300)
        assert pushed.startswith(f"The push refers to repository [{public[:-2]}]\n")
        digest = re.search(r"1: digest: (sha256:[0-9a-f]{64}) size: \d+", pushed)
        assert digest, pushed
        assert ok(dy, "rmi", public).splitlines() == [
            f"Untagged: {public}",
            f"Untagged: {public[:-2]}@{digest.group(1)}",
        ]
        pulled = ok(dy, "pull", public, timeout=300)
        # The busybox image holds this config already: dockerd shows no
        # layer line then, only the digest and the status.
        assert pulled.startswith("1: Pulling from engrecon/busybox\nDigest: ")
        assert f"Digest: {digest.group(1)}" in pulled
        assert pulled.endswith(
            f"Status: Downloaded newer image for {public}\n{public}\n"
        )
        missing = expect(dy.docker("pull", f"{open_reg.host}/doesnotexist:1"), 1, dy)
        assert (
            f"manifest for {open_reg.host}/doesnotexist:1 not found: "
            "manifest unknown: manifest unknown"
        ) in missing.stderr

        login = dy.docker("login", basic.host, "-u", "testuser", "-p", "testpass")
        assert "Login Succeeded" in expect(login, 0, dy).stdout
        ok(dy, "tag", BUSYBOX, private)
        assert f"1: digest: {digest.group(1)}" in ok(dy, "push", private, timeout=300)
        assert (
            ok(dy, "logout", basic.host)
            == f"Removing login credentials for {basic.host}\n"
        )
        ok(dy, "rmi", private)

        refused = expect(dy.docker("pull", private), 1, dy)
        # dockerd HEADs the manifest first, Dockyard GETs it: the method differs.
        url = f"http://{basic.host}/v2/private/busybox/manifests/1"
        assert re.search(
            f'(Head|Get) "{re.escape(url)}": no basic auth credentials', refused.stderr
        ), refused.stderr
        stdin_login = sh(
            dy, f"docker login -u testuser --password-stdin {basic.host} <<< testpass"
        )
        assert "Login Succeeded" in expect(stdin_login, 0, dy).stdout
        assert ok(dy, "pull", private, timeout=300).endswith(f"{private}\n")
        wrong = dy.docker("login", basic.host, "-u", "testuser", "-p", "wrong")
        expect(wrong, 1, dy)
        assert (
            f"login attempt to http://{basic.host}/v2/ failed with status: "
            "401 Unauthorized"
        ) in wrong.stderr
    finally:
        dy.docker("logout", basic.host)
        dy.docker("rmi", public, private)


@pytest.mark.registry
def test_push_without_credentials(
    dy: EngineProcess, registries: tuple[RegistryProcess, RegistryProcess]
) -> None:
    """dockerd's famous push refusal: a Basic registry and no login."""
    _, basic = registries
    target = f"{basic.host}/private/anon:1"
    ok(dy, "tag", BUSYBOX, target)
    try:
        refused = expect(dy.docker("push", target), 1, dy)
        assert refused.stderr.strip().endswith("no basic auth credentials")
    finally:
        dy.docker("rmi", target)


def test_save_load_export_import(dy: EngineProcess, tmp_path: Path) -> None:
    saved = tmp_path / "save.tar"
    assert ok(dy, "save", "-o", str(saved), BUSYBOX) == ""
    assert saved.stat().st_size > 1_000_000
    assert ok(dy, "load", "-i", str(saved)) == f"Loaded image: {BUSYBOX_REF}\n"

    created = ok(dy, "create", BUSYBOX, "true").strip()
    exported = tmp_path / "export.tar"
    try:
        assert ok(dy, "export", "-o", str(exported), created) == ""
    finally:
        ok(dy, "rm", created)
    listing = subprocess.run(
        ["tar", "tf", str(exported)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert "bin/busybox" in listing and "etc/passwd" in listing

    imported = ok(dy, "import", str(exported), "dockyard-test/imported:1").strip()
    try:
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", imported)
        history = ok(
            dy,
            "history",
            "--format",
            "{{.CreatedBy}}|{{.Comment}}",
            "dockyard-test/imported:1",
        )
        assert history == "|Imported from -\n"
        assert ok(dy, "run", "--rm", "dockyard-test/imported:1", "echo", "hi") == "hi\n"
    finally:
        dy.docker("rmi", "dockyard-test/imported:1")


def test_events_df_and_prunes(dy: EngineProcess) -> None:
    expect(sh(dy, "timeout 1 docker events"), 124, dy)
    df = ok(dy, "system", "df").splitlines()
    assert df[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [line.split()[0] for line in df[1:]] == [
        "Images",
        "Containers",
        "Local",
        "Build",
    ]

    ok(dy, "create", "--name", "prunable", BUSYBOX, "true")
    pruned = ok(dy, "container", "prune", "-f")
    assert (
        pruned.startswith("Deleted Containers:\n")
        and "Total reclaimed space:" in pruned
    )
    assert "Total reclaimed space:" in ok(dy, "image", "prune", "-f")
    assert "Total reclaimed space:" in ok(dy, "volume", "prune", "-f")
    ok(dy, "network", "create", "prunable")
    assert ok(dy, "network", "prune", "-f") == "Deleted Networks:\nprunable\n\n"
    assert "Total reclaimed space:" in ok(dy, "system", "prune", "-f")
    assert BUSYBOX_REF.split(":")[0] in ok(dy, "images")


def test_container_events(dy: EngineProcess) -> None:
    """`docker events` shows what dockerd logged for run, exec, stop and rm."""
    since = str(int(time.time()))
    ok(dy, "run", "--rm", "--name", "ev1", "-l", "team=qa", BUSYBOX, "true")
    ok(dy, "run", "-d", "--name", "ev2", BUSYBOX, "sleep", "100")
    try:
        ok(dy, "exec", "ev2", "true")
        ok(dy, "stop", "-t", "1", "ev2")
    finally:
        dy.docker("rm", "-f", "ev2")
    until = str(int(time.time()) + 1)
    lines = ok(
        dy,
        "events",
        "--since",
        since,
        "--until",
        until,
        "--format",
        "{{.Action}}|{{.Actor.Attributes.name}}|{{.Actor.Attributes.team}}",
    )
    events = [line.split("|") for line in lines.splitlines()]
    ev1 = [action for action, name, _ in events if name == "ev1"]
    assert ev1 == ["create", "attach", "start", "die", "destroy"]
    assert ["attach", "ev1", "qa"] in events
    ev2 = [action for action, name, _ in events if name == "ev2"]
    assert ev2[:3] == ["create", "start", "exec_create: true "]
    assert "exec_start: true " in ev2 and "exec_die" in ev2
    assert ev2[-2:] == ["stop", "destroy"]


def test_df_counts_top_level_images(dy: EngineProcess, ctx: Path) -> None:
    """system df lists what `docker images` lists, not the build's parents."""
    sh(dy, "docker build -q -t dockyard-test/dfbuilt .", ctx, {"DOCKER_BUILDKIT": "0"})
    try:
        listed = set(ok(dy, "images", "-q").split())
        status, body = dy.request("GET", "/v1.47/system/df")
        assert status == 200
        images = json.loads(body)["Images"]
        assert {i["Id"][7:19] for i in images} == listed
        built = next(
            i for i in images if "dockyard-test/dfbuilt:latest" in i["RepoTags"]
        )
        # Its own layers are unique: only listed images share layers.
        assert built["Size"] - built["SharedSize"] > 0
        base = next(i for i in images if BUSYBOX_REF in i["RepoTags"])
        assert base["Containers"] == 0
    finally:
        dy.docker("rmi", "dockyard-test/dfbuilt")


def tty_sh(engine: EngineProcess, command: str) -> subprocess.CompletedProcess[str]:
    """``sh`` for ``script`` runs, with the shell's stdin held open until it ends.

    At its stdin's EOF script ends the pty's input, the CLI then closes its
    side of the stream, and a TTY session ends there with output still on
    its way (dockerd does the same: moby's CopyStreams closes stdout when a
    TTY's stdin closes). A user's terminal does not end its input.
    """
    proc = subprocess.Popen(
        ["bash", "-c", command],
        env=engine.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    try:
        out = proc.stdout.read()
        err = proc.stderr.read()
        proc.wait(120)
    finally:
        proc.stdin.close()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux script")
def test_terminals(dy: EngineProcess) -> None:
    """run -it and exec -it under a pty (script), with the size the pty has."""
    run = tty_sh(
        dy,
        f'script -qec "stty rows 40 cols 120; docker run -it --rm {BUSYBOX} '
        "sh -c 'stty size; exit 0'\" /dev/null",
    )
    assert "40 120" in expect(run, 0, dy).stdout
    ok(
        dy,
        "run",
        "-d",
        "--name",
        "ttyc",
        "-t",
        BUSYBOX,
        "sh",
        "-c",
        "while :; do sleep 1; done",
    )
    try:
        exec_it = tty_sh(
            dy,
            'script -qec "stty rows 40 cols 120; docker exec -it ttyc '
            "sh -c 'stty size'\" /dev/null",
        )
        assert "40 120" in expect(exec_it, 0, dy).stdout
        plain = tty_sh(
            dy,
            "script -qec \"docker exec -it ttyc sh -c 'stty size'\" /dev/null",
        )
        expect(plain, 0, dy)
    finally:
        assert ok(dy, "rm", "-f", "ttyc") == "ttyc\n"


def test_run_options(dy: EngineProcess, ctx: Path) -> None:
    out = ok(
        dy,
        "run",
        "--rm",
        "-v",
        f"{ctx}:/ctx:ro",
        "-e",
        "FOO=bar",
        "-w",
        "/ctx",
        "--user",
        "0:0",
        "--entrypoint",
        "cat",
        BUSYBOX,
        "file.txt",
    )
    assert out == "hello\n"
    assert ok(dy, "run", "--rm", "--init", BUSYBOX, "true") == ""
    init = ok(dy, "run", "--rm", "--init", BUSYBOX, "ps", "-o", "pid,comm")
    assert init.splitlines()[1].split() == ["1", "docker-init"]
    ok(
        dy,
        "run",
        "--rm",
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "50",
        BUSYBOX,
        "true",
    )


def test_error_paths(dy: EngineProcess) -> None:
    try:
        ok(dy, "run", "--rm", "--name", "nameclash1", BUSYBOX, "true")
        ok(dy, "run", "--name", "dup", BUSYBOX, "true")
        clash = expect(dy.docker("run", "--name", "dup", BUSYBOX, "true"), 125, dy)
        assert 'Conflict. The container name "/dup" is already in use by container' in (
            clash.stderr
        )
        assert ok(dy, "rm", "dup") == "dup\n"
    finally:
        dy.docker("rm", "-f", "dup")

    # The reference pulled from Docker Hub (unreachable here); a closed
    # loopback port fails the same way without leaving the machine.
    closed = f"127.0.0.1:{free_port()}"
    missing = expect(
        dy.docker("run", "--rm", f"{closed}/doesnotexist/image:1", "true"), 125, dy
    )
    assert (
        f"Unable to find image '{closed}/doesnotexist/image:1' locally"
        in missing.stderr
    )
    assert (
        f'Get "http://{closed}/v2/": dial tcp {closed}: connect: connection refused'
        in (missing.stderr)
    )
    nosuch = expect(dy.docker("stop", "nosuchcontainer"), 1, dy)
    assert (
        nosuch.stderr
        == "Error response from daemon: No such container: nosuchcontainer\n"
    )
    inspect = expect(dy.docker("inspect", "nosuch"), 1, dy)
    assert (
        inspect.stdout == "[]\n" and "Error: No such object: nosuch" in inspect.stderr
    )


def test_docker_py_session(
    dy: EngineProcess, ctx: Path, registries: tuple[RegistryProcess, RegistryProcess]
) -> None:
    """The reference's docker-py 7.2 calls, through the installed docker-py."""
    docker = pytest.importorskip("docker")
    open_reg, _ = registries
    client = docker.DockerClient(base_url=dy.host)
    port = free_port()
    try:
        assert client.ping() is True
        assert client.version()["ApiVersion"] == "1.47"
        assert client.containers.run(BUSYBOX, "echo hi", remove=True) == b"hi\n"

        web = client.containers.run(
            BUSYBOX,
            "httpd -f -p 80 -h /etc",
            detach=True,
            ports={"80/tcp": port},
            name="pyweb",
        )
        web.reload()
        assert web.status == "running"
        assert web.ports["80/tcp"][0] == {"HostIp": "0.0.0.0", "HostPort": str(port)}
        result = web.exec_run("echo hi")
        assert result.exit_code == 0 and result.output == b"hi\n"
        assert web.logs() == b""
        assert "pyweb" in [c.name for c in client.containers.list(all=True)]
        web.stop(timeout=1)
        assert web.wait()["StatusCode"] in (137, 143)
        web.remove()

        tags = [t for image in client.images.list() for t in image.tags]
        assert BUSYBOX_REF in tags
        built, logs = client.images.build(path=str(ctx), tag="dockyard-test/pybuilt")
        assert "dockyard-test/pybuilt:latest" in built.tags
        assert any("Successfully tagged" in chunk.get("stream", "") for chunk in logs)

        public = f"{open_reg.host}/engrecon/pybusybox"
        client.images.get(BUSYBOX).tag(public, "1")
        for _ in client.images.push(public, tag="1", stream=True, decode=True):
            pass
        client.images.remove(f"{public}:1")
        pulled = client.images.pull(public, tag="1")
        assert f"{public}:1" in pulled.tags
        client.images.remove(f"{public}:1")
        client.images.remove("dockyard-test/pybuilt")

        network = client.networks.create("pyn")
        assert network.attrs["Driver"] == "bridge"
        network.remove()
        volume = client.volumes.create("pyv")
        assert volume.attrs["Driver"] == "local"
        volume.remove()

        with pytest.raises(docker.errors.NotFound, match="No such container: nosuch"):
            client.containers.get("nosuch")
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get("nosuch")
        with pytest.raises(docker.errors.ContainerError) as failed:
            client.containers.run(BUSYBOX, "sh -c 'echo boom >&2; exit 4'", remove=True)
        assert failed.value.exit_status == 4 and failed.value.stderr == b"boom\n"
    finally:
        client.close()
        dy.docker("rm", "-f", "pyweb")


def _compose() -> Path:
    """docker-compose 1.29.2 in its own venv (it needs docker-py 6.1.3)."""
    binary = COMPOSE_VENV / "bin" / "docker-compose"
    if binary.exists():
        return binary
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(COMPOSE_VENV)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        constraints = COMPOSE_VENV / "constraints.txt"
        constraints.write_text(COMPOSE_CONSTRAINTS)
        pip = subprocess.run(
            [str(COMPOSE_VENV / "bin" / "pip"), "install", "-q", *COMPOSE_PACKAGES],
            env={**os.environ, "PIP_CONSTRAINT": str(constraints)},
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as err:
        shutil.rmtree(COMPOSE_VENV, ignore_errors=True)
        pytest.skip(f"cannot create the docker-compose venv: {err}")
    if pip.returncode != 0 or not binary.exists():
        shutil.rmtree(COMPOSE_VENV, ignore_errors=True)
        pytest.skip(f"cannot install docker-compose 1.29.2: {pip.stderr[-800:]}")
    return binary


def test_compose_1_29_up_ps_logs_down(dy: EngineProcess, tmp_path: Path) -> None:
    compose = _compose()
    project = tmp_path / "cproj"
    project.mkdir()
    port = free_port()
    (project / "docker-compose.yml").write_text(
        'version: "2.4"\n'
        "services:\n"
        "  web:\n"
        f"    image: {BUSYBOX}\n"
        "    command: httpd -f -p 80 -h /etc\n"
        "    ports:\n"
        f'      - "{port}:80"\n'
        "  worker:\n"
        "    build: .\n"
        "    command: sh -c 'echo worker-up; while :; do sleep 1; done'\n"
        "    volumes:\n"
        "      - data:/data\n"
        "volumes:\n"
        "  data: {}\n"
    )
    (project / "Dockerfile").write_text(f"FROM {BUSYBOX}\nRUN echo w > /w.txt\n")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(compose), *args],
            cwd=project,
            env=dy.env(),
            capture_output=True,
            text=True,
            timeout=300,
        )

    try:
        up = expect(run("up", "-d"), 0, dy)
        assert 'Creating network "cproj_default" with the default driver' in up.stderr
        assert 'Creating volume "cproj_data" with default driver' in up.stderr
        assert "Successfully tagged cproj_worker:latest" in up.stdout + up.stderr
        assert (
            "Creating cproj_web_1" in up.stderr
            and "Creating cproj_worker_1" in up.stderr
        )

        ps = expect(run("ps"), 0, dy).stdout.splitlines()
        web = next(line for line in ps if line.startswith("cproj_web_1"))
        assert " Up " in web and f"0.0.0.0:{port}->80/tcp" in web
        worker = next(line for line in ps if line.startswith("cproj_worker_1"))
        assert " Up " in worker
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/passwd") as resp:
            assert resp.status == 200

        deadline_logs = ""
        for _ in range(50):
            deadline_logs = expect(
                run("logs", "--no-color", "--tail", "2"), 0, dy
            ).stdout
            if "worker-up" in deadline_logs:
                break
            subprocess.run(["sleep", "0.2"], check=True)
        assert re.search(r"worker_1\s+\| worker-up", deadline_logs), deadline_logs
    finally:
        down = run("down", "-v")
        dy.docker("rmi", "cproj_worker")
    expect(down, 0, dy)
    assert "Removing network cproj_default" in down.stderr
    assert "Removing volume cproj_data" in down.stderr
    assert (
        ok(dy, "ps", "-aq", "--filter", "label=com.docker.compose.project=cproj") == ""
    )
    assert "cproj_default" not in ok(dy, "network", "ls")
    assert "cproj_data" not in ok(dy, "volume", "ls")


# -- gaps in files this sweep does not own (engine/containers/...) --


def test_kill_waits_for_the_exit(dy: EngineProcess) -> None:
    ok(dy, "run", "-d", "--name", "killed", BUSYBOX, "sleep", "100")
    try:
        assert ok(dy, "kill", "killed") == "killed\n"
        state = ok(
            dy, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "killed"
        )
        assert state == "exited 137\n"
    finally:
        dy.docker("rm", "-f", "killed")


def test_init_layer_files(dy: EngineProcess) -> None:
    listing = ok(dy, "run", "--rm", BUSYBOX, "ls", "-a", "/", "/etc")
    assert ".dockerenv" in listing.split() and "mtab" in listing.split()


def test_inspect_normalised_host_config(dy: EngineProcess) -> None:
    ok(dy, "create", "--name", "normal", BUSYBOX, "true")
    try:
        host = json.loads(ok(dy, "inspect", "-f", "{{json .HostConfig}}", "normal"))
        assert host["PidsLimit"] is None
        assert "/proc/kcore" in (host["MaskedPaths"] or [])
        assert "/proc/sys" in (host["ReadonlyPaths"] or [])
    finally:
        dy.docker("rm", "-f", "normal")


def test_ps_ports_of_a_created_container(dy: EngineProcess) -> None:
    ok(dy, "create", "--name", "unstarted", "-p", f"{free_port()}:80", BUSYBOX, "true")
    try:
        row = ok(dy, "ps", "-a", "--format", "{{.Ports}}", "--filter", "name=unstarted")
        assert row == "\n"
    finally:
        dy.docker("rm", "-f", "unstarted")
