"""``dockyard-engine``: run the engine in the foreground until SIGTERM.

dockyard-engine --host unix:///var/run/docker.sock --data-root /var/lib/dockyard
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import ssl
import sys
from pathlib import Path
from urllib.parse import urlsplit

from engine import API_VERSION, __version__
from engine.api import build_router
from engine.config import Config
from engine.daemon import Daemon
from engine.http.server import HttpServer

log = logging.getLogger("engine")


class StartupError(Exception):
    """The engine cannot start with the given settings."""


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="dockyard-engine", description="Dockyard's Docker-API container engine"
    )
    parser.add_argument(
        "-H",
        "--host",
        action="append",
        dest="hosts",
        metavar="URL",
        help="socket to listen on: unix:///path or tcp://host:port (repeatable)",
    )
    parser.add_argument("--data-root", type=Path, default=Path("/var/lib/dockyard"))
    parser.add_argument("--exec-root", type=Path, default=Path("/run/dockyard"))
    parser.add_argument("--runtime", choices=["crun", "runc"], default=None)
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
    )
    parser.add_argument("--tlsverify", action="store_true")
    parser.add_argument("--tlscacert", type=Path)
    parser.add_argument("--tlscert", type=Path)
    parser.add_argument("--tlskey", type=Path)
    parser.add_argument("--bip", default="172.30.0.1/16", help="default bridge address")
    parser.add_argument("--bridge-name", default="dockyard0")
    parser.add_argument("--insecure-registry", action="append", default=[])
    parser.add_argument("--registry-mirror", action="append", default=[])
    parser.add_argument("--certs-dir", type=Path, default=Path("/etc/docker/certs.d"))
    parser.add_argument("--environment", choices=["host", "vm"], default="host")
    parser.add_argument(
        "--version", action="version", version=f"dockyard-engine {__version__}"
    )
    args = parser.parse_args(argv)
    return Config(
        hosts=args.hosts or ["unix:///var/run/docker.sock"],
        data_root=args.data_root.absolute(),
        exec_root=args.exec_root.absolute(),
        runtime=args.runtime,
        log_level=args.log_level,
        tls_verify=args.tlsverify,
        tls_ca=args.tlscacert,
        tls_cert=args.tlscert,
        tls_key=args.tlskey,
        bridge_ip=args.bip,
        bridge_name=args.bridge_name,
        insecure_registries=args.insecure_registry,
        registry_mirrors=args.registry_mirror,
        certs_dir=args.certs_dir,
        environment=args.environment,
    )


def _tls_context(config: Config) -> ssl.SSLContext:
    if not (config.tls_verify and config.tls_ca and config.tls_cert and config.tls_key):
        raise StartupError(
            "a tcp:// listener off loopback needs --tlsverify with --tlscacert, --tlscert and --tlskey"
        )
    context = ssl.create_default_context(
        ssl.Purpose.CLIENT_AUTH, cafile=str(config.tls_ca)
    )
    context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _listen(server: HttpServer, config: Config) -> None:
    for url in config.hosts:
        parts = urlsplit(url if "://" in url else f"unix://{url}")
        if parts.scheme == "unix":
            path = parts.path or "/var/run/docker.sock"
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            await server.listen_unix(path)
            os.chmod(path, 0o660)
            log.info("API listening on %s", path)
        elif parts.scheme == "tcp":
            host = parts.hostname or "127.0.0.1"
            port = parts.port or (2376 if config.tls_verify else 2375)
            context = None
            if config.tls_verify or not _is_loopback(host):
                context = _tls_context(config)
            await server.listen_tcp(host, port, ssl=context)
            log.info(
                "API listening on %s:%d%s", host, port, " (TLS)" if context else ""
            )
        else:
            raise StartupError(f"unsupported host {url!r}: use unix:// or tcp://")


async def run(config: Config) -> None:
    daemon = Daemon(config)
    await daemon.start()
    server = HttpServer(
        build_router(),
        daemon,
        common_headers={
            "Api-Version": API_VERSION,
            "Docker-Experimental": "false",
            "Ostype": "linux",
            "Server": f"Docker/{__version__} (linux)",
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await _listen(server, config)
        await stop.wait()
        log.info("shutting down; containers keep running")
    finally:
        await server.close()
        await daemon.stop()


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if os.geteuid() != 0:
        print(
            "dockyard-engine: must run as root (namespaces, mounts, cgroups)",
            file=sys.stderr,
        )
        return 1
    try:
        asyncio.run(run(config))
    except StartupError as err:
        print(f"dockyard-engine: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
