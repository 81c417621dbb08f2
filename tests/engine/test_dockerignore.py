""".dockerignore patterns, as pure logic."""

from __future__ import annotations

import pytest

from engine.build.dockerignore import IgnoreMatcher, clean


def matcher(text: str) -> IgnoreMatcher:
    return IgnoreMatcher.from_text(text)


@pytest.mark.parametrize(
    ("path", "expected"),
    [("./a//b/", "a/b"), ("/a/b", "a/b"), ("a/../b", "b"), ("../x", "x"), ("", ".")],
)
def test_clean(path: str, expected: str) -> None:
    assert clean(path) == expected


def test_star_stays_in_one_directory() -> None:
    m = matcher("*.log\n")
    assert m.excluded("a.log")
    assert not m.excluded("sub/a.log")


def test_double_star_crosses_directories() -> None:
    m = matcher("**/*.log\n")
    assert m.excluded("a.log")
    assert m.excluded("x/y/a.log")
    assert not m.excluded("x/y/a.txt")


def test_directory_pattern_covers_its_contents() -> None:
    m = matcher("build/\nnode_modules\n")
    assert m.excluded("build")
    assert m.excluded("build/out/x.o")
    assert m.excluded("node_modules/pkg/index.js")
    assert not m.excluded("src/build.py")


def test_exception_reincludes_and_last_match_wins() -> None:
    m = matcher("*.md\n!README.md\n")
    assert m.excluded("CHANGES.md")
    assert not m.excluded("README.md")
    again = matcher("*.md\n!README.md\nREADME*\n")
    assert again.excluded("README.md")


def test_comments_blank_lines_and_leading_slash() -> None:
    m = matcher("# secrets\n\n/secret.txt\n  \n")
    assert m.excluded("secret.txt")
    assert not m.excluded("# secrets")


def test_question_mark_and_classes() -> None:
    m = matcher("file?.txt\n[ab].bin\n")
    assert m.excluded("file1.txt")
    assert not m.excluded("file10.txt")
    assert m.excluded("a.bin")
    assert not m.excluded("c.bin")


def test_exception_below_excluded_directory() -> None:
    m = matcher("docs\n!docs/keep.md\n")
    assert m.excluded("docs/other.md")
    assert not m.excluded("docs/keep.md")
    assert m.may_include_below("docs")
    assert not matcher("docs\n").may_include_below("docs")
