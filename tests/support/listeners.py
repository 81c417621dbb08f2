"""The API listeners under test: served on a thread, relaying to a real engine.

    with serving(UnixListener(path, engine_proxy(engine))) as listener:
        ...  # the docker CLI talks to listener.docker_host

The relay is the forwarder's own ``splice``, with a connection to the
engine's unix socket standing in for the SSH channel to the guest.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any, TypeVar, cast

from desktop.machine import api_listener
from desktop.machine.forwarder import splice
from tests.support.engine import EngineProcess

L = TypeVar("L", bound=api_listener.Listener)


def engine_proxy(engine: EngineProcess) -> api_listener.Proxy:
    def proxy(conn: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(str(engine.socket))
        splice(conn, cast(Any, upstream))

    return proxy


@contextlib.contextmanager
def serving(listener: L) -> Iterator[L]:
    """Run ``listener.serve`` on a thread; on exit close it and check it ended."""
    thread = threading.Thread(target=listener.serve, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        listener.close()
        thread.join(10)
    assert not thread.is_alive(), "serve() did not return after close()"
