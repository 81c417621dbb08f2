"""The API listeners: the unix socket for real, the named pipe at its boundary.

The unix listener serves the real docker CLI, relayed to a real engine by
the forwarder's own ``splice``. Windows named pipes cannot exist here
(Linux): those tests give ``NamedPipeListener`` a fake ``PipeIO`` in place
of the Win32 calls and check what it asks of them and the relay it runs.
"""

from __future__ import annotations

import os
import queue
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from desktop.machine import api_listener, api_listener_windows
from desktop.machine.api_listener_posix import UnixListener
from desktop.machine.api_listener_windows import (
    FILE_FLAG_FIRST_PIPE_INSTANCE,
    PIPE_REJECT_REMOTE_CLIENTS,
    PIPE_TYPE_MESSAGE,
    NamedPipeListener,
)
from desktop.machine.errors import ForwardError
from tests.support.engine import EngineProcess
from tests.support.listeners import engine_proxy, serving

DOCKER = "/usr/local/bin/docker"


@pytest.fixture
def unix_listener(engine: EngineProcess, tmp_path: Path) -> Iterator[UnixListener]:
    with serving(
        UnixListener(tmp_path / "docker.sock", engine_proxy(engine))
    ) as listener:
        yield listener


# -- unix ------------------------------------------------------------------


@pytest.mark.root
def test_docker_cli_through_the_unix_socket(
    unix_listener: UnixListener, tmp_path: Path
) -> None:
    path = unix_listener.path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_CONFIG"] = str(tmp_path / "docker-config")
    env.update(api_listener.endpoint_of(unix_listener).env())
    assert env["DOCKER_HOST"] == f"unix://{path}"

    run = subprocess.run(
        [DOCKER, "run", "--rm", "dockyard-test/busybox", "echo", "hi"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "hi\n"

    unix_listener.close()
    assert not path.exists()


def test_a_stale_socket_is_replaced_and_a_file_is_not(tmp_path: Path) -> None:
    path = tmp_path / "docker.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # what a killed forwarder leaves behind

    listener = UnixListener(path, lambda conn: conn.close())
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
    finally:
        listener.close()
    assert not path.exists()
    assert not list(tmp_path.iterdir())  # no temporary name left either

    path.write_text("not a socket")
    with pytest.raises(ForwardError, match="not a socket"):
        UnixListener(path, lambda conn: conn.close())
    assert path.read_text() == "not a socket"


def test_closing_an_old_listener_keeps_a_newer_socket(tmp_path: Path) -> None:
    path = tmp_path / "docker.sock"
    old = UnixListener(path, lambda conn: conn.close())
    new = UnixListener(path, lambda conn: conn.close())
    old.close()
    assert path.exists()
    new.close()
    assert not path.exists()


def test_the_platform_picks_the_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKYARD_API", raising=False)
    assert api_listener.default_kind("linux") == "unix"
    assert api_listener.default_kind("darwin") == "unix"
    assert api_listener.default_kind("win32") == "npipe"
    monkeypatch.setenv("DOCKYARD_API", "tls")
    assert api_listener.default_kind("linux") == "tls"
    monkeypatch.setenv("DOCKYARD_API", "carrier-pigeon")
    with pytest.raises(ForwardError, match="DOCKYARD_API"):
        api_listener.default_kind("linux")


def test_listen_builds_the_chosen_listener(tmp_path: Path) -> None:
    args: dict[str, Any] = {
        "root": tmp_path,
        "socket": tmp_path / "docker.sock",
        "name": "dev",
        "proxy": lambda conn: conn.close(),
    }
    unix = api_listener.listen("unix", **args)
    tls = api_listener.listen("tls", **args)
    try:
        assert unix.docker_host == f"unix://{tmp_path / 'docker.sock'}"
        endpoint = api_listener.endpoint_of(tls)
        assert endpoint.host.startswith("tcp://127.0.0.1:")
        assert endpoint.env()["DOCKER_CERT_PATH"] == str(tmp_path / "tls")
        endpoint.save(tmp_path / "api.json")
        assert api_listener.Endpoint.load(tmp_path / "api.json") == endpoint
    finally:
        unix.close()
        tls.close()
    # Not on Windows: the named pipe refuses to start rather than pretend.
    with pytest.raises(ForwardError, match="only on Windows"):
        api_listener.listen("npipe", **args)


# -- named pipe (boundary) ---------------------------------------------------


class FakePipes:
    """Stands in for the Win32 calls; each connected client is a pair of queues."""

    def __init__(self, clients: int) -> None:
        self.created: list[tuple[str, int, int, str]] = []
        self.clients: queue.Queue[int] = queue.Queue()
        for _ in range(clients):
            self.clients.put(1)
        self.inbox: dict[int, queue.Queue[bytes]] = {}  # client -> server
        self.outbox: dict[int, list[bytes]] = {}  # server -> client, messages
        self.closed: dict[int, bool] = {}
        self.cancelled: list[int] = []
        self.wake: dict[int, threading.Event] = {}
        self.handles = 0
        self.lock = threading.Lock()

    def user_sid(self) -> str:
        return "S-1-5-21-1-2-3-1001"

    def create(self, name: str, open_mode: int, pipe_mode: int, sddl: str) -> int:
        with self.lock:
            self.created.append((name, open_mode, pipe_mode, sddl))
            self.handles += 1
            handle = self.handles
            self.inbox[handle] = queue.Queue()
            self.outbox[handle] = []
            self.wake[handle] = threading.Event()
            return handle

    def connect(self, handle: int) -> None:
        while True:
            if self.wake[handle].is_set():
                raise OSError(995, "cancelled")
            try:
                self.clients.get(timeout=0.05)
                return
            except queue.Empty:
                continue

    def read(self, handle: int, size: int) -> bytes:
        return self.inbox[handle].get()

    def write(self, handle: int, data: bytes) -> None:
        self.outbox[handle].append(data)

    def cancel(self, handle: int) -> None:
        self.cancelled.append(handle)
        self.wake[handle].set()

    def close(self, handle: int, flush: bool) -> None:
        self.closed[handle] = flush


def echo_upper(conn: socket.socket) -> None:
    """A proxy that answers with what it read, upper-cased, once the client is done."""
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    conn.sendall(data.upper())
    conn.close()


def test_pipe_name_host_and_acl() -> None:
    assert api_listener_windows.pipe_name("dev") == r"\\.\pipe\dockyard_dev"
    assert api_listener_windows.docker_host("dev") == "npipe:////./pipe/dockyard_dev"
    sddl = api_listener_windows.security_descriptor("S-1-5-21-9")
    # Protected DACL: SYSTEM and the user, nothing inherited, no Everyone.
    assert sddl == "D:P(A;;GA;;;SY)(A;;GA;;;S-1-5-21-9)"


def test_pipe_listener_instances_and_relay() -> None:
    pipes = FakePipes(clients=1)
    listener = NamedPipeListener("dev", echo_upper, io=pipes)
    assert listener.docker_host == "npipe:////./pipe/dockyard_dev"
    thread = threading.Thread(target=listener.serve, daemon=True)
    thread.start()

    # The client sends two messages, then CloseWrite: a zero-length message.
    pipes.inbox[1].put(b"hello ")
    pipes.inbox[1].put(b"pipe")
    pipes.inbox[1].put(b"")
    deadline = threading.Event()
    while 1 not in pipes.closed and not deadline.wait(0.05):
        pass
    # The answer, then a zero-length message (the CLI's end of stream), flushed.
    assert pipes.outbox[1] == [b"HELLO PIPE", b""]
    assert pipes.closed[1] is True

    listener.close()
    thread.join(10)
    assert not thread.is_alive()

    first, second = pipes.created[0], pipes.created[1]
    assert first[0] == r"\\.\pipe\dockyard_dev"
    assert first[1] & FILE_FLAG_FIRST_PIPE_INSTANCE
    assert not second[1] & FILE_FLAG_FIRST_PIPE_INSTANCE
    assert first[2] & PIPE_TYPE_MESSAGE and first[2] & PIPE_REJECT_REMOTE_CLIENTS
    assert first[3] == "D:P(A;;GA;;;SY)(A;;GA;;;S-1-5-21-1-2-3-1001)"
    # The waiting instance was cancelled and closed at close().
    assert pipes.cancelled == [2]
    assert pipes.closed[2] is False


def test_pipe_name_held_by_another_program() -> None:
    class Taken(FakePipes):
        def create(self, name: str, open_mode: int, pipe_mode: int, sddl: str) -> int:
            err = OSError(13, "Access is denied")
            err.winerror = 5  # type: ignore[attr-defined]
            raise err

    with pytest.raises(ForwardError, match="already serves"):
        NamedPipeListener("dev", echo_upper, io=Taken(0))
