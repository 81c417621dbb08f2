"""Values of the metadata instructions, as pure logic."""

from __future__ import annotations

import pytest

from engine.build.dockerfile import parse
from engine.build.instructions import (
    InstructionError,
    expand_ports,
    go_list,
    health_history,
    healthcheck_config,
    parse_duration,
)


def test_expand_ports() -> None:
    assert expand_ports("80") == ["80/tcp"]
    assert expand_ports("53/UDP") == ["53/udp"]
    assert expand_ports("8000-8002") == ["8000/tcp", "8001/tcp", "8002/tcp"]
    with pytest.raises(InstructionError, match="Invalid containerPort: http"):
        expand_ports("http")


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("5s", 5 * 10**9),
        ("1m30s", 90 * 10**9),
        ("100ms", 10**8),
        ("1.5h", 5400 * 10**9),
    ],
)
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(
        InstructionError, match=r"unknown unit \"x\" in duration \"5x\""
    ):
        parse_duration("5x")


def test_healthcheck_config_and_history_text() -> None:
    (inst,) = parse(
        "HEALTHCHECK --interval=5s --retries=3 CMD curl -f http://x/\n"
    ).instructions
    check = healthcheck_config(inst)
    assert check == {
        "Test": ["CMD-SHELL", "curl -f http://x/"],
        "Interval": 5 * 10**9,
        "Retries": 3,
    }
    assert health_history(check) == (
        '&{["CMD-SHELL" "curl -f http://x/"] "5s" "0s" "0s" \'\\x03\'}'
    )
    (exec_form,) = parse('HEALTHCHECK CMD ["true"]\n').instructions
    assert healthcheck_config(exec_form) == {"Test": ["CMD", "true"]}
    (bad,) = parse("HEALTHCHECK --retries=0 CMD true\n").instructions
    with pytest.raises(InstructionError, match="--retries cannot be less than 1"):
        healthcheck_config(bad)


def test_go_list() -> None:
    assert go_list(["echo", "hi there"]) == '["echo" "hi there"]'
