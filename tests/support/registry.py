"""Debian's ``docker-registry`` on loopback, in the three shapes tests need.

``RegistryProcess`` writes a config file and runs the real registry on a
free 127.0.0.1 port: open, with ``htpasswd`` (bcrypt) Basic auth, or with
``auth.token`` backed by :class:`TokenIssuer`, a tiny token server this
process runs with its own RSA key::

    with TokenIssuer(users={"alice": "pw"}) as issuer:
        with RegistryProcess(tmp, token=issuer) as reg:
            docker("push", f"{reg.host}/x:1")

The issuer signs RS256 JWTs whose header carries the signing certificate
(``x5c``); the registry trusts it through ``rootcertbundle``. A user with
the right password gets every action asked for; anonymous callers get
``pull`` only, so an anonymous push is refused by the registry itself.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

REGISTRY_BIN = Path("/usr/bin/docker-registry")
SERVICE = "dockyard-test-registry"
ISSUER = "dockyard-test-issuer"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """A Docker token server (``GET /token?service=&scope=``) on loopback."""

    def __init__(self, users: dict[str, str]) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.users = users
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.cert_der = self.cert.public_bytes(serialization.Encoding.DER)
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def sign(self, subject: str, access: list[dict[str, Any]]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(self.cert_der).decode()],
        }
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
        )
        signature = self.key.sign(
            signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return signing_input + "." + _b64(signature)

    def _grant(self, user: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            allowed = wanted if user else [a for a in wanted if a == "pull"]
            if allowed:
                access.append({"type": kind, "name": name, "actions": allowed})
        return access

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        query = parse_qs(url.query)
        user: str | None = None
        auth = handler.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            raw = base64.b64decode(auth[6:]).decode()
            name, _, password = raw.partition(":")
            if self.users.get(name) != password:
                body = json.dumps(
                    {"details": "incorrect username or password"}
                ).encode()
                handler.send_response(401)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)
                return
            user = name
        scopes = query.get("scope", [])
        self.requests.append({"user": user, "scopes": scopes})
        token = self.sign(user or "", self._grant(user, scopes))
        body = json.dumps(
            {"token": token, "access_token": token, "expires_in": 300}
        ).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def __enter__(self) -> TokenIssuer:
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", self.port), Handler
        )
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class ScratchCA:
    """A throwaway certificate authority for TLS registries and clients."""

    def __init__(self, root: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockyard test CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = root / "ca.crt"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: Path, ip: str, server: bool) -> tuple[Path, Path]:
        """A certificate for ``ip`` (server) or a client; returns (cert, key)."""
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = (
            ExtendedKeyUsageOID.SERVER_AUTH
            if server
            else ExtendedKeyUsageOID.CLIENT_AUTH
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.ExtendedKeyUsage([usage]), False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        stem.parent.mkdir(parents=True, exist_ok=True)
        cert_path = stem.with_suffix(".cert" if not server else ".crt")
        key_path = stem.with_suffix(".key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


class RegistryProcess:
    """One ``docker-registry serve`` child on 127.0.0.1, stopped on exit."""

    def __init__(
        self,
        root: Path,
        users: dict[str, str] | None = None,
        token: TokenIssuer | None = None,
        port: int | None = None,
        tls: ScratchCA | None = None,
        client_certs: bool = False,
    ) -> None:
        self.root = root
        self.users = users
        self.token = token
        self.tls = tls
        self.client_certs = client_certs
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def _config(self) -> str:
        storage = self.root / "storage"
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {storage}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            "  secret: dockyard-test-secret",
        ]
        if self.tls is not None:
            cert, key = self.tls.issue(self.root / "server", "127.0.0.1", server=True)
            lines += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
            if self.client_certs:
                lines += ["    clientcas:", f"      - {self.tls.cert_path}"]
        if self.users is not None:
            htpasswd = self.root / "htpasswd"
            entries = []
            for name, password in self.users.items():
                out = subprocess.run(
                    ["htpasswd", "-Bbn", name, password],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.strip()
                entries.append(out)
            htpasswd.write_text("\n".join(entries) + "\n")
            lines += [
                "auth:",
                "  htpasswd:",
                "    realm: dockyard-test",
                f"    path: {htpasswd}",
            ]
        elif self.token is not None:
            bundle = self.root / "token-ca.pem"
            bundle.write_bytes(self.token.cert_pem)
            lines += [
                "auth:",
                "  token:",
                f"    realm: {self.token.realm}",
                f"    service: {SERVICE}",
                f"    issuer: {ISSUER}",
                f"    rootcertbundle: {bundle}",
            ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 20) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        config.write_text(self._config())
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [str(REGISTRY_BIN), "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited:\n{self.log_tail()}")
            try:
                if self.tls is not None:
                    with socket.create_connection(("127.0.0.1", self.port), 1):
                        return
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
                return
            except urllib.error.HTTPError:
                return  # 401: up, and asking for credentials
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not answer:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def blob_count(self) -> int:
        blobs = self.root / "storage" / "docker" / "registry" / "v2" / "blobs"
        return sum(1 for p in blobs.rglob("data")) if blobs.exists() else 0

    def __enter__(self) -> RegistryProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wipe(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def layered_archive(
    path: Path, ref: str, layer_sizes: list[int], base: bytes | None = None
) -> int:
    """A docker-archive tar of an image with random-content layers.

    ``base`` (a plain rootfs tar, e.g. busybox's) goes first when given, so
    the image can run. Returns the total bytes of the layer tars.
    """
    import hashlib
    import io
    import tarfile

    layers = [base] if base is not None else []
    for n, size in enumerate(layer_sizes):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(f"data/layer{n}.bin")
            info.size = size
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(os.urandom(size)))
        layers.append(buf.getvalue())
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = {
        "architecture": "amd64" if os.uname().machine == "x86_64" else "arm64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2023-11-14T22:13:20Z"} for _ in layers],
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    names = [f"{d[7:]}/layer.tar" for d in diff_ids]
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": names}]

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 1700000000
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w") as tar:
        add(tar, config_name, config_bytes)
        for name, layer in zip(names, layers, strict=True):
            add(tar, name, layer)
        add(tar, "manifest.json", json.dumps(manifest).encode())
    return sum(len(layer) for layer in layers)
