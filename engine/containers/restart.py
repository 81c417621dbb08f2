"""Restart policies: whether a container that exited comes back, and when.

The policies are docker's: ``no``, ``on-failure[:N]`` (non-zero exit, at
most N times), ``always`` and ``unless-stopped`` (both also after an engine
restart; ``unless-stopped`` not once a user stopped it). The delay doubles
from 100 ms up to a minute and starts over once a run lasted 10 seconds::

    delay = next_delay(c, ran_for=3.2)   # None: stay down
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import InvalidParameter

if TYPE_CHECKING:
    from engine.containers.model import Container

POLICIES = ("", "no", "always", "unless-stopped", "on-failure")
FIRST_DELAY = 0.1
MAX_DELAY = 60.0
RESET_AFTER = 10.0


def validate(policy: dict[str, Any] | None, auto_remove: bool) -> None:
    """Raises InvalidParameter for an unknown or contradictory policy."""
    if not policy:
        return
    name = policy.get("Name") or ""
    if name not in POLICIES:
        raise InvalidParameter(f"invalid restart policy '{name}'")
    retries = int(policy.get("MaximumRetryCount") or 0)
    if retries < 0:
        raise InvalidParameter(
            "invalid restart policy: maximum retry count cannot be negative"
        )
    if retries and name != "on-failure":
        raise InvalidParameter(
            "invalid restart policy: maximum retry count can only be used with 'on-failure'"
        )
    if auto_remove and name not in ("", "no"):
        raise InvalidParameter(
            "can't create 'AutoRemove' container with restart policy"
        )


def should_restart(c: Container, exit_code: int) -> bool:
    """After an exit the engine did not cause (no stop, kill via API, rm)."""
    policy = c.restart_policy
    name = policy["Name"]
    if name == "always":
        return True
    if name == "unless-stopped":
        return not c.manually_stopped
    if name == "on-failure":
        limit = policy["MaximumRetryCount"]
        return exit_code != 0 and (limit == 0 or c.restart_count < limit)
    return False


def restarts_with_engine(c: Container) -> bool:
    """Whether the container starts again when the engine (re)starts."""
    name = c.restart_policy["Name"]
    return name == "always" or (name == "unless-stopped" and not c.manually_stopped)


def next_delay(c: Container, ran_for: float) -> float:
    previous = float(c.extra.get("RestartDelay", 0.0))
    if ran_for >= RESET_AFTER or previous <= 0:
        delay = FIRST_DELAY
    else:
        delay = min(previous * 2, MAX_DELAY)
    c.extra["RestartDelay"] = delay
    return delay
