"""docker stats and docker top, read from the kernel (cgroup v1 here)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from engine.containers.stats import Cgroups
from tests.support.engine import EngineProcess


def test_cgroups_of_this_process_are_found() -> None:
    groups = Cgroups(os.getpid())
    if groups.v2:
        assert groups.unified is not None and groups.unified.is_dir()
    else:
        assert groups.v1("memory") is not None
    assert os.getpid() in groups.procs() or not groups.procs()


@pytest.fixture
def busy(engine: EngineProcess, busybox: str) -> Iterator[str]:
    name = "stats-busy"
    # Some CPU and some memory, so that both show as non-zero.
    engine.docker(
        "run", "-d", "--name", name, busybox, "sh", "-c",
        "x=$(head -c 4000000 /dev/zero | tr '\\0' a); while :; do :; done",
        check=True,
    )  # fmt: skip
    yield name
    engine.docker("rm", "-f", name)


@pytest.mark.root
def test_docker_stats_no_stream_shows_usage(engine: EngineProcess, busy: str) -> None:
    result = engine.docker(
        "stats", "--no-stream", "--format", "{{.CPUPerc}} {{.MemUsage}} {{.PIDs}}", busy
    )
    assert result.returncode == 0, result.stderr
    cpu, memory, *_ = result.stdout.split()
    assert float(cpu.rstrip("%")) > 0
    assert not memory.startswith("0B")


@pytest.mark.root
def test_stats_one_shot_has_the_api_shape(engine: EngineProcess, busy: str) -> None:
    status, body = engine.request(
        "GET", f"/containers/{busy}/stats?stream=0&one-shot=1"
    )
    assert status == 200
    sample = json.loads(body)
    for key in (
        "cpu_stats",
        "precpu_stats",
        "memory_stats",
        "pids_stats",
        "blkio_stats",
    ):
        assert key in sample
    assert sample["memory_stats"]["usage"] > 0
    assert sample["memory_stats"]["limit"] > 0
    assert sample["cpu_stats"]["cpu_usage"]["total_usage"] > 0
    assert sample["pids_stats"]["current"] >= 1
    assert "eth0" in sample.get("networks", {})
    assert sample["name"] == f"/{busy}"


@pytest.mark.root
def test_stats_of_a_stopped_container(engine: EngineProcess, busybox: str) -> None:
    name = "stats-stopped"
    engine.docker("create", "--name", name, busybox, "true", check=True)
    try:
        status, body = engine.request("GET", f"/containers/{name}/stats?stream=0")
        assert status == 200
        assert json.loads(body)["read"] == "0001-01-01T00:00:00Z"
    finally:
        engine.docker("rm", "-f", name)


@pytest.mark.root
def test_docker_top_lists_the_processes(engine: EngineProcess, busy: str) -> None:
    result = engine.docker("top", busy)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "UID",
        "PID",
        "PPID",
        "C",
        "STIME",
        "TTY",
        "TIME",
        "CMD",
    ]
    assert any("while :; do :; done" in line for line in lines[1:])
    custom = engine.docker("top", busy, "-o", "pid,comm")
    assert custom.stdout.splitlines()[0].split() == ["PID", "COMMAND"]
    assert "sh" in custom.stdout


@pytest.mark.root
def test_top_of_a_stopped_container_conflicts(
    engine: EngineProcess, busybox: str
) -> None:
    name = "top-stopped"
    engine.docker("create", "--name", name, busybox, "true", check=True)
    try:
        status, body = engine.request("GET", f"/containers/{name}/top")
        assert status == 409
        assert b"is not running" in body
    finally:
        engine.docker("rm", "-f", name)
