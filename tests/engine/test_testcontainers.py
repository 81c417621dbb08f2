"""testcontainers-python against the engine, with the busybox test image.

Ryuk (the reaper container) comes from Docker Hub, which is not reachable
here, so it is disabled; the fixture removes what the test made.
"""

from __future__ import annotations

import os

import pytest

from tests.support.engine import EngineProcess

pytestmark = pytest.mark.root


def test_docker_container_lifecycle(
    engine: EngineProcess, busybox: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", engine.host)
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    container = (
        DockerContainer(busybox)
        .with_command(["sh", "-c", "echo tc-ready; exec sleep 60"])
        .with_env("GREETING", "hello")
        .waiting_for(LogMessageWaitStrategy("tc-ready"))
    )
    with container:
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        assert wrapped.status == "running"
        code, out = container.exec(["sh", "-c", "echo $GREETING"])
        assert code == 0 and out == b"hello\n"
        cid = wrapped.id
    listed = engine.docker("ps", "-a", "-q", "--no-trunc").stdout.split()
    assert cid not in listed
    assert os.environ["TESTCONTAINERS_RYUK_DISABLED"] == "true"
