"""``docker build`` (legacy builder) through the real docker CLI 28.

Every test builds FROM the busybox image the ``engine`` fixture loads. Tests
with a RUN step need the engine to run containers; they are skipped, with
the reason, when it cannot.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.engine import EngineProcess

pytestmark = pytest.mark.root

BASE = "dockyard-test/busybox"


def build(
    engine: EngineProcess,
    context: Path | str,
    *args: str,
    stdin: bytes | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``docker build`` with the legacy builder, as the CLI 28 falls back to it."""
    env = {**engine.env(), "DOCKER_BUILDKIT": "0"}
    return subprocess.run(
        ["docker", "build", *args, str(context)],
        env=env,
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result.stdout


def image_config(engine: EngineProcess, ref: str) -> dict:
    out = engine.docker("image", "inspect", ref, check=True).stdout
    return json.loads(out)[0]["Config"]


@pytest.fixture(scope="module")
def runs_containers(engine: EngineProcess) -> EngineProcess:
    """The engine, once it has shown it can run a container."""
    probe = engine.docker("run", "--rm", BASE, "true", timeout=60)
    if probe.returncode != 0:
        reason = f"the engine cannot run containers yet: {probe.stderr.strip()}"
        print(reason)
        pytest.skip(reason)
    return engine


# -- the seed's Dockerfile pattern and the cache ----------------------------


SEED_DOCKERFILE = """\
FROM dockyard-test/busybox
RUN mkdir -p /opt/deps && echo flask > /opt/deps/installed
COPY app.sh /opt/app/
ENTRYPOINT ["sh", "/opt/app/app.sh"]
"""


def test_seed_pattern_then_cache_after_source_change(
    runs_containers: EngineProcess, tmp_path: Path
) -> None:
    engine = runs_containers
    ctx = write(
        tmp_path,
        {"Dockerfile": SEED_DOCKERFILE, "app.sh": "cat /opt/deps/installed; echo v1\n"},
    )
    first = ok(build(engine, ctx, "-t", "seed/app:1"))
    assert "Step 1/4 : FROM dockyard-test/busybox" in first
    assert " ---> Running in " in first
    assert "Removing intermediate container" in first
    assert "Successfully tagged seed/app:1" in first
    assert engine.docker("run", "--rm", "seed/app:1").stdout == "flask\nv1\n"

    # Same inputs: every step from cache.
    again = ok(build(engine, ctx, "-t", "seed/app:1"))
    assert again.count(" ---> Using cache") == 3

    # Only the source changed: the dependency step is reused, COPY on rebuilt.
    (ctx / "app.sh").write_text("cat /opt/deps/installed; echo v2\n")
    rebuilt = ok(build(engine, ctx, "-t", "seed/app:2"))
    step2, _, rest = rebuilt.partition("Step 3/4")
    assert " ---> Using cache" in step2.split("Step 2/4")[1]
    assert " ---> Using cache" not in rest
    assert engine.docker("run", "--rm", "seed/app:2").stdout == "flask\nv2\n"
    assert engine.docker("run", "--rm", "seed/app:1").stdout == "flask\nv1\n"


def test_nocache_rebuilds_every_step(
    runs_containers: EngineProcess, tmp_path: Path
) -> None:
    ctx = write(
        tmp_path, {"Dockerfile": "FROM dockyard-test/busybox\nRUN echo x > /x\n"}
    )
    ok(build(runs_containers, ctx, "-t", "nocache:1"))
    out = ok(build(runs_containers, ctx, "--no-cache", "-t", "nocache:1"))
    assert "Using cache" not in out
    assert " ---> Running in " in out


# -- CMD and ENTRYPOINT -----------------------------------------------------


def test_ubuntu_sleeper(runs_containers: EngineProcess, tmp_path: Path) -> None:
    engine = runs_containers
    ctx = write(
        tmp_path,
        {"Dockerfile": 'FROM dockyard-test/busybox\nENTRYPOINT ["sleep"]\nCMD ["1"]\n'},
    )
    ok(build(engine, ctx, "-t", "ubuntu-sleeper"))
    config = image_config(engine, "ubuntu-sleeper")
    assert config["Entrypoint"] == ["sleep"]
    assert config["Cmd"] == ["1"]

    def process(*run_args: str) -> tuple[str, list[str]]:
        name = engine.docker("create", *run_args, check=True).stdout.strip()
        try:
            engine.docker("start", "-a", name, check=True)
            shown = engine.docker(
                "inspect", "-f", "{{.Path}} {{json .Args}} {{.State.ExitCode}}", name
            ).stdout.split(" ", 1)
            path, rest = shown[0], shown[1]
            args_json, _, code = rest.strip().rpartition(" ")
            assert code == "0"
            return path, json.loads(args_json)
        finally:
            engine.docker("rm", "-f", name)

    assert process("ubuntu-sleeper") == ("sleep", ["1"])
    assert process("ubuntu-sleeper", "0") == ("sleep", ["0"])
    out = engine.docker("run", "--rm", "--entrypoint", "echo", "ubuntu-sleeper", "hi")
    assert out.stdout == "hi\n"


def test_shell_and_exec_forms(runs_containers: EngineProcess, tmp_path: Path) -> None:
    engine = runs_containers
    write(
        tmp_path / "shell",
        {
            "Dockerfile": "FROM dockyard-test/busybox\nENV WHO=world\nCMD echo hello $WHO\n"
        },
    )
    write(
        tmp_path / "exec",
        {
            "Dockerfile": 'FROM dockyard-test/busybox\nENV WHO=world\nCMD ["echo", "hello $WHO"]\n'
        },
    )
    ok(build(engine, tmp_path / "shell", "-t", "forms:shell"))
    ok(build(engine, tmp_path / "exec", "-t", "forms:exec"))
    assert image_config(engine, "forms:shell")["Cmd"] == [
        "/bin/sh",
        "-c",
        "echo hello $WHO",
    ]
    assert image_config(engine, "forms:exec")["Cmd"] == ["echo", "hello $WHO"]
    assert engine.docker("run", "--rm", "forms:shell").stdout == "hello world\n"
    assert engine.docker("run", "--rm", "forms:exec").stdout == "hello $WHO\n"


def test_entrypoint_drops_inherited_cmd(engine: EngineProcess, tmp_path: Path) -> None:
    ctx = write(
        tmp_path, {"Dockerfile": "FROM dockyard-test/busybox\nENTRYPOINT echo hi\n"}
    )
    ok(build(engine, ctx, "-t", "entry:shell"))
    config = image_config(engine, "entry:shell")
    assert config["Entrypoint"] == ["/bin/sh", "-c", "echo hi"]
    assert not config.get("Cmd")


# -- stages, ignore files, args ------------------------------------------------


MULTI_STAGE = """\
FROM dockyard-test/busybox AS builder
RUN mkdir /out && echo built > /out/artifact
FROM dockyard-test/busybox AS tester
RUN echo tested > /tested
FROM dockyard-test/busybox
COPY --from=builder /out/artifact /app/artifact
CMD ["cat", "/app/artifact"]
"""


def test_multi_stage_and_target(runs_containers: EngineProcess, tmp_path: Path) -> None:
    engine = runs_containers
    ctx = write(tmp_path, {"Dockerfile": MULTI_STAGE})
    out = ok(build(engine, ctx, "-t", "multi:final"))
    assert "Step 7/7 : CMD" in out
    assert engine.docker("run", "--rm", "multi:final").stdout == "built\n"
    missing = engine.docker("run", "--rm", "multi:final", "ls", "/out")
    assert missing.returncode != 0

    target = ok(build(engine, ctx, "--target", "builder", "-t", "multi:builder"))
    assert "Step 2/2" in target
    assert engine.docker(
        "run", "--rm", "multi:builder", "cat", "/out/artifact"
    ).stdout == ("built\n")
    bad = build(engine, ctx, "--target", "nope")
    assert bad.returncode != 0
    assert "failed to reach build target nope in Dockerfile" in bad.stderr


def test_dockerignore(engine: EngineProcess, tmp_path: Path) -> None:
    ctx = write(
        tmp_path,
        {
            "Dockerfile": "FROM dockyard-test/busybox\nCOPY . /ctx/\n",
            ".dockerignore": "# not for the image\n*.secret\nlogs/\n!logs/keep.log\n",
            "app.txt": "app\n",
            "token.secret": "s3cr3t\n",
            "logs/debug.log": "noise\n",
            "logs/keep.log": "kept\n",
        },
    )
    ok(build(engine, ctx, "-t", "ignore:1"))
    listing = engine.docker("run", "--rm", "ignore:1", "find", "/ctx", "-type", "f")
    if listing.returncode != 0:
        pytest.skip(f"the engine cannot run containers yet: {listing.stderr.strip()}")
    files = set(listing.stdout.split())
    assert "/ctx/app.txt" in files
    assert "/ctx/logs/keep.log" in files
    assert "/ctx/token.secret" not in files
    assert "/ctx/logs/debug.log" not in files


def test_build_args(runs_containers: EngineProcess, tmp_path: Path) -> None:
    engine = runs_containers
    ctx = write(
        tmp_path,
        {
            "Dockerfile": (
                "ARG BASE=dockyard-test/busybox\n"
                "FROM ${BASE}\n"
                "ARG GREETING=hello\n"
                "ARG WHO\n"
                "ENV FULL=${GREETING}-${WHO:-nobody}\n"
                "RUN echo $GREETING $WHO > /greeting\n"
            )
        },
    )
    out = ok(
        build(
            engine,
            ctx,
            "--build-arg",
            "WHO=docker",
            "--build-arg",
            "UNUSED=1",
            "-t",
            "args:1",
        )
    )
    assert "[Warning] One or more build-args [UNUSED] were not consumed" in out
    assert engine.docker("run", "--rm", "args:1", "cat", "/greeting").stdout == (
        "hello docker\n"
    )
    assert "FULL=hello-docker" in image_config(engine, "args:1")["Env"]
    history = engine.docker(
        "history", "--no-trunc", "--format", "{{.CreatedBy}}", "args:1"
    ).stdout
    assert (
        "|2 GREETING=hello WHO=docker /bin/sh -c echo $GREETING $WHO > /greeting"
        in history
    )

    # A different build arg value is a cache miss for the RUN step.
    other = ok(build(engine, ctx, "--build-arg", "WHO=you", "-t", "args:2"))
    assert other.count("Using cache") == 2  # the two ARGs; ENV and RUN differ
    assert (
        engine.docker("run", "--rm", "args:2", "cat", "/greeting").stdout
        == "hello you\n"
    )


def test_labels_and_metadata(engine: EngineProcess, tmp_path: Path) -> None:
    ctx = write(
        tmp_path,
        {
            "Dockerfile": (
                "FROM dockyard-test/busybox\n"
                'LABEL maintainer="me" "with space"=yes\n'
                "EXPOSE 80 53/udp\n"
                "WORKDIR /srv\nWORKDIR app\n"
                "USER nobody\n"
                "VOLUME /data\n"
                "STOPSIGNAL SIGINT\n"
                "HEALTHCHECK --interval=30s --retries=2 CMD true\n"
                'SHELL ["/bin/sh", "-ec"]\n'
                "ONBUILD RUN echo child\n"
            )
        },
    )
    ok(build(engine, ctx, "--label", "built.by=tests", "-t", "meta:1"))
    config = image_config(engine, "meta:1")
    assert config["Labels"] == {
        "maintainer": "me",
        "with space": "yes",
        "built.by": "tests",
    }
    assert set(config["ExposedPorts"]) == {"80/tcp", "53/udp"}
    assert config["WorkingDir"] == "/srv/app"
    assert config["User"] == "nobody"
    assert config["Volumes"] == {"/data": {}}
    assert config["StopSignal"] == "SIGINT"
    assert config["Healthcheck"] == {
        "Test": ["CMD-SHELL", "true"],
        "Interval": 30_000_000_000,
        "Retries": 2,
    }
    assert config["Shell"] == ["/bin/sh", "-ec"]
    assert config["OnBuild"] == ["RUN echo child"]


def test_onbuild_triggers_run_in_child(
    runs_containers: EngineProcess, tmp_path: Path
) -> None:
    engine = runs_containers
    write(
        tmp_path / "parent",
        {"Dockerfile": "FROM dockyard-test/busybox\nONBUILD COPY marker /marker\n"},
    )
    write(
        tmp_path / "child",
        {
            "Dockerfile": 'FROM onbuild:parent\nCMD ["cat", "/marker"]\n',
            "marker": "from child\n",
        },
    )
    ok(build(engine, tmp_path / "parent", "-t", "onbuild:parent"))
    out = ok(build(engine, tmp_path / "child", "-t", "onbuild:child"))
    assert "# Executing 1 build trigger" in out
    assert engine.docker("run", "--rm", "onbuild:child").stdout == "from child\n"
    assert not image_config(engine, "onbuild:child").get("OnBuild")


# -- contexts ---------------------------------------------------------------


def test_dockerfile_from_stdin(runs_containers: EngineProcess, tmp_path: Path) -> None:
    dockerfile = b"FROM dockyard-test/busybox\nRUN echo from-stdin > /stdin\n"
    out = ok(
        build(runs_containers, "-", "-t", "stdin:1", stdin=dockerfile, cwd=tmp_path)
    )
    assert "Successfully tagged stdin:1" in out
    shown = runs_containers.docker("run", "--rm", "stdin:1", "cat", "/stdin").stdout
    assert shown == "from-stdin\n"


def test_tar_context_from_stdin(engine: EngineProcess, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in {
            "Dockerfile": b"FROM dockyard-test/busybox\nCOPY hello.txt /\n",
            "hello.txt": b"hello\n",
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    env = {**engine.env(), "DOCKER_BUILDKIT": "0"}
    result = subprocess.run(
        ["docker", "build", "-t", "tarctx:1", "-"],
        env=env,
        input=buf.getvalue(),
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    history = engine.docker(
        "history", "--no-trunc", "--format", "{{.CreatedBy}}", "tarctx:1"
    )
    assert "COPY file:" in history.stdout


def test_dockerfile_outside_context(engine: EngineProcess, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"data.txt": "data\n"})
    outside = tmp_path / "elsewhere.Dockerfile"
    outside.write_text("FROM dockyard-test/busybox\nCOPY data.txt /data.txt\n")
    out = ok(build(engine, ctx, "-f", str(outside), "-t", "outside:1"))
    assert "Step 2/2 : COPY data.txt /data.txt" in out


def test_copy_rules_and_add_archive(engine: EngineProcess, tmp_path: Path) -> None:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        info = tarfile.TarInfo("pkg/inside.txt")
        info.size = 7
        tar.addfile(info, io.BytesIO(b"inside\n"))
    (tmp_path / "bundle.tar.gz").write_bytes(archive.getvalue())
    write(
        tmp_path,
        {
            "Dockerfile": (
                "FROM dockyard-test/busybox\n"
                "COPY src /dst\n"
                "COPY *.conf /etc/app/\n"
                "COPY --chown=nobody:nogroup --chmod=600 one.conf /owned\n"
                "ADD bundle.tar.gz /unpacked/\n"
                "COPY bundle.tar.gz /copied/\n"
            ),
            "src/a/b.txt": "b\n",
            "one.conf": "1\n",
            "two.conf": "2\n",
        },
    )
    ok(build(engine, tmp_path, "-t", "copies:1"))
    listing = engine.docker(
        "run", "--rm", "copies:1", "sh", "-c",
        "find /dst /etc/app /unpacked /copied | sort; stat -c '%U:%G %a' /owned",
    )  # fmt: skip
    if listing.returncode != 0:
        pytest.skip(f"the engine cannot run containers yet: {listing.stderr.strip()}")
    lines = listing.stdout.split("\n")
    assert "/dst/a/b.txt" in lines
    assert "/etc/app/one.conf" in lines and "/etc/app/two.conf" in lines
    assert "/unpacked/pkg/inside.txt" in lines
    assert "/copied/bundle.tar.gz" in lines
    assert "nobody:nogroup 600" in lines


@pytest.fixture
def http_file(tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "served"
    served.mkdir()
    (served / "remote.txt").write_text("from the web\n")
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(served)
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/remote.txt"
    finally:
        server.shutdown()
        server.server_close()


def test_add_url(engine: EngineProcess, tmp_path: Path, http_file: str) -> None:
    ctx = write(
        tmp_path / "ctx",
        {"Dockerfile": f"FROM dockyard-test/busybox\nADD {http_file} /web/\n"},
    )
    ok(build(engine, ctx, "-t", "addurl:1"))
    history = engine.docker(
        "history", "--no-trunc", "--format", "{{.CreatedBy}}", "addurl:1"
    )
    assert "ADD file:" in history.stdout and " in /web/" in history.stdout
    shown = engine.docker("run", "--rm", "addurl:1", "cat", "/web/remote.txt")
    if shown.returncode == 0:
        assert shown.stdout == "from the web\n"


# -- history ------------------------------------------------------------------


def test_history_shows_the_dockerfile(
    runs_containers: EngineProcess, tmp_path: Path
) -> None:
    engine = runs_containers
    ctx = write(
        tmp_path,
        {
            "Dockerfile": (
                "FROM dockyard-test/busybox\n"
                "ENV MODE=prod\n"
                "RUN head -c 3000 /dev/zero > /blob\n"
                "COPY app.txt /app/\n"
                'CMD ["cat", "/app/app.txt"]\n'
            ),
            "app.txt": "app\n",
        },
    )
    ok(build(engine, ctx, "-t", "hist:1"))
    rows = engine.docker(
        "history", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Size}}", "hist:1"
    ).stdout.splitlines()
    assert rows[0] == '/bin/sh -c #(nop)  CMD ["cat" "/app/app.txt"]|0B'
    assert rows[1].startswith("/bin/sh -c #(nop) COPY file:")
    assert rows[1].endswith(" in /app/ |4B")
    assert rows[2].startswith("/bin/sh -c head -c 3000 /dev/zero > /blob|")
    assert rows[2].endswith("kB")
    assert rows[3] == "/bin/sh -c #(nop)  ENV MODE=prod|0B"
    assert rows[4] == "busybox-static from Debian|1.98MB"


# -- bad input ------------------------------------------------------------------


def assert_fails(
    engine: EngineProcess, tmp_path: Path, dockerfile: str, message: str, tag: str
) -> subprocess.CompletedProcess[str]:
    ctx = write(tmp_path, {"Dockerfile": dockerfile, "present.txt": "x\n"})
    result = build(engine, ctx, "-t", tag)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert engine.docker("image", "inspect", tag).returncode != 0
    return result


def test_unknown_instruction(engine: EngineProcess, tmp_path: Path) -> None:
    assert_fails(
        engine,
        tmp_path,
        "FROM dockyard-test/busybox\nFOO bar\n",
        "dockerfile parse error line 2: unknown instruction: FOO",
        "bad:unknown",
    )


def test_copy_source_missing(engine: EngineProcess, tmp_path: Path) -> None:
    assert_fails(
        engine,
        tmp_path,
        "FROM dockyard-test/busybox\nCOPY nope.txt /x\n",
        "COPY failed: file not found in build context or excluded by .dockerignore: "
        "stat nope.txt: file does not exist",
        "bad:missing",
    )


def test_copy_source_outside_context(engine: EngineProcess, tmp_path: Path) -> None:
    assert_fails(
        engine,
        tmp_path,
        "FROM dockyard-test/busybox\nCOPY ../present.txt /x\n",
        "COPY failed: forbidden path outside the build context: ../present.txt",
        "bad:outside",
    )


def test_copy_several_sources_needs_directory(
    engine: EngineProcess, tmp_path: Path
) -> None:
    assert_fails(
        engine,
        tmp_path,
        "FROM dockyard-test/busybox\nCOPY present.txt Dockerfile /file\n",
        "When using COPY with more than one source file, the destination must be a directory and end with a /",
        "bad:many",
    )


def test_failing_run_step(runs_containers: EngineProcess, tmp_path: Path) -> None:
    result = assert_fails(
        runs_containers,
        tmp_path,
        'FROM dockyard-test/busybox\nRUN echo before\nRUN exit 3\nCMD ["true"]\n',
        "The command '/bin/sh -c exit 3' returned a non-zero code: 3",
        "bad:run",
    )
    assert result.returncode == 3
    assert "Step 3/4 : RUN exit 3" in result.stdout
    assert "Step 4/4" not in result.stdout


def test_missing_base_image(engine: EngineProcess, tmp_path: Path) -> None:
    ctx = write(tmp_path, {"Dockerfile": "FROM 127.0.0.1:1/nothing/here:1\n"})
    result = build(engine, ctx, "-t", "bad:base")
    assert result.returncode != 0
    assert "Step 1/1 : FROM 127.0.0.1:1/nothing/here:1" in result.stdout


# -- docker-py --------------------------------------------------------------------


def test_docker_py_build(runs_containers: EngineProcess, tmp_path: Path) -> None:
    docker = pytest.importorskip("docker")
    ctx = write(
        tmp_path,
        {
            "Dockerfile": 'FROM dockyard-test/busybox\nARG N=1\nRUN echo $N > /n\nCMD ["cat", "/n"]\n',
        },
    )
    client = docker.DockerClient(base_url=runs_containers.host)
    try:
        image, logs = client.images.build(
            path=str(ctx), tag="pybuilt:1", buildargs={"N": "7"}
        )
        lines = [chunk.get("stream", "") for chunk in logs]
        assert any(line.startswith("Step 3/4 : RUN echo $N") for line in lines)
        assert "pybuilt:1" in image.tags
        assert client.containers.run("pybuilt:1", remove=True) == b"7\n"
        with pytest.raises(docker.errors.BuildError) as err:
            client.images.build(
                fileobj=io.BytesIO(b"FROM dockyard-test/busybox\nRUN exit 5\n")
            )
        assert "returned a non-zero code: 5" in str(err.value)
    finally:
        client.close()


def test_cache_from_after_prune(runs_containers: EngineProcess, tmp_path: Path) -> None:
    engine = runs_containers
    ctx = write(
        tmp_path,
        {
            "Dockerfile": "FROM dockyard-test/busybox\nRUN echo one > /one\nCOPY f /f\nENV X=1\n",
            "f": "f\n",
        },
    )
    ok(build(engine, ctx, "-t", "cachefrom:1"))
    status, body = engine.request("POST", "/v1.47/build/prune")
    assert status == 200, body
    assert json.loads(body)["SpaceReclaimed"] == 0

    cold = ok(build(engine, ctx, "-t", "cachefrom:2"))
    assert "Using cache" not in cold
    engine.request("POST", "/v1.47/build/prune")
    warm = ok(build(engine, ctx, "--cache-from", "cachefrom:1", "-t", "cachefrom:3"))
    assert warm.count(" ---> Using cache") == 3
    first = engine.docker("image", "inspect", "-f", "{{.Id}}", "cachefrom:1").stdout
    third = engine.docker("image", "inspect", "-f", "{{.Id}}", "cachefrom:3").stdout
    assert first == third


def test_remote_context_url(engine: EngineProcess, tmp_path: Path) -> None:
    """docker-py passes a URL ``path`` as ``remote``: a tar or a bare Dockerfile."""
    docker = pytest.importorskip("docker")
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "ctx.tar.gz", "w:gz") as tar:
        for name, data in {
            "Dockerfile": b"FROM dockyard-test/busybox\nCOPY remote.txt /\n",
            "remote.txt": b"remote\n",
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (served / "Dockerfile").write_text("FROM dockyard-test/busybox\nLABEL remote=yes\n")
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(served)
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    client = docker.DockerClient(base_url=engine.host)
    try:
        image, _ = client.images.build(path=f"{base}/ctx.tar.gz", tag="remote:tar")
        assert "remote:tar" in image.tags
        history = engine.docker("history", "--no-trunc", "remote:tar").stdout
        assert "COPY file:" in history
        image, _ = client.images.build(path=f"{base}/Dockerfile", tag="remote:df")
        assert image.labels == {"remote": "yes"}
    finally:
        client.close()
        server.shutdown()
        server.server_close()


def test_quiet_prints_only_the_id(engine: EngineProcess, tmp_path: Path) -> None:
    ctx = write(
        tmp_path,
        {"Dockerfile": "FROM dockyard-test/busybox\nHEALTHCHECK NONE\nLABEL q=1\n"},
    )
    out = ok(
        build(engine, ctx, "-q", "--iidfile", str(tmp_path / "iid"), "-t", "quiet:1")
    )
    image_id = engine.docker(
        "image", "inspect", "-f", "{{.Id}}", "quiet:1"
    ).stdout.strip()
    assert out == f"{image_id}\n"
    # As with dockerd, the CLI writes the quiet stream, newline included.
    assert (tmp_path / "iid").read_text() == f"{image_id}\n"
    assert image_config(engine, "quiet:1")["Healthcheck"] == {"Test": ["NONE"]}


def test_buildkit_only_flags_are_refused(engine: EngineProcess, tmp_path: Path) -> None:
    assert_fails(
        engine,
        tmp_path,
        "FROM dockyard-test/busybox\nRUN --mount=type=cache,target=/c true\n",
        "the --mount option requires BuildKit",
        "bad:mount",
    )


def test_interrupted_build_removes_its_container(
    runs_containers: EngineProcess, tmp_path: Path
) -> None:
    engine = runs_containers
    ctx = write(tmp_path, {"Dockerfile": "FROM dockyard-test/busybox\nRUN sleep 60\n"})
    env = {**engine.env(), "DOCKER_BUILDKIT": "0"}
    proc = subprocess.Popen(
        ["docker", "build", "--no-cache", str(ctx)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    running = ""
    for line in proc.stdout:
        if " ---> Running in " in line:
            running = line.split()[-1]
            break
    assert running
    assert running in engine.docker("ps", "-aq").stdout
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    # The engine notices the hang-up within its RUN poll; wait for the removal.
    for _ in range(100):
        if running not in engine.docker("ps", "-aq").stdout:
            break
        time.sleep(0.1)
    assert running not in engine.docker("ps", "-aq").stdout


def test_copy_from_image_and_stage_index(engine: EngineProcess, tmp_path: Path) -> None:
    ctx = write(
        tmp_path,
        {
            "Dockerfile": (
                "FROM dockyard-test/busybox AS first\n"
                "COPY note.txt /note.txt\n"
                "FROM scratch\n"
                "COPY --from=dockyard-test/busybox /etc/passwd /etc/passwd\n"
                "COPY --from=0 /note.txt /note.txt\n"
            ),
            "note.txt": "note\n",
        },
    )
    ok(build(engine, ctx, "-t", "copyfrom:1"))
    name = engine.docker("create", "copyfrom:1", "x", check=True).stdout.strip()
    try:
        exported = subprocess.run(
            ["docker", "export", name],
            env=engine.env(),
            capture_output=True,
            check=True,
        ).stdout
    finally:
        engine.docker("rm", "-f", name)
    with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
        files = {m.name: m for m in tar.getmembers() if m.isfile()}
        assert set(files) >= {"etc/passwd", "note.txt"}
        note = tar.extractfile(files["note.txt"])
        assert note is not None and note.read() == b"note\n"
