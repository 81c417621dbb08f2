"""The metadata instructions' values: ports, health checks, history text.

Small conversions the builder applies to ENV-less instructions, kept apart
from the step machinery::

    expand_ports("8000-8001/udp")     # ["8000/udp", "8001/udp"]
    parse_duration("1m30s")           # 90_000_000_000 (nanoseconds)
    go_list(["echo", "hi"])           # '["echo" "hi"]', as dockerd's history shows
"""

from __future__ import annotations

import json
import re
from typing import Any

from engine.build.dockerfile import Instruction
from engine.errors import InvalidParameter


class InstructionError(InvalidParameter):
    """An instruction whose value docker would refuse."""


DURATION = re.compile(r"(\d*(?:\.\d+)?)([^\d.]*)")
DURATION_FULL = re.compile(r"^(\d+(?:\.\d+)?[^\d.]+)+$")
DURATION_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}


def go_list(values: list[str]) -> str:
    """A string list the way Go's ``%q`` prints it: ``["a" "b"]``."""
    return "[" + " ".join(json.dumps(v, ensure_ascii=False) for v in values) + "]"


def expand_ports(word: str) -> list[str]:
    port, _, proto = word.partition("/")
    proto = (proto or "tcp").lower()
    start, _, end = port.partition("-")
    try:
        first = int(start)
        last = int(end) if end else first
    except ValueError:
        raise InstructionError(f"Invalid containerPort: {word}") from None
    if not 0 < first <= last <= 65535:
        raise InstructionError(f"Invalid containerPort: {word}")
    return [f"{p}/{proto}" for p in range(first, last + 1)]


def parse_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds, with Go's error wording."""
    if text in ("0", ""):
        return 0
    total = 0.0
    for match in DURATION.finditer(text):
        if not match.group(0):
            continue
        number, unit = match.group(1), match.group(2)
        if not number:
            raise InstructionError(f'time: invalid duration "{text}"')
        if not unit:
            raise InstructionError(f'time: missing unit in duration "{text}"')
        if unit not in DURATION_NS:
            raise InstructionError(f'time: unknown unit "{unit}" in duration "{text}"')
        total += float(number) * DURATION_NS[unit]
    if not DURATION_FULL.match(text):
        raise InstructionError(f'time: invalid duration "{text}"')
    return int(total)


def healthcheck_config(inst: Instruction) -> dict[str, Any]:
    if inst.args == ["NONE"]:
        return {"Test": ["NONE"]}
    assert inst.sub is not None
    sub = inst.sub
    test = ["CMD", *sub.args] if sub.json else ["CMD-SHELL", sub.args[0]]
    check: dict[str, Any] = {"Test": test}
    names = {
        "interval": "Interval",
        "timeout": "Timeout",
        "start-period": "StartPeriod",
        "start-interval": "StartInterval",
    }
    for flag, value in inst.flags.items():
        if flag in names:
            ns = parse_duration(value)
            if 0 < ns < 1_000_000:
                raise InstructionError(f"Interval {flag} cannot be less than 1ms")
            if ns:
                check[names[flag]] = ns
        elif flag == "retries":
            try:
                retries = int(value)
            except ValueError:
                raise InstructionError(f"invalid retries value {value!r}") from None
            if retries < 1:
                raise InstructionError(
                    f"--retries cannot be less than 1 (got {retries})"
                )
            check["Retries"] = retries
        else:
            raise InstructionError(f"Unknown flag: {flag}")
    return check


def health_history(check: dict[str, Any]) -> str:
    def dur(ns: int) -> str:
        return f'"{ns / 1e9:g}s"' if ns else '"0s"'

    return (
        f"&{{{go_list(check['Test'])} {dur(check.get('Interval', 0))} "
        f"{dur(check.get('Timeout', 0))} {dur(check.get('StartPeriod', 0))} "
        f"'\\x{check.get('Retries', 0):02x}'}}"
    )
