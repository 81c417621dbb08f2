"""Resource limits: shown by inspect and enforced inside the container.

The container reads its own cgroup files (cgroup v1 on this host, v2 in
Dockyard's VM), and a fork loop proves the pids limit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.engine.test_containers import inspect, output, run_d
from tests.support.engine import EngineProcess

pytestmark = pytest.mark.root

READ_LIMITS = (
    "if [ -e /sys/fs/cgroup/cgroup.controllers ]; then "
    "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory.swap.max "
    "/sys/fs/cgroup/cpu.max /sys/fs/cgroup/cpu.weight /sys/fs/cgroup/pids.max; "
    "else cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
    "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes "
    "/sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us "
    "/sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/pids/pids.max; fi"
)


def test_limits_in_inspect_and_in_effect(engine: EngineProcess, busybox: str) -> None:
    cid = run_d(
        engine, "--memory", "64m", "--memory-swap", "96m", "--cpus", "0.5",
        "--cpu-shares", "512", "--pids-limit", "20", busybox, "sh", "-c", READ_LIMITS,
    )  # fmt: skip
    try:
        host = inspect(engine, cid)["HostConfig"]
        assert host["Memory"] == 64 * 1024 * 1024
        assert host["MemorySwap"] == 96 * 1024 * 1024
        assert host["NanoCpus"] == 500_000_000
        assert host["CpuShares"] == 512
        assert host["PidsLimit"] == 20
        values = output(engine, cid).split()
        if len(values) == 6:  # cgroup v1
            assert values == [
                str(64 * 1024 * 1024), str(96 * 1024 * 1024), "50000", "100000", "512", "20",
            ]  # fmt: skip
        else:  # cgroup v2: memory.max, swap.max (swap alone), cpu.max, weight, pids
            assert values[0] == str(64 * 1024 * 1024)
            assert values[1] == str(32 * 1024 * 1024)
            assert values[2:4] == ["50000", "100000"]
            assert values[-1] == "20"
    finally:
        engine.docker("rm", cid)


def test_memory_swap_defaults_to_twice_memory(
    engine: EngineProcess, busybox: str
) -> None:
    cid = engine.docker(
        "create", "--memory", "32m", busybox, "true", check=True
    ).stdout.strip()
    try:
        assert inspect(engine, cid)["HostConfig"]["MemorySwap"] == 64 * 1024 * 1024
    finally:
        engine.docker("rm", cid)


def test_pids_limit_stops_a_fork_loop(engine: EngineProcess, busybox: str) -> None:
    script = (
        "n=0; while [ $n -lt 40 ]; do sleep 5 & if [ $? -ne 0 ]; then break; fi; "
        "n=$((n+1)); done; echo started=$n"
    )
    cid = run_d(engine, "--pids-limit", "10", busybox, "sh", "-c", script)
    try:
        text = output(engine, cid) + output(engine, cid, "stderr")
        assert "can't fork" in text or "Resource temporarily unavailable" in text
        started = (
            int(text.split("started=")[-1].split()[0]) if "started=" in text else 0
        )
        assert started < 10
    finally:
        engine.docker("rm", "-f", cid)


def test_memory_limit_kills_a_hog(engine: EngineProcess, busybox: str) -> None:
    # A shell variable of 64 MiB in a 16 MiB container: the OOM killer ends it.
    cid = run_d(
        engine, "--memory", "16m", "--memory-swap", "16m", busybox,
        "sh", "-c", "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo ${#x}",
    )  # fmt: skip
    try:
        state = inspect(engine, cid)["State"]
        assert state["ExitCode"] == 137
        assert state["OOMKilled"]
    finally:
        engine.docker("rm", cid)


def test_update_changes_limits(engine: EngineProcess, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "upd", "--memory", "64m", busybox, "sleep", "60",
                  check=True)  # fmt: skip
    try:
        engine.docker("update", "--memory", "128m", "--memory-swap", "256m", "--cpus", "1",
                      "upd", check=True)  # fmt: skip
        host = inspect(engine, "upd")["HostConfig"]
        assert host["Memory"] == 128 * 1024 * 1024 and host["NanoCpus"] == 1_000_000_000
        pid = inspect(engine, "upd")["State"]["Pid"]
        cgroups = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        memory = next((line for line in cgroups if ":memory:" in line), None)
        if memory:
            path = "/sys/fs/cgroup/memory" + memory.split(":", 2)[2]
            assert Path(path, "memory.limit_in_bytes").read_text().strip() == str(
                128 * 1024 * 1024
            )
    finally:
        engine.docker("rm", "-f", "upd")


def test_bad_limits_are_refused(engine: EngineProcess, busybox: str) -> None:
    low = engine.docker("create", "--memory", "1m", busybox, "true")
    assert low.returncode != 0 and "Minimum memory limit" in low.stderr
    swap = engine.docker(
        "create", "--memory", "64m", "--memory-swap", "32m", busybox, "true"
    )
    assert swap.returncode != 0 and "memoryswap" in swap.stderr
    status, body = engine.request(
        "POST", "/v1.47/containers/create",
        json.dumps({"Image": busybox, "Cmd": ["true"],
                    "HostConfig": {"NanoCpus": 1000000000, "CpuQuota": 50000}}).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 400 and "Conflicting options" in json.loads(body)["message"]


def test_cpuset_cpus(engine: EngineProcess, busybox: str) -> None:
    script = (
        "if [ -e /sys/fs/cgroup/cgroup.controllers ]; then cat /sys/fs/cgroup/cpuset.cpus; "
        "else cat /sys/fs/cgroup/cpuset/cpuset.cpus; fi; grep Cpus_allowed_list /proc/self/status"
    )
    cid = run_d(engine, "--cpuset-cpus", "0", busybox, "sh", "-c", script)
    try:
        assert inspect(engine, cid)["HostConfig"]["CpusetCpus"] == "0"
        lines = output(engine, cid).split("\n")
        assert lines[0] == "0"
        assert lines[1].split() == ["Cpus_allowed_list:", "0"]
    finally:
        engine.docker("rm", cid)
