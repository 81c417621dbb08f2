"""Throughput of a published port: the engine's proxy against the direct path.

Runs a busybox sink (``nc -l -p 80 > /dev/null``) published on a free
loopback port of the engine at ``DOCKER_HOST``, pushes data through the
published port and straight to the container's address, and prints both::

    DOCKER_HOST=unix:///tmp/e/d.sock python -m bench.port_forward --mb 1024
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import time

CHUNK = 1 << 20


def _docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], check=True, capture_output=True, text=True
    ).stdout


def _push(target: tuple[str, int], megabytes: int) -> float:
    """Seconds to send ``megabytes`` to ``target`` and see it closed."""
    chunk = b"x" * CHUNK
    for attempt in range(50):
        try:
            sock = socket.create_connection(target, timeout=30)
            break
        except OSError:
            if attempt == 49:
                raise
            time.sleep(0.1)
    with sock:
        start = time.perf_counter()
        for _ in range(megabytes):
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=512, help="megabytes per run")
    parser.add_argument("--image", default="dockyard-test/busybox:latest")
    args = parser.parse_args()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    name = f"bench-sink-{port}"
    _docker(
        "run",
        "-d",
        "--name",
        name,
        "-p",
        f"127.0.0.1:{port}:80",
        args.image,
        "sh",
        "-c",
        "while true; do nc -l -p 80 > /dev/null; done",
    )
    try:
        body = json.loads(_docker("inspect", name))[0]
        address = body["NetworkSettings"]["IPAddress"]
        for label, target in (
            ("published", ("127.0.0.1", port)),
            ("direct", (address, 80)),
        ):
            seconds = _push(target, args.mb)
            print(f"{label:10} {args.mb / seconds:8.0f} MB/s")
            time.sleep(0.2)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


if __name__ == "__main__":
    main()
