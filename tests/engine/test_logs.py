"""Logs: conmon's k8s-file format read back, and ``docker logs`` end to end."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.containers.logs import (
    LogParser,
    format_timestamp,
    parse_since,
    parse_timestamp,
    read_log,
)
from engine.containers.streams import STDERR, STDOUT
from engine.errors import InvalidParameter
from tests.support.engine import EngineProcess

SAMPLE = (
    b"2026-12-03T19:03:56.968859745+00:00 stdout F out\n"
    b"2026-12-03T19:03:56.968906147+00:00 stderr F err\n"
    b"2026-12-03T19:03:57.000000001+00:00 stdout P 50% do\n"
    b"2026-12-03T19:03:57.100000000+00:00 stdout F ne\n"
    b"2026-12-03T19:03:58.000000000+00:00 stdout F \n"
    b"2026-12-03T19:03:59.000000000+00:00 stdout P no newline at exit\n"
)


def test_timestamps_round_trip_in_utc() -> None:
    ns = parse_timestamp(b"2026-12-03T19:03:56.968859745+00:00")
    assert format_timestamp(ns) == "2026-12-03T19:03:56.968859745Z"
    assert parse_timestamp(b"2026-12-03T20:03:56.5+01:00") == parse_timestamp(
        b"2026-12-03T19:03:56.500000000Z"
    )


def test_since_takes_seconds_with_nanoseconds() -> None:
    assert parse_since("1700000000.5", "since") == 1_700_000_000_500_000_000
    assert parse_since("0", "since") is None
    with pytest.raises(InvalidParameter):
        parse_since("yesterday", "since")


def test_partial_lines_join_their_final_part(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    path.write_bytes(SAMPLE)
    messages = read_log(path)
    assert [(m.stream, m.data) for m in messages] == [
        (STDOUT, b"out\n"),
        (STDERR, b"err\n"),
        (STDOUT, b"50% done\n"),
        (STDOUT, b"\n"),
        (STDOUT, b"no newline at exit"),
    ]
    # A joined message carries the time of its first part.
    assert format_timestamp(messages[2].time_ns).startswith("2026-12-03T19:03:57.000")
    assert [m.data for m in read_log(path, tail=2)] == [b"\n", b"no newline at exit"]


def test_parser_resumes_at_a_pending_partial_line() -> None:
    parser = LogParser()
    first = list(parser.feed(SAMPLE[:150]))
    assert [m.data for m in first] == [b"out\n", b"err\n"]
    # The follower re-reads from the unfinished line onwards.
    rest = LogParser(parser.resume_offset)
    later = list(rest.feed(SAMPLE[parser.resume_offset :]))
    assert [m.data for m in later][:1] == [b"50% done\n"]


# -- the docker CLI --


@pytest.fixture
def chatty(engine: EngineProcess, busybox: str) -> Iterator[str]:
    name = "logs-chatty"
    engine.docker(
        "run", "--name", name, busybox, "sh", "-c",
        "echo one; echo two >&2; sleep 1.2; echo three",
        check=True,
    )  # fmt: skip
    yield name
    engine.docker("rm", "-f", name)


@pytest.mark.root
def test_docker_logs_keeps_streams_apart(engine: EngineProcess, chatty: str) -> None:
    result = engine.docker("logs", chatty)
    assert result.stdout == "one\nthree\n"
    assert result.stderr == "two\n"


@pytest.mark.root
def test_docker_logs_tail_and_timestamps(engine: EngineProcess, chatty: str) -> None:
    result = engine.docker("logs", "--tail", "1", "-t", chatty)
    stamp, _, text = result.stdout.partition(" ")
    assert text == "three\n"
    assert stamp.endswith("Z") and len(stamp) == len("2026-12-03T19:03:56.968859745Z")


@pytest.mark.root
def test_docker_logs_since_and_until(engine: EngineProcess, chatty: str) -> None:
    stamps = engine.docker("logs", "-t", chatty).stdout.splitlines()
    third = stamps[-1].split()[0]
    since = engine.docker("logs", "--since", third, chatty)
    assert since.stdout == "three\n"
    until = engine.docker("logs", "--until", stamps[0].split()[0], chatty)
    assert until.stdout == "one\n"


@pytest.mark.root
def test_docker_logs_follow_ends_when_the_container_exits(
    engine: EngineProcess, busybox: str
) -> None:
    name = "logs-follow"
    engine.docker(
        "run", "-d", "--name", name, busybox, "sh", "-c",
        "for i in 1 2 3; do echo tick$i; sleep 0.4; done",
        check=True,
    )  # fmt: skip
    try:
        result = engine.docker("logs", "-f", name, timeout=60)
        assert result.returncode == 0
        assert result.stdout == "tick1\ntick2\ntick3\n"
    finally:
        engine.docker("rm", "-f", name)


@pytest.mark.root
def test_docker_logs_of_unknown_container(engine: EngineProcess) -> None:
    result = engine.docker("logs", "no-such-container")
    assert result.returncode != 0
    assert "No such container: no-such-container" in result.stderr


@pytest.mark.root
def test_docker_py_logs(engine: EngineProcess, busybox: str) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=engine.host)
    try:
        output = client.containers.run(
            busybox, ["sh", "-c", "echo py-out; echo py-err >&2"], remove=True
        )
        assert output == b"py-out\n"
        container = client.containers.run(
            busybox, ["sh", "-c", "echo a; echo b >&2"], detach=True
        )
        container.wait()
        assert container.logs(stderr=False) == b"a\n"
        assert container.logs() in (b"a\nb\n", b"b\na\n")
        container.remove()
    finally:
        client.close()


@pytest.mark.root
def test_logs_follow_client_hangup_frees_the_stream(
    engine: EngineProcess, busybox: str
) -> None:
    name = "logs-hangup"
    engine.docker("run", "-d", "--name", name, busybox, "sleep", "60", check=True)
    try:
        proc = subprocess.Popen(
            ["docker", "logs", "-f", name],
            env=engine.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        proc.kill()
        proc.wait()
        # The engine still answers (the follower did not wedge anything).
        assert engine.docker("logs", name).returncode == 0
    finally:
        engine.docker("rm", "-f", name)


@pytest.mark.root
def test_follow_joins_partial_lines(engine: EngineProcess, busybox: str) -> None:
    name = "logs-partial"
    engine.docker(
        "run", "-d", "--name", name, busybox, "sh", "-c",
        "sleep 0.5; printf 'half'; sleep 0.5; echo ' whole'; printf 'tail'",
        check=True,
    )  # fmt: skip
    try:
        followed = engine.docker("logs", "-f", name, timeout=60)
        assert followed.stdout == "half whole\ntail"
        assert engine.docker("logs", name).stdout == "half whole\ntail"
    finally:
        engine.docker("rm", "-f", name)
