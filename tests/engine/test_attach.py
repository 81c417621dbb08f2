"""Attach: multiplexed frames, detach keys, conmon's attach socket, the CLI.

The conmon test runs a real conmon and runc on a busybox rootfs, without the
engine; the CLI tests run the real docker CLI and docker-py against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.containers.attach import AttachManager
from engine.containers.streams import (
    DetachScanner,
    frame,
    parse_detach_keys,
    parse_frames,
)
from engine.errors import InvalidParameter
from tests.conftest import need_root
from tests.support.engine import EngineProcess
from tests.support.images import busybox_rootfs_tar

# -- wire formats --


def test_frame_header_is_stream_and_big_endian_size() -> None:
    assert frame(1, b"hi\n") == b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n"
    assert frame(2, b"x" * 300)[:8] == b"\x02\x00\x00\x00\x00\x00\x01\x2c"
    assert parse_frames(frame(1, b"a") + frame(2, b"bc")) == [(1, b"a"), (2, b"bc")]


def test_detach_keys_parse_like_dockerd() -> None:
    assert parse_detach_keys(None) == b"\x10\x11"
    assert parse_detach_keys("ctrl-a,x") == b"\x01x"
    assert parse_detach_keys("ctrl-@,ctrl-[,ctrl-_") == b"\x00\x1b\x1f"
    with pytest.raises(InvalidParameter):
        parse_detach_keys("ctrl-1")
    with pytest.raises(InvalidParameter):
        parse_detach_keys("alt-x")


def test_detach_scanner_holds_a_prefix_and_releases_it() -> None:
    scanner = DetachScanner(b"\x10\x11")
    assert scanner.feed(b"ab\x10") == (b"ab", False)
    # The held ctrl-p was not the start of the sequence after all.
    assert scanner.feed(b"c") == (b"\x10c", False)
    assert scanner.feed(b"x\x10") == (b"x", False)
    assert scanner.feed(b"\x11rest") == (b"", True)


# -- conmon directly --


@pytest.fixture
def conmon_container() -> Iterator[SimpleNamespace]:
    """A runc container under conmon (created, not started), as the engine makes.

    The rootfs is a plain directory; the process reads a line, echoes it
    and writes to both streams.
    """
    need_root()
    runc = shutil.which("runc")
    if runc is None or shutil.which("conmon") is None:
        pytest.skip("needs runc and conmon")
    base = Path(tempfile.mkdtemp(prefix="dyio-", dir="/var/tmp"))
    cid = base.name
    state = base / "runc"
    try:
        yield _start_conmon(base, runc)
    finally:
        subprocess.run(
            [runc, "--root", str(state), "delete", "-f", cid], capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)
        for parent in Path("/sys/fs/cgroup").glob("*/dockyard-test"):
            with contextlib.suppress(OSError):
                parent.rmdir()


def _start_conmon(base: Path, runc: str) -> SimpleNamespace:
    cid = base.name
    state = base / "runc"
    bundle = base / "bundle"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(busybox_rootfs_tar())) as tar:
        tar.extractall(rootfs)
    # The applets are hard links whose tar mode (0644) ends on the shared inode.
    (rootfs / "bin" / "busybox").chmod(0o755)
    subprocess.run([runc, "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = [
        "sh", "-c", "echo before; read x; echo got $x; echo oops >&2; exit 5",
    ]  # fmt: skip
    spec["root"]["readonly"] = False
    spec["linux"]["cgroupsPath"] = f"dockyard-test/{cid}"
    (bundle / "config.json").write_text(json.dumps(spec))
    sync_r, sync_w = os.pipe()
    args = [
        "conmon", "--api-version", "1", "-c", cid, "-u", cid, "-n", cid,
        "-r", runc, "--runtime-arg", "--root", "--runtime-arg", str(state),
        "-b", str(bundle), "-p", str(bundle / "pid"),
        "-l", f"k8s-file:{base / 'ctr.log'}", "--exit-dir", str(base),
        "--socket-dir-path", str(base), "-i", "--syslog",
    ]  # fmt: skip
    env = dict(os.environ, _OCI_SYNCPIPE=str(sync_w))
    proc = subprocess.Popen(args, pass_fds=(sync_w,), env=env, cwd=bundle)
    os.close(sync_w)
    with os.fdopen(sync_r, "rb") as sync:
        reply = json.loads(sync.readline() or b"{}")
    proc.wait()
    assert reply.get("data", -1) > 0, reply
    return SimpleNamespace(
        id=cid,
        name=cid,
        config={"OpenStdin": True, "StdinOnce": True, "Tty": False},
        host_config={},
        state={"Running": False, "Pid": reply["data"]},
        bundle=bundle,
        attach_socket=base / cid / "attach",
        ctl_path=bundle / "ctl",
        log_path=base / "ctr.log",
        runc=[runc, "--root", str(state)],
    )


class _Pipe:
    """A hijacked connection made of a socketpair: server side and client side."""

    def __init__(self) -> None:
        self.server, self.client = socket.socketpair()

    async def streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(sock=self.server)


@pytest.mark.root
def test_session_opened_before_start_sees_all_output_and_feeds_stdin(
    conmon_container: SimpleNamespace,
) -> None:
    c = conmon_container

    async def scenario() -> bytes:
        manager = AttachManager(SimpleNamespace())  # type: ignore[arg-type]
        serve = await manager.open_session(
            c, stdin=True, stdout=True, stderr=True, detach_keys=b"\x10\x11"
        )
        pipe = _Pipe()
        reader, writer = await pipe.streams()
        # The client types its line and closes its stdin before the start.
        pipe.client.sendall(b"hello\n")
        pipe.client.shutdown(socket.SHUT_WR)
        served = asyncio.ensure_future(serve(reader, writer))
        await manager.container_created(c)
        await asyncio.to_thread(subprocess.run, [*c.runc, "start", c.id], check=True)
        why = await asyncio.wait_for(served, 30)
        assert why == "exited"
        writer.close()
        pipe.client.setblocking(True)
        data = b""
        while chunk := await asyncio.to_thread(pipe.client.recv, 65536):
            data += chunk
        pipe.client.close()
        return data

    data = asyncio.run(scenario())
    frames = parse_frames(data)
    stdout = b"".join(p for s, p in frames if s == 1)
    stderr = b"".join(p for s, p in frames if s == 2)
    assert stdout == b"before\ngot hello\n"
    assert stderr == b"oops\n"


# -- the docker CLI --


def _run(
    engine: EngineProcess, *args: str, **kw: object
) -> subprocess.CompletedProcess[str]:
    return engine.docker(*args, **kw)  # type: ignore[arg-type]


@pytest.mark.root
def test_docker_run_keeps_streams_apart_and_returns_exit_code(
    engine: EngineProcess, busybox: str
) -> None:
    result = engine.docker(
        "run", "--rm", busybox, "sh", "-c", "echo out; echo err >&2; exit 3"
    )
    assert result.returncode == 3
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"


@pytest.mark.root
def test_piped_stdin_reaches_the_process_and_closes(
    engine: EngineProcess, busybox: str
) -> None:
    result = engine.docker("run", "-i", "--rm", busybox, "cat", input=b"piped\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "piped\n"


def _script(engine: EngineProcess, command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on a pseudo-terminal, as a user at a terminal would."""
    return subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        env=engine.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.root
def test_tty_run_sees_the_client_terminal_size(
    engine: EngineProcess, busybox: str
) -> None:
    result = _script(
        engine,
        f"stty rows 40 cols 120; docker run -it --rm {busybox} sh -c 'stty size; exit 0'",
    )
    assert result.returncode == 0, result.stdout
    assert "40 120" in result.stdout


@pytest.mark.root
def test_docker_attach_follows_a_running_container(
    engine: EngineProcess, busybox: str
) -> None:
    name = "attach-follow"
    engine.docker(
        "run", "-d", "--name", name, busybox, "sh", "-c",
        "sleep 1; for i in 1 2 3; do echo line$i; sleep 0.2; done; exit 4",
        check=True,
    )  # fmt: skip
    try:
        result = engine.docker("attach", name)
        assert result.returncode == 4
        assert "line3\n" in result.stdout
    finally:
        engine.docker("rm", "-f", name)


@pytest.mark.root
def test_docker_start_attach_waits_for_the_next_run(
    engine: EngineProcess, busybox: str
) -> None:
    name = "attach-start"
    engine.docker("create", "--name", name, busybox, "echo", "again", check=True)
    try:
        first = engine.docker("start", "-a", name)
        second = engine.docker("start", "-a", name)
        assert first.stdout == "again\n"
        assert second.stdout == "again\n"
    finally:
        engine.docker("rm", "-f", name)


@pytest.mark.root
def test_resize_of_a_stopped_container_is_a_conflict(
    engine: EngineProcess, busybox: str
) -> None:
    name = "resize-stopped"
    engine.docker("create", "-t", "--name", name, busybox, "true", check=True)
    try:
        status, body = engine.request("POST", f"/containers/{name}/resize?h=10&w=20")
        assert status == 409
        assert b"is not running" in body
    finally:
        engine.docker("rm", "-f", name)


@pytest.mark.root
def test_attach_websocket_is_refused_clearly(
    engine: EngineProcess, busybox: str
) -> None:
    name = "attach-ws"
    engine.docker("create", "--name", name, busybox, "true", check=True)
    try:
        status, body = engine.request("GET", f"/containers/{name}/attach/ws")
        assert status == 400
        assert b"websocket" in body
    finally:
        engine.docker("rm", "-f", name)


@pytest.mark.root
def test_docker_py_attach_socket(engine: EngineProcess, busybox: str) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=engine.host)
    container = client.containers.create(
        busybox, ["sh", "-c", "read x; echo got $x"], stdin_open=True
    )
    try:
        sock = container.attach_socket(params={"stdin": 1, "stdout": 1, "stream": 1})
        container.start()
        sock._sock.sendall(b"py\n")
        data = b""
        while chunk := sock._sock.recv(4096):
            data += chunk
        assert b"got py\n" in data
    finally:
        container.remove(force=True)
        client.close()


def _hijack(engine: EngineProcess, path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(60)
    sock.connect(str(engine.socket))
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: docker\r\n"
        "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 UPGRADED"), head
    assert b"application/vnd.docker.raw-stream" in head
    return sock


@pytest.mark.root
def test_tty_attach_detaches_on_the_detach_keys(
    engine: EngineProcess, busybox: str
) -> None:
    name = "attach-detach"
    engine.docker("run", "-dit", "--name", name, busybox, "sh", check=True)
    try:
        sock = _hijack(
            engine, f"/containers/{name}/attach?stream=1&stdin=1&stdout=1&stderr=1"
        )
        sock.sendall(b"echo marker-$((6*7))\n")
        seen = b""
        while b"marker-42" not in seen:
            chunk = sock.recv(4096)
            assert chunk, seen
            seen += chunk
        sock.sendall(b"\x10\x11")
        # The engine ends the session; the shell keeps running.
        while sock.recv(4096):
            pass
        sock.close()
        state = engine.docker("inspect", "-f", "{{.State.Running}}", name)
        assert state.stdout.strip() == "true"
    finally:
        engine.docker("rm", "-f", name)


@pytest.mark.root
def test_tty_logs_are_raw(engine: EngineProcess, busybox: str) -> None:
    name = "logs-tty"
    engine.docker("run", "-t", "--name", name, busybox, "echo", "raw", check=True)
    try:
        status, body = engine.request("GET", f"/containers/{name}/logs?stdout=1")
        assert status == 200
        assert body == b"raw\r\n"
    finally:
        engine.docker("rm", "-f", name)


@pytest.mark.root
def test_large_output_arrives_whole(engine: EngineProcess, busybox: str) -> None:
    result = subprocess.run(
        ["docker", "run", "--rm", busybox, "sh", "-c",
         "head -c 20000000 /dev/zero | tr '\\0' a; echo; echo end >&2"],
        env=engine.env(), capture_output=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0
    assert len(result.stdout) == 20_000_001
    assert set(result.stdout[:-1]) == {ord("a")}
    assert result.stderr == b"end\n"


@pytest.mark.root
def test_attach_after_an_engine_restart(
    fresh_engine: EngineProcess, busybox: str
) -> None:
    """A container adopted by a new engine process can be attached again."""
    engine = fresh_engine
    engine.docker(
        "run", "-d", "--name", "survivor", busybox, "sh", "-c",
        "until [ -e /tmp/go ]; do echo tick; sleep 0.2; done; echo after; exit 6",
        check=True,
    )  # fmt: skip
    engine.stop()
    engine.start()
    attach = subprocess.Popen(
        ["docker", "attach", "survivor"],
        env=engine.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert attach.stdout is not None
        # A tick proves the session is live before the container is let go.
        assert attach.stdout.readline() == b"tick\n"
        engine.docker("exec", "survivor", "touch", "/tmp/go", check=True)
        rest = attach.stdout.read()
        assert rest.endswith(b"after\n")
        assert attach.wait(60) == 6
    finally:
        if attach.poll() is None:
            attach.kill()
            attach.wait()
        engine.docker("rm", "-f", "survivor")
