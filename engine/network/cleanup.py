"""Remove what an engine left on the host after it died without stopping.

A stopped engine takes its bridges and nft table away itself when no
container is left; an engine that was killed cannot. This does it from the
files the engine left (network records, sandbox states), for test fixtures
and for ``dockyard`` to call after a crash::

    remove_host_state(data_root, exec_root, "dockyard0")

Only Dockyard's own objects are touched: the bridges named in its network
records, the veths in its sandbox states, its netns mounts, its nft table.
Run it only when no container of that engine is still running.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import threading
from pathlib import Path

from pyroute2 import IPRoute

from engine.network import netns
from engine.network.nat import table_name

log = logging.getLogger(__name__)


def remove_host_state(data_root: Path, exec_root: Path, bridge_name: str) -> None:
    """Delete the engine's bridges, veths, netns mounts and nft table."""
    links = {bridge_name}
    for record in (data_root / "networks").glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            name = json.loads(record.read_text()).get("bridge")
            if name:
                links.add(name)
    for state in (exec_root / "network").glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            for endpoint in (
                json.loads(state.read_text()).get("endpoints") or {}
            ).values():
                if endpoint.get("veth"):
                    links.add(endpoint["veth"])
    for path in (exec_root / "netns").glob("*"):
        with contextlib.suppress(OSError):
            netns.remove(path)

    # pyroute2 must not run on a thread with a running event loop.
    thread = threading.Thread(target=_delete_links, args=(sorted(links),))
    thread.start()
    thread.join()
    table = table_name(bridge_name)
    subprocess.run(
        ["nft", "-f", "-"],
        input=f"table inet {table}\ndelete table inet {table}\n",
        capture_output=True,
        text=True,
        check=False,
    )


def _delete_links(names: list[str]) -> None:
    with IPRoute() as ipr:
        for name in names:
            found = ipr.link_lookup(ifname=name)
            if found:
                try:
                    ipr.link("del", index=found[0])
                except Exception as err:
                    log.warning("cannot delete %s: %s", name, err)
