"""SSH to a machine with its own key and a pinned host key.

Both key pairs are made on the host when the machine is created: the host's
client key (``id_ed25519``) and the guest's host key, whose private half goes
onto the data disk and whose public half is pinned in ``known_hosts``. No
connection ever accepts an unknown host key::

    client = connect(paths, port=2222)          # paramiko.SSHClient
    run(client, "uname -r")                     # -> "6.1.0-...\\n"
"""

from __future__ import annotations

import base64
import logging
import select
import socket
import time
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger(__name__)
# Expected failures while the guest boots would otherwise reach stderr
# through logging's last-resort handler as paramiko tracebacks.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

HOST_ALIAS_PREFIX = "dockyard-"
# Under TCG the guest's sshd spends most of each forwarded byte on the MAC:
# SHA-512 runs ~1.6x faster than SHA-256 in software on 64-bit (measured
# through the SSH path: 17-23 MB/s against 11-12), and encrypt-then-MAC is
# the sounder construction anyway. The rest of paramiko's list follows.
PREFERRED_MACS = ("hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com")
# wait_for_ssh: a new probe connection this often, each kept this long.
PROBE_INTERVAL = 0.25
PROBE_LIFETIME = 8.0


def generate_keypair(private_path: Path, comment: str) -> str:
    """Write an OpenSSH ed25519 private key (0600); return the public line."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    private_path.touch(mode=0o600)
    private_path.write_bytes(private)
    line = public.decode() + " " + comment
    private_path.with_name(private_path.name + ".pub").write_text(line + "\n")
    return line


def pinned_key(known_hosts: Path) -> paramiko.PKey:
    """The guest's host key recorded at create time."""
    fields = known_hosts.read_text().split()
    return paramiko.Ed25519Key(data=base64.b64decode(fields[2]))


class PinnedKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse every key not in the pinned set (paramiko checks that set first)."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise paramiko.SSHException(
            f"host key of {hostname} is not the one pinned for this machine "
            f"({key.get_name()} {key.get_base64()[:16]}...)"
        )


def connect(
    key_path: Path,
    known_hosts: Path,
    port: int,
    timeout: float = 10.0,
    sock: socket.socket | None = None,
) -> paramiko.SSHClient:
    """An authenticated client for root@127.0.0.1:port (over ``sock`` if given).

    Raises paramiko's exceptions or OSError.
    """
    client = paramiko.SSHClient()
    host_key = pinned_key(known_hosts)
    client.get_host_keys().add(f"[127.0.0.1]:{port}", host_key.get_name(), host_key)
    client.set_missing_host_key_policy(PinnedKeyPolicy())
    client.connect(
        "127.0.0.1",
        port=port,
        username="root",
        pkey=paramiko.Ed25519Key.from_private_key_file(str(key_path)),
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
        allow_agent=False,
        look_for_keys=False,
        sock=sock,
        transport_factory=_transport,
    )
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(15)
    return client


def _transport(sock: Any, **kwargs: Any) -> paramiko.Transport:
    """paramiko's transport with ``PREFERRED_MACS`` first."""
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    rest = [mac for mac in options.digests if mac not in PREFERRED_MACS]
    options.digests = [*PREFERRED_MACS, *rest]
    return transport


def wait_for_ssh(
    key_path: Path,
    known_hosts: Path,
    port: int,
    deadline: float,
    alive: object = None,
) -> paramiko.SSHClient:
    """Wait for the guest's sshd, then complete one handshake with it.

    QEMU's user network accepts a TCP connection at once and only then
    passes it to the guest: refused (EOF) while nothing listens, but held
    for seconds, until QEMU resends the SYN, while the guest's NIC is not up
    yet. So a fresh probe connection opens every ``PROBE_INTERVAL`` and the
    first one that receives sshd's banner carries the handshake; only that
    proves sshd is up. ``alive`` is a callable returning False when the VM
    died (stop waiting early). Raises TimeoutError or the handshake's error.
    """
    probes: dict[socket.socket, float] = {}
    last: Exception | None = None
    next_probe = next_alive_check = time.monotonic()
    try:
        while time.monotonic() < deadline:
            now = time.monotonic()
            if callable(alive) and now >= next_alive_check:
                if not alive():
                    raise ConnectionError("the VM stopped while waiting for SSH")
                next_alive_check = now + 1.0
            if now >= next_probe:
                next_probe = now + PROBE_INTERVAL
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                    probes[sock] = now
                except OSError as err:
                    last = err
            for sock, opened in list(probes.items()):
                if now - opened > PROBE_LIFETIME:
                    del probes[sock]
                    sock.close()
            if not probes:
                time.sleep(max(0.0, next_probe - time.monotonic()))
                continue
            wait = max(0.0, next_probe - time.monotonic())
            ready, _, _ = select.select(list(probes), [], [], wait)
            for sock in ready:
                del probes[sock]
                try:
                    banner = sock.recv(4, socket.MSG_PEEK)
                except OSError:
                    banner = b""
                if not banner:  # nothing listens in the guest yet
                    sock.close()
                    continue
                try:
                    return connect(key_path, known_hosts, port, timeout=10.0, sock=sock)
                except (paramiko.BadHostKeyException, paramiko.AuthenticationException):
                    raise
                except (OSError, EOFError, paramiko.SSHException) as err:
                    last = err
                    log.debug("ssh not ready: %s", err)
                    sock.close()
    finally:
        for sock in probes:
            sock.close()
    raise TimeoutError(f"no SSH handshake before the deadline (last error: {last})")


def run(
    client: paramiko.SSHClient, command: str, timeout: float = 60.0, check: bool = True
) -> str:
    """Run ``command`` in the guest; return stdout. Raises RuntimeError on failure."""
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode(errors="replace")
    err = stderr.read().decode(errors="replace")
    status = stdout.channel.recv_exit_status()
    if check and status != 0:
        raise RuntimeError(
            f"{command.split()[0]} exited {status}: {err.strip()[-500:]}"
        )
    return out


def ssh_argv(key_path: Path, known_hosts: Path, alias: str, port: int) -> list[str]:
    """An OpenSSH argv that logs into the guest with the pinned host key."""
    return [
        "ssh",
        "-i",
        str(key_path),
        "-p",
        str(port),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"HostKeyAlias={alias}",
        "-o",
        "LogLevel=ERROR",
        "root@127.0.0.1",
    ]
