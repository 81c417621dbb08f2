"""docker-py's high-level client against the engine (the calls it really makes)."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest
from docker.errors import APIError, ImageNotFound, NotFound

from tests.support.engine import EngineProcess

pytestmark = pytest.mark.root


@pytest.fixture
def client(engine: EngineProcess) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=engine.host, version="auto")
    try:
        yield c
    finally:
        c.close()


def test_run_remove_returns_output(client: docker.DockerClient, busybox: str) -> None:
    """containers.run(remove=True) reads the logs (container I/O helper)."""
    out = client.containers.run(busybox, "echo hi", remove=True)
    assert out == b"hi\n"


def test_run_detached_list_stop_remove(
    client: docker.DockerClient, busybox: str
) -> None:
    c = client.containers.run(busybox, "sleep 60", detach=True, name="pyc1",
                              labels={"suite": "py"})  # fmt: skip
    try:
        c.reload()
        assert c.status == "running"
        assert c.name == "pyc1"
        listed = client.containers.list(filters={"label": "suite=py"})
        assert [x.id for x in listed] == [c.id]
        c.stop(timeout=1)
        assert c.wait()["StatusCode"] == 137
        c.reload()
        assert c.status == "exited"
        assert c.id in [x.id for x in client.containers.list(all=True)]
    finally:
        c.remove(force=True)
    with pytest.raises(NotFound):
        client.containers.get("pyc1")


def test_logs_and_exec_run(client: docker.DockerClient, busybox: str) -> None:
    """logs and exec_run are the container I/O helper's endpoints."""
    c = client.containers.run(
        busybox, ["sh", "-c", "echo ready; sleep 60"], detach=True
    )
    try:
        c.reload()
        result = c.exec_run("echo from-exec")
        assert result.exit_code == 0 and result.output == b"from-exec\n"
        assert b"ready" in c.logs()
    finally:
        c.remove(force=True)


def test_errors(client: docker.DockerClient, busybox: str) -> None:
    with pytest.raises(ImageNotFound):
        client.containers.create("nosuch/image:1", "true")
    c = client.containers.create(busybox, "true", name="pydup")
    try:
        with pytest.raises(APIError) as err:
            client.containers.create(busybox, "true", name="pydup")
        assert err.value.status_code == 409
    finally:
        c.remove()
