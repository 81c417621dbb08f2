"""The engine's API on loopback TCP with mutual TLS.

Where a unix socket or a named pipe is not an option (and on any platform
when asked), the forwarder listens on ``127.0.0.1:PORT``. Any local user
can reach a TCP port, so both sides prove who they are: each machine has
its own certificate authority, which signs one server certificate (for
127.0.0.1) and one client certificate, and nothing else. The CA's key is
discarded once both are signed, so nobody can mint another client::

    tls/ca.pem cert.pem key.pem     the client's: DOCKER_CERT_PATH
    tls/server/cert.pem key.pem     the forwarder's

    DOCKER_HOST=tcp://127.0.0.1:PORT DOCKER_TLS_VERIFY=1 \\
        DOCKER_CERT_PATH=.../machines/NAME/tls docker ps

TLS ends inside the listener: the proxy gets one end of a socket pair with
the plain bytes, the same kind of connection the unix listener gives it.
One thread per connection drives the TLS object through memory buffers, so
the two directions never use OpenSSL at the same time, and a half-close
passes through as it should: the client's close_notify becomes a shutdown
of the pair's write side, and the engine's end of a stream (attach, logs)
becomes a close_notify to the client.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import os
import select
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from desktop.machine.api_listener_posix import Proxy, accept_loop, stop_accepting
from desktop.machine.errors import ForwardError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
VALID_DAYS = 3650
RENEW_DAYS = 30
HANDSHAKE_TIMEOUT = 10.0
CHUNK = 64 * 1024
# Stop reading a side while this much is still waiting to be written to the
# other: a slow reader must slow the writer, not grow a buffer.
HIGH_WATER = 1024 * 1024


@dataclass(frozen=True)
class TLSFiles:
    """Where one machine's TLS material lives."""

    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    @property
    def client_cert(self) -> Path:
        return self.root / "cert.pem"

    @property
    def client_key(self) -> Path:
        return self.root / "key.pem"

    @property
    def server_cert(self) -> Path:
        return self.root / "server" / "cert.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server" / "key.pem"

    def all(self) -> list[Path]:
        return [
            self.ca,
            self.client_cert,
            self.client_key,
            self.server_cert,
            self.server_key,
        ]


def ensure_certificates(root: Path, machine: str) -> TLSFiles:
    """The machine's CA, server and client certificates, made when missing.

    They are made again, all together, when one is missing or expires
    within ``RENEW_DAYS``. Raises ``ForwardError`` when they cannot be written.
    """
    files = TLSFiles(root)
    if all(p.exists() for p in files.all()) and not _expiring(files):
        return files
    try:
        _issue(files, machine)
    except OSError as err:
        raise ForwardError(f"cannot write TLS certificates in {root}: {err}") from err
    log.info("made TLS certificates for machine %s in %s", machine, root)
    return files


def _expiring(files: TLSFiles) -> bool:
    limit = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=RENEW_DAYS)
    for path in (files.ca, files.client_cert, files.server_cert):
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            return True
        if cert.not_valid_after_utc < limit:
            return True
    return False


def _issue(files: TLSFiles, machine: str) -> None:
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    until = now + datetime.timedelta(days=VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"Dockyard machine {machine} CA")]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        common_name: str, usage: x509.ObjectIdentifier, names: list[x509.GeneralName]
    ) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
            )
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(names), critical=False
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        pem_key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), pem_key

    server = leaf(
        f"dockyard-{machine}",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.IPAddress(ipaddress.ip_address(LOOPBACK)),
            x509.IPAddress(ipaddress.ip_address("::1")),
            x509.DNSName("localhost"),
        ],
    )
    client = leaf(f"dockyard-{machine}-client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    # ca_key goes out of scope here: it is never written.

    for folder in (files.root, files.server_cert.parent):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    _write_private(files.server_cert, server[0])
    _write_private(files.server_key, server[1])
    _write_private(files.client_cert, client[0])
    _write_private(files.client_key, client[1])
    _write_private(files.ca, ca_pem)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def server_context(files: TLSFiles) -> ssl.SSLContext:
    """A server context that accepts only clients signed by the machine's CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(files.server_cert, files.server_key)
    ctx.load_verify_locations(cafile=files.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    # Every connection is new to us anyway; tickets would only cost bytes.
    ctx.num_tickets = 0
    return ctx


class TLSListener:
    """Accept TLS clients on 127.0.0.1 and hand the plain stream to ``proxy``."""

    kind = "tls"

    def __init__(
        self, tls_dir: Path, machine: str, proxy: Proxy, port: int = 0
    ) -> None:
        self.proxy = proxy
        self.files = ensure_certificates(tls_dir, machine)
        self.tls_dir: Path | None = tls_dir
        self.context = server_context(self.files)
        self._closed = threading.Event()
        self._server = self._bind(port)
        self.port: int = self._server.getsockname()[1]

    @property
    def docker_host(self) -> str:
        return f"tcp://{LOOPBACK}:{self.port}"

    def _bind(self, port: int) -> socket.socket:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if port:
                # Keep the port a docker context already points at if it is
                # free; otherwise any port (the caller rewrites the context).
                try:
                    server.bind((LOOPBACK, port))
                except OSError as err:
                    log.warning("port %d is taken (%s): using another", port, err)
                    server.close()
                    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    server.bind((LOOPBACK, 0))
            else:
                server.bind((LOOPBACK, 0))
            server.listen(64)
        except OSError as err:
            server.close()
            raise ForwardError(f"cannot listen on {LOOPBACK}: {err}") from err
        return server

    def serve(self) -> None:
        """Accept until ``close()``; each connection gets its own thread."""
        log.info("serving the engine API on %s with TLS", self.docker_host)
        accept_loop(self._server, self._closed, self._connection)

    def close(self) -> None:
        stop_accepting(self._server, self._closed)

    def _connection(self, raw: socket.socket) -> None:
        try:
            peer = raw.getpeername()[:2]
        except OSError:
            peer = ("?", 0)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.context.wrap_bio(incoming, outgoing, server_side=True)
        try:
            _handshake(raw, tls, incoming, outgoing)
        except (OSError, ssl.SSLError, EOFError) as err:
            # Before any byte reaches the engine: a client without the
            # machine's certificate never opens a channel to the guest.
            log.warning("refused a TLS client from %s:%d: %s", *peer, err)
            raw.close()
            return
        inner, outer = socket.socketpair()
        threading.Thread(target=self.proxy, args=(outer,), daemon=True).start()
        try:
            _relay(raw, tls, incoming, outgoing, inner)
        except (OSError, ssl.SSLError) as err:
            log.debug("TLS connection from %s:%d ended: %s", *peer, err)
        finally:
            raw.close()
            inner.close()


def _handshake(
    raw: socket.socket,
    tls: ssl.SSLObject,
    incoming: ssl.MemoryBIO,
    outgoing: ssl.MemoryBIO,
) -> None:
    raw.settimeout(HANDSHAKE_TIMEOUT)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            # Send the alert, so the client learns why.
            with contextlib.suppress(OSError):
                raw.sendall(outgoing.read())
            raise
        if pending := outgoing.read():
            raw.sendall(pending)
        data = raw.recv(CHUNK)
        if not data:
            raise EOFError("the client hung up during the handshake")
        incoming.write(data)
    if pending := outgoing.read():
        raw.sendall(pending)
    raw.settimeout(None)


def _relay(
    raw: socket.socket,
    tls: ssl.SSLObject,
    incoming: ssl.MemoryBIO,
    outgoing: ssl.MemoryBIO,
    inner: socket.socket,
) -> None:
    """Move bytes both ways until both sides finished writing."""
    raw.setblocking(False)
    inner.setblocking(False)
    to_raw = bytearray(outgoing.read())
    to_inner = bytearray()
    client_done = engine_done = False  # that side will send nothing more
    raw_shut = inner_shut = False
    first = True

    while True:
        if client_done and not to_inner and not inner_shut:
            inner.shutdown(socket.SHUT_WR)
            inner_shut = True
        if engine_done and not to_raw and not raw_shut:
            raw.shutdown(socket.SHUT_WR)
            raw_shut = True
        if raw_shut and inner_shut:
            return

        readable = []
        if not client_done and len(to_inner) < HIGH_WATER:
            readable.append(raw)
        if not engine_done and len(to_raw) < HIGH_WATER:
            readable.append(inner)
        writable = [s for s, buf in ((raw, to_raw), (inner, to_inner)) if buf]
        timeout = 0 if first else None
        ready_r, ready_w, _ = select.select(readable, writable, [], timeout)

        if raw in ready_w:
            del to_raw[: raw.send(to_raw)]
        if inner in ready_w:
            del to_inner[: inner.send(to_inner)]

        if raw in ready_r or first:
            # The first pass decrypts what came with the handshake's last
            # flight: a client may send its request in the same segment.
            data = b"" if first else raw.recv(CHUNK)
            if data:
                incoming.write(data)
            elif not first:
                incoming.write_eof()
            try:
                while chunk := tls.read(CHUNK):
                    to_inner += chunk
                # An empty read is the client's close_notify (Go's CloseWrite).
                client_done = True
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                client_done = True
            if not data and not first:
                client_done = True  # TCP closed, with or without close_notify
            first = False
            to_raw += outgoing.read()

        if inner in ready_r:
            data = inner.recv(CHUNK)
            if data:
                view = memoryview(data)
                while view:
                    view = view[tls.write(view) :]
            else:
                engine_done = True
                with contextlib.suppress(ssl.SSLWantReadError):
                    tls.unwrap()  # queues close_notify; the client may still send
            to_raw += outgoing.read()
