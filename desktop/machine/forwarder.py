"""The per-machine host daemon: API socket, published ports and clock.

``machine start`` runs ``python -m desktop.machine.forwarder MACHINE_DIR``
detached; it writes ``forwarder.pid`` and, over one SSH connection to the
guest (pinned host key):

- serves the engine's API on the host (``docker.sock``; a named pipe or
  loopback TCP with mutual TLS, see ``api_listener``), recorded in
  ``api.json``: each client connection becomes a ``direct-tcpip`` channel
  to the engine on the guest's 127.0.0.1:2375;
- follows the engine's ``/events``; on every container start or stop it
  reads ``/containers/json`` and opens or closes host listeners so that
  ``-p 8080:80`` answers on the host's 8080 (TCP over SSH channels; UDP
  through the backend's NAT forwarding, since SSH carries no datagrams);
  a host port already taken is logged and recorded in ``ports.json``;
- resets the guest clock when the host's wall clock jumps against its
  monotonic clock (the host slept and woke up).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paramiko

from desktop.machine import api_listener, ssh
from desktop.machine.backend import get_backend
from desktop.machine.errors import MachineError
from desktop.machine.files import MachineDir, MachineRecord, RunRecord, write_json

log = logging.getLogger("desktop.machine.forwarder")

ENGINE_ADDR = ("127.0.0.1", 2375)
RECONCILE_INTERVAL = 5.0
CLOCK_JUMP = 5.0
BUFFER = 256 * 1024


def _pump(src: Any, dst: Any, done: threading.Event) -> None:
    """Copy src to dst until EOF, then half-close dst."""
    try:
        while True:
            data = src.recv(BUFFER)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            if isinstance(dst, paramiko.Channel):
                dst.shutdown_write()
            else:
                dst.shutdown(socket.SHUT_WR)
        done.set()


def splice(conn: socket.socket, chan: paramiko.Channel) -> None:
    """Shuttle bytes both ways between a host socket and an SSH channel."""
    up, down = threading.Event(), threading.Event()
    threading.Thread(target=_pump, args=(conn, chan, up), daemon=True).start()
    threading.Thread(target=_pump, args=(chan, conn, down), daemon=True).start()

    def closer() -> None:
        up.wait()
        down.wait()
        chan.close()
        conn.close()

    threading.Thread(target=closer, daemon=True).start()


class Forwarder:
    def __init__(self, root: Path) -> None:
        self.dirs = MachineDir(root.parent.parent, root.name)
        self.record = MachineRecord.load(self.dirs.record)
        run = RunRecord.load(self.dirs.run)
        if run is None or not run.ssh_port:
            raise MachineError(f"machine {root.name} is not running")
        self.port = run.ssh_port
        self.backend = get_backend(self.record.spec.backend)
        self.client: paramiko.SSHClient | None = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.listeners: dict[tuple[str, str, int], socket.socket | None] = {}
        self.errors: dict[tuple[str, str, int], str] = {}
        self.reconcile_now = threading.Event()

    # -- SSH --------------------------------------------------------------

    def transport(self) -> paramiko.Transport:
        with self.lock:
            if self.client is not None:
                transport = self.client.get_transport()
                if transport is not None and transport.is_active():
                    return transport
                self.client.close()
                self.client = None
            deadline = time.monotonic() + 60
            while True:
                try:
                    self.client = ssh.connect(
                        self.dirs.key, self.dirs.known_hosts, self.port, timeout=5
                    )
                    break
                except (OSError, EOFError, paramiko.SSHException) as err:
                    if time.monotonic() > deadline or self.stopping.is_set():
                        raise ConnectionError(f"cannot reach the guest: {err}") from err
                    time.sleep(0.5)
            transport = self.client.get_transport()
            assert transport is not None
            return transport

    def open(self, addr: tuple[str, int]) -> paramiko.Channel:
        chan = self.transport().open_channel(
            "direct-tcpip", addr, ("127.0.0.1", 0), timeout=10
        )
        return chan

    def request(self, path: str) -> Any:
        """GET ``path`` from the engine; the decoded JSON body."""
        chan = self.open(ENGINE_ADDR)
        try:
            chan.settimeout(15)
            chan.sendall(
                f"GET {path} HTTP/1.0\r\nHost: docker\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := chan.recv(BUFFER):
                data += chunk
        finally:
            chan.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in head.lower():
            body = _dechunk(body)
        return json.loads(body or b"null")

    # -- API socket -------------------------------------------------------

    def serve_socket(self) -> None:
        # api.json outlives a stop: the next start keeps the same TLS port,
        # so a DOCKER_HOST from ``machine env`` stays right.
        endpoint_file = self.dirs.root / "api.json"
        previous = api_listener.Endpoint.load(endpoint_file)
        port = (
            int(previous.host.rpartition(":")[2])
            if previous and previous.kind == "tls"
            else 0
        )
        listener = api_listener.listen(
            None,
            root=self.dirs.root,
            socket=self.dirs.socket,
            name=self.dirs.name,
            proxy=lambda conn: self._proxy(conn, ENGINE_ADDR),
            port=port,
        )
        api_listener.endpoint_of(listener).save(endpoint_file)
        self.api_listener = listener
        listener.serve()

    def _proxy(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        try:
            chan = self.open(addr)
        except Exception as err:
            log.warning("cannot open a channel to guest %s:%d: %s", *addr, err)
            conn.close()
            return
        splice(conn, chan)

    # -- published ports --------------------------------------------------

    def follow_events(self) -> None:
        query = '{"type":["container"]}'
        while not self.stopping.is_set():
            try:
                chan = self.open(ENGINE_ADDR)
                chan.sendall(
                    f"GET /events?filters={_quote(query)} HTTP/1.1\r\nHost: docker\r\n\r\n".encode()
                )
                self.reconcile_now.set()
                while not self.stopping.is_set():
                    data = chan.recv(BUFFER)
                    if not data:
                        break
                    if any(
                        action in data
                        for action in (
                            b'"start"',
                            b'"die"',
                            b'"stop"',
                            b'"kill"',
                            b'"destroy"',
                            b'"unpause"',
                            b'"pause"',
                        )
                    ):
                        self.reconcile_now.set()
                chan.close()
            except Exception as err:
                log.debug("event stream: %s", err)
            self.stopping.wait(1.0)

    def reconcile_loop(self) -> None:
        while not self.stopping.is_set():
            self.reconcile_now.wait(RECONCILE_INTERVAL)
            self.reconcile_now.clear()
            if self.stopping.is_set():
                break
            try:
                self.reconcile()
            except Exception as err:
                log.debug("reconcile: %s", err)

    def reconcile(self) -> None:
        containers = self.request("/containers/json") or []
        wanted: dict[tuple[str, str, int], str] = {}
        for container in containers:
            name = (container.get("Names") or ["?"])[0].lstrip("/")
            for port in container.get("Ports") or []:
                public = port.get("PublicPort")
                if not public:
                    continue
                host_ip = port.get("IP") or "0.0.0.0"
                if ":" in host_ip:
                    continue  # IPv6 twin of an IPv4 binding
                key = (port.get("Type", "tcp"), host_ip, int(public))
                wanted[key] = f"{name}:{port.get('PrivatePort')}/{key[0]}"
        for key in list(self.listeners):
            if key not in wanted:
                self._close(key)
        for key, label in wanted.items():
            if key not in self.listeners and key not in self.errors:
                self._open(key, label)
        for key in list(self.errors):
            if key not in wanted:
                del self.errors[key]
        self._save_ports(wanted)

    def _open(self, key: tuple[str, str, int], label: str) -> None:
        proto, host_ip, port = key
        try:
            if proto == "tcp" and host_ip == "0.0.0.0" and self._nat_tcp(host_ip, port):
                # The engine listens on every guest address: the hypervisor's
                # NAT carries it, unencrypted (~80 MB/s under TCG, vs ~10 MB/s
                # through SSH). Loopback-only bindings need the SSH path.
                self.listeners[key] = None
            elif proto == "tcp":
                server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                server.bind((host_ip, port))
                server.listen(128)
                self.listeners[key] = server
                threading.Thread(
                    target=self._accept, args=(server, port), daemon=True
                ).start()
            else:
                self.backend.add_port(self.dirs, proto, host_ip, port)
                self.listeners[key] = None
            log.info("forwarding %s:%d/%s to %s", host_ip, port, proto, label)
        except OSError as err:
            reason = (
                f"host port {host_ip}:{port}/{proto} is already taken by another program"
                if err.errno == errno.EADDRINUSE
                else f"cannot listen on {host_ip}:{port}/{proto}: {err.strerror}"
            )
            self.errors[key] = f"{reason}; {label} is reachable only inside the machine"
            log.warning("%s", self.errors[key])
        except MachineError as err:
            self.errors[key] = f"{err}; {label} is reachable only inside the machine"
            log.warning("%s", self.errors[key])

    def _nat_tcp(self, host_ip: str, port: int) -> bool:
        """Forward through the backend's NAT if it can; raise if the port is taken."""
        if self.backend.name != "qemu":
            return False
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host_ip, port))  # EADDRINUSE: reported by the caller
        try:
            self.backend.add_port(self.dirs, "tcp", host_ip, port)
        except MachineError as err:
            log.debug(
                "NAT forwarding of %s:%d failed, using SSH: %s", host_ip, port, err
            )
            return False
        return True

    def _accept(self, server: socket.socket, port: int) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(
                target=self._proxy, args=(conn, ("127.0.0.1", port)), daemon=True
            ).start()

    def _close(self, key: tuple[str, str, int]) -> None:
        proto, host_ip, port = key
        server = self.listeners.pop(key, None)
        if server is not None:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            server.close()
        else:
            with contextlib.suppress(MachineError):
                self.backend.remove_port(self.dirs, proto, host_ip, port)
        log.info("stopped forwarding %s:%d/%s", host_ip, port, proto)

    def _save_ports(self, wanted: dict[tuple[str, str, int], str]) -> None:
        forwards = [
            {
                "Proto": proto,
                "HostIp": ip,
                "HostPort": port,
                "Target": wanted.get((proto, ip, port), ""),
                "Error": self.errors.get((proto, ip, port)),
            }
            for (proto, ip, port) in sorted(set(self.listeners) | set(self.errors))
        ]
        write_json(self.dirs.ports, forwards)

    # -- clock ------------------------------------------------------------

    def watch_clock(self) -> None:
        wall, mono = time.time(), time.monotonic()
        while not self.stopping.wait(2.0):
            now_wall, now_mono = time.time(), time.monotonic()
            drift = (now_wall - wall) - (now_mono - mono)
            wall, mono = now_wall, now_mono
            if abs(drift) > CLOCK_JUMP:
                log.info(
                    "host clock jumped %.0f s (resume from sleep?): resetting the guest clock",
                    drift,
                )
                self.set_guest_clock()

    def set_guest_clock(self) -> None:
        try:
            transport = self.transport()
            chan = transport.open_session(timeout=10)
            chan.exec_command(f"date -u -s @{time.time():.3f} >/dev/null")
            chan.recv_exit_status()
            chan.close()
        except Exception as err:
            log.warning("cannot set the guest clock: %s", err)

    # -- life -------------------------------------------------------------

    def run(self) -> None:
        self.dirs.forwarder_pid.write_text(f"{os.getpid()}\n")
        self.transport()
        for target in (self.follow_events, self.reconcile_loop, self.watch_clock):
            threading.Thread(target=target, daemon=True).start()
        threading.Thread(target=self.watch_vm, daemon=True).start()
        self.serve_socket()

    def watch_vm(self) -> None:
        """Exit when the VM is gone, so a crashed machine leaves no forwarder."""
        while not self.stopping.wait(2.0):
            try:
                if self.backend.state(self.dirs) == "stopped":
                    log.warning("the VM stopped: forwarder exiting")
                    self.stop()
            except MachineError:
                pass

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.reconcile_now.set()
        for key in list(self.listeners):
            with contextlib.suppress(Exception):
                self._close(key)
        listener = getattr(self, "api_listener", None)
        if listener is not None:
            listener.close()  # removes docker.sock if it is still this one's
        self.dirs.ports.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            if self.dirs.forwarder_pid.read_text().strip() == str(os.getpid()):
                self.dirs.forwarder_pid.unlink()


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m desktop.machine.forwarder MACHINE_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    forwarder = Forwarder(Path(args[0]))

    def on_term(_signum: int, _frame: object) -> None:
        forwarder.stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        forwarder.run()
    except (ConnectionError, MachineError) as err:
        log.error("%s", err)
        forwarder.stop()
        return 1
    forwarder.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
