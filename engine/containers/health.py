"""Health checks: a probe run inside a container at intervals, as dockerd does.

A container whose Config has a Healthcheck (from ``docker run --health-cmd``
or the image's ``HEALTHCHECK``) gets ``State.Health`` when it starts::

    {"Status": "starting", "FailingStreak": 0, "Log": []}

One timer per running container fires after ``Interval`` (``StartInterval``
while it is still starting inside ``StartPeriod``); the probe then runs as
an exec under conmon, like ``docker exec``, and emits the same
``exec_create``/``exec_start``/``exec_die`` events dockerd emits for it.
Exit code 0 makes the container healthy; anything else, a probe that could
not start, or one that outlived ``Timeout`` (it is killed) is a failure,
and ``Retries`` failures in a row make it unhealthy. Failures inside the
start period do not count while the container is still starting. Each
change of status is a ``health_status: healthy`` (or ``unhealthy``) event.
The last five results stay in ``Log`` with at most 4 KiB of output each.

When the monitor stops (the container exits or is paused) the status turns
``unhealthy`` without an event, for compatibility with dockerd. Health lives
in the container's record, so an engine restart finds it and, for a
container still running, carries on probing from where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.containers.model import Container, now_rfc3339, parse_rfc3339
from engine.errors import EngineError, InvalidParameter

if TYPE_CHECKING:
    from engine.daemon import Daemon

log = logging.getLogger(__name__)

SECOND = 1_000_000_000
DEFAULT_INTERVAL = 30 * SECOND
DEFAULT_TIMEOUT = 30 * SECOND
DEFAULT_START_PERIOD = 0
DEFAULT_START_INTERVAL = 5 * SECOND
DEFAULT_RETRIES = 3
# The API refuses durations below this (but 0 means "the default").
MINIMUM_DURATION = 1_000_000
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096

STARTING = "starting"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
NONE = "none"
STATUSES = (STARTING, HEALTHY, UNHEALTHY, NONE)

_DURATION_KEYS = ("Interval", "Timeout", "StartPeriod", "StartInterval")


# -- configuration --


def validate(health: Any) -> None:
    """Check a create body's Healthcheck; InvalidParameter with dockerd's words."""
    if health is None:
        return
    if not isinstance(health, dict):
        raise InvalidParameter("Healthcheck must be an object")
    test = health.get("Test") or []
    if not isinstance(test, list) or not all(isinstance(t, str) for t in test):
        raise InvalidParameter("Healthcheck Test must be a list of strings")
    if test and test[0] not in ("NONE", "CMD", "CMD-SHELL"):
        raise InvalidParameter(
            f"unknown Healthcheck type {test[0]!r}: use CMD, CMD-SHELL or NONE"
        )
    if test and test[0] in ("CMD", "CMD-SHELL") and len(test) < 2:
        raise InvalidParameter(f"Healthcheck {test[0]} needs a command")
    for key in _DURATION_KEYS:
        value = health.get(key) or 0
        if not isinstance(value, int):
            raise InvalidParameter(f"{key} in Healthcheck must be nanoseconds")
        if value != 0 and value < MINIMUM_DURATION:
            raise InvalidParameter(f"{key} in Healthcheck cannot be less than 1ms")
    retries = health.get("Retries") or 0
    if not isinstance(retries, int) or retries < 0:
        raise InvalidParameter("Retries in Healthcheck cannot be negative")


def merge(
    user: dict[str, Any] | None, image: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The container's Healthcheck: the body's, with the image's for what it left out.

    ``docker run --health-interval 1s`` alone keeps the image's test.
    """
    if not user:
        return dict(image) if image else None
    merged = dict(user)
    image = image or {}
    if not merged.get("Test") and image.get("Test"):
        merged["Test"] = image["Test"]
    for key in (*_DURATION_KEYS, "Retries"):
        if not merged.get(key) and image.get(key):
            merged[key] = image[key]
    return merged


def probe_command(config: dict[str, Any]) -> list[str] | None:
    """The argv a probe runs, or None without a (usable) health check."""
    test = list((config.get("Healthcheck") or {}).get("Test") or [])
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD" and len(test) > 1:
        return test[1:]
    if test[0] == "CMD-SHELL" and len(test) > 1:
        shell = list(config.get("Shell") or []) or ["/bin/sh", "-c"]
        return [*shell, " ".join(test[1:])]
    return None


def _setting(config: dict[str, Any], key: str, default: int) -> int:
    value = int((config.get("Healthcheck") or {}).get(key) or 0)
    return value if value > 0 else default


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String()``: 1s, 1.5s, 500ms, 1m30s, 1h0m0s."""
    if ns == 0:
        return "0s"
    if ns < SECOND:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return _trim(ns / size) + unit
    hours, rest = divmod(ns, 3600 * SECOND)
    minutes, rest = divmod(rest, 60 * SECOND)
    seconds = _trim(rest / SECOND) + "s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{minutes}m{seconds}"
    return seconds


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


def status_of(c: Container) -> str:
    """starting, healthy, unhealthy, or none (no health check)."""
    return str((c.state.get("Health") or {}).get("Status") or NONE)


# -- the monitor --


@dataclass
class _Monitor:
    container: Container
    timer: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None
    stopped: bool = False


class HealthMonitor:
    """The health checks of all running containers (``manager.health``)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._monitors: dict[str, _Monitor] = {}

    def container_started(self, c: Container) -> None:
        """Reset State.Health to starting and schedule the first probe.

        Call before the container's record is saved after a start.
        """
        self._cancel(c)
        if probe_command(c.config) is None:
            c.state.pop("Health", None)
            return
        old = c.state.get("Health") or {}
        c.state["Health"] = {
            "Status": STARTING,
            "FailingStreak": 0,
            "Log": list(old.get("Log") or []),
        }
        self._begin(c)

    def container_adopted(self, c: Container) -> None:
        """Carry on probing a container found running after an engine restart."""
        if probe_command(c.config) is None or c.paused:
            return
        if not c.state.get("Health"):
            c.state["Health"] = {"Status": STARTING, "FailingStreak": 0, "Log": []}
        self._begin(c)

    def container_resumed(self, c: Container) -> None:
        """After an unpause: probing goes on, the status stays until a probe."""
        if probe_command(c.config) is not None and c.state.get("Health"):
            self._begin(c)

    def container_stopped(self, c: Container) -> None:
        """Stop probing (exit, pause, removal); the status becomes unhealthy.

        dockerd marks a container whose monitor stopped unhealthy, without an
        event; clients that wait for health see it as not healthy.
        """
        self._cancel(c)
        health = c.state.get("Health")
        if health:
            health["Status"] = UNHEALTHY

    async def close(self) -> None:
        """Stop every timer when the engine stops; containers keep their status."""
        tasks = []
        for m in list(self._monitors.values()):
            m.stopped = True
            if m.timer is not None:
                m.timer.cancel()
            if m.task is not None:
                m.task.cancel()
                tasks.append(m.task)
        self._monitors.clear()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    # -- scheduling --

    def _begin(self, c: Container) -> None:
        self._cancel(c)
        m = _Monitor(c)
        self._monitors[c.id] = m
        self._schedule(m)
        log.debug("health checks of %s every %ss", c.name, self._interval(c) / SECOND)

    def _cancel(self, c: Container) -> None:
        m = self._monitors.pop(c.id, None)
        if m is None:
            return
        m.stopped = True
        if m.timer is not None:
            m.timer.cancel()
        if m.task is not None:
            m.task.cancel()

    def _interval(self, c: Container) -> int:
        """dockerd's rule: StartInterval while starting inside the start period."""
        config = c.config
        interval = _setting(config, "Interval", DEFAULT_INTERVAL)
        start_period = _setting(config, "StartPeriod", DEFAULT_START_PERIOD)
        started = parse_rfc3339(c.state.get("StartedAt", ""))
        if (time.time() - started) * SECOND >= start_period:
            return interval
        if status_of(c) == STARTING:
            return _setting(config, "StartInterval", DEFAULT_START_INTERVAL)
        return interval

    def _schedule(self, m: _Monitor) -> None:
        loop = asyncio.get_running_loop()
        m.timer = loop.call_later(self._interval(m.container) / SECOND, self._due, m)

    def _due(self, m: _Monitor) -> None:
        m.timer = None
        if m.stopped:
            return
        m.task = asyncio.ensure_future(self._check(m))

    async def _check(self, m: _Monitor) -> None:
        c = m.container
        try:
            result = await self._probe(c)
            if not m.stopped:
                self._record(c, result)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("health check of %s failed", c.name)
        finally:
            m.task = None
        if not m.stopped and c.running and not c.paused:
            self._schedule(m)

    # -- one probe --

    async def _probe(self, c: Container) -> dict[str, Any]:
        from engine.containers.execs import exec_manager

        argv = probe_command(c.config) or []
        timeout = _setting(c.config, "Timeout", DEFAULT_TIMEOUT)
        execs = exec_manager(self.daemon)
        start = now_rfc3339()
        output = bytearray()
        ex: Any = None
        end = ""

        async def run() -> int:
            nonlocal ex
            ex = execs.create(
                c, {"Cmd": argv, "AttachStdout": True, "AttachStderr": True}
            )
            await execs.start(ex, detach=False)
            await execs.run(ex)
            conn = ex.conn
            while conn is not None:
                item = await conn.recv()
                if item is None:
                    break
                output.extend(item[1][: MAX_OUTPUT + 1 - len(output)])
            await ex.done.wait()
            return int(ex.exit_code if ex.exit_code is not None else -1)

        try:
            code = await asyncio.wait_for(run(), timeout / SECOND)
            text = _output_text(output)
        except TimeoutError:
            code = -1
            text = f"Health check exceeded timeout ({go_duration(timeout)})"
            end = now_rfc3339()
            if ex is not None:
                await self._kill(ex)
        except EngineError as err:
            code, text = -1, err.message
        finally:
            if ex is not None:
                if ex.conn is not None:
                    ex.conn.close()
                # Probes are not shown as the container's execs afterwards.
                execs.forget(ex)
        end = end or now_rfc3339()
        return {"Start": start, "End": end, "ExitCode": code, "Output": text}

    async def _kill(self, ex: Any) -> None:
        """Kill a probe that outlived its timeout, with every child it made."""
        # A probe timed out before conmon reported its pid may start late:
        # look again until it is done, so slow probes cannot pile up.
        for _ in range(10):
            if ex.pid:
                for pid in _process_tree(ex.pid):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ex.done.wait(), 1)
                return
        log.warning("health check exec %s did not end when killed", ex.id[:12])

    # -- results --

    def _record(self, c: Container, result: dict[str, Any]) -> None:
        health = c.state.get("Health")
        if not health or not c.running:
            return
        old = health.get("Status")
        entries = [*(health.get("Log") or []), result]
        health["Log"] = entries[-MAX_LOG_ENTRIES:]
        if result["ExitCode"] == 0:
            health["FailingStreak"] = 0
            health["Status"] = HEALTHY
        elif self._counts(c, health, result):
            health["FailingStreak"] = int(health.get("FailingStreak") or 0) + 1
            retries = _setting(c.config, "Retries", DEFAULT_RETRIES)
            if health["FailingStreak"] >= retries:
                health["Status"] = UNHEALTHY
        with contextlib.suppress(OSError):
            c.save()
        if health["Status"] != old:
            log.info("container %s is %s", c.name, health["Status"])
            attrs = {**c.labels, "name": c.name, "image": c.image_ref}
            self.daemon.events.publish(
                "container", f"health_status: {health['Status']}", c.id, attrs
            )

    @staticmethod
    def _counts(c: Container, health: dict[str, Any], result: dict[str, Any]) -> bool:
        """A failure inside the start period does not count while starting."""
        if health.get("Status") != STARTING:
            return True
        start_period = _setting(c.config, "StartPeriod", DEFAULT_START_PERIOD)
        since = parse_rfc3339(result["Start"]) - parse_rfc3339(c.state["StartedAt"])
        return since * SECOND >= start_period


def _output_text(output: bytearray) -> str:
    # dockerd keeps 4 KiB and marks the cut with "...".
    text = bytes(output[:MAX_OUTPUT]).decode(errors="replace")
    return text + "..." if len(output) > MAX_OUTPUT else text


def _process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc (children first)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: parse after it.
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry))
    out: list[int] = []
    stack = [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out[::-1]
