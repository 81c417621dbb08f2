"""The Dockerfile parser and word expansion, as pure logic."""

from __future__ import annotations

import pytest

from engine.build.dockerfile import (
    DockerfileError,
    expand,
    expand_words,
    parse,
    split_words,
)


def cmds(text: str) -> list[tuple[str, list[str]]]:
    return [(i.cmd, i.args) for i in parse(text).instructions]


def test_instructions_and_line_numbers() -> None:
    df = parse('# comment\nFROM busybox AS base\n\nrun echo hi\nCMD ["a", "b"]\n')
    assert [(i.cmd, i.line) for i in df.instructions] == [
        ("from", 2),
        ("run", 4),
        ("cmd", 5),
    ]
    assert df.instructions[0].args == ["busybox", "AS", "base"]
    assert df.instructions[2].json and df.instructions[2].args == ["a", "b"]


def test_continuation_keeps_inner_whitespace_and_skips_comments() -> None:
    df = parse("RUN echo \\\n  # a comment inside\n  hi \\\n\n  there\n")
    (inst,) = df.instructions
    assert inst.args == ["echo   hi   there"]
    assert inst.original == "RUN echo   hi   there"
    assert inst.line == 1


def test_escape_directive_changes_continuation() -> None:
    df = parse("# escape=`\nFROM x\nRUN dir c:\\ `\n  /b\n")
    assert df.escape == "`"
    assert df.instructions[1].args == ["dir c:\\   /b"]


def test_syntax_directive_is_noted() -> None:
    df = parse("# syntax=docker/dockerfile:1\nFROM x\n")
    assert df.directives == {"syntax": "docker/dockerfile:1"}


def test_directive_after_instruction_is_a_comment() -> None:
    df = parse("FROM x\n# escape=`\nRUN a \\\n b\n")
    assert df.escape == "\\"
    assert df.instructions[1].args == ["a  b"]


def test_unknown_instruction_names_the_line() -> None:
    with pytest.raises(DockerfileError) as err:
        parse("FROM busybox\n\nFOO bar\n")
    assert (
        err.value.message == "dockerfile parse error line 3: unknown instruction: FOO"
    )
    assert err.value.status == 400


def test_shell_and_exec_forms() -> None:
    df = parse('RUN ["sh", "-c", "exit 0"]\nRUN [not json\nENTRYPOINT sleep 5\n')
    exec_form, broken, shell_form = df.instructions
    assert exec_form.json and exec_form.args == ["sh", "-c", "exit 0"]
    assert not broken.json and broken.args == ["[not json"]
    assert not shell_form.json and shell_form.args == ["sleep 5"]


def test_env_and_label_forms() -> None:
    env, legacy, label = parse(
        'ENV A=1 B="x y" C=a\\ b\nENV OLD some value\nLABEL "c d"=e f=g\n'
    ).instructions
    assert env.args == ["A", "1", "B", '"x y"', "C", "a\\ b"]
    assert legacy.args == ["OLD", "some value"]
    assert label.args == ['"c d"', "e", "f", "g"]


def test_flags_of_copy_and_from() -> None:
    copy, from_ = parse(
        "COPY --from=base --chown=1:2 --chmod=644 a b /c/\nFROM --platform=linux/amd64 x\n"
    ).instructions
    assert copy.flags == {"from": "base", "chown": "1:2", "chmod": "644"}
    assert copy.args == ["a", "b", "/c/"]
    assert from_.flags == {"platform": "linux/amd64"}


def test_copy_needs_two_arguments() -> None:
    with pytest.raises(DockerfileError, match="line 2: COPY requires at least two"):
        parse("FROM x\nCOPY onlyone\n")


def test_healthcheck_and_onbuild() -> None:
    health, none, onbuild = parse(
        "HEALTHCHECK --interval=5s CMD curl -f http://x/\nHEALTHCHECK NONE\n"
        "ONBUILD COPY . /app\n"
    ).instructions
    assert health.flags == {"interval": "5s"}
    assert health.sub is not None and health.sub.args == ["curl -f http://x/"]
    assert none.args == ["NONE"]
    assert onbuild.sub is not None and onbuild.sub.cmd == "copy"
    with pytest.raises(DockerfileError, match="isn't allowed as an ONBUILD"):
        parse("ONBUILD FROM x\n")


def test_split_words_keeps_quotes() -> None:
    assert split_words("a \"b c\" 'd e' f\\ g") == ["a", '"b c"', "'d e'", "f\\ g"]


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("$A", "1"),
        ("${A}x", "1x"),
        ("${NOPE:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),
        ("${EMPTY-dflt}", ""),
        ("${A:+set}", "set"),
        ("${NOPE:+set}", ""),
        ("\\$A", "$A"),
        ("'$A'", "$A"),
        ('"$A b"', "1 b"),
        ('"\\$A"', "$A"),
        ("$", "$"),
        ("a$NOPE-b", "a-b"),
    ],
)
def test_expand(word: str, expected: str) -> None:
    assert expand(word, {"A": "1", "EMPTY": ""}) == expected


def test_expand_required_variable() -> None:
    with pytest.raises(DockerfileError, match="NOPE: must be set"):
        expand("${NOPE:?must be set}", {})


def test_expand_words_splits_after_quotes() -> None:
    assert expand_words('$A "b c" d', {"A": "x"}) == ["x", "b c", "d"]
