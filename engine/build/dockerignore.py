"""``.dockerignore``: which context files a build may see.

One pattern per line, in Go's ``filepath.Match`` syntax (``*``, ``?``,
``[a-z]``, ``\\`` escapes) plus ``**`` for any number of directories. Patterns
are cleaned like paths (``./a//b/`` is ``a/b``, a leading ``/`` is dropped);
``#`` lines are comments. A pattern starting with ``!`` is an exception that
re-includes what earlier patterns excluded; the last matching pattern wins.
A pattern that matches a directory excludes everything below it::

    >>> m = IgnoreMatcher.from_text("*.log\\n!keep.log\\nbuild/\\n")
    >>> [m.excluded(p) for p in ("a.log", "keep.log", "build/out/x", "src/a.log")]
    [True, False, True, False]

The Dockerfile and ``.dockerignore`` themselves are still sent by the CLI
even when a pattern matches them, so the builder can read them; they are
only hidden from COPY and ADD.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass


@dataclass
class Pattern:
    text: str
    exclusion: bool
    regex: re.Pattern[str]
    # Parent directories of a path also count: "a" excludes "a/b/c".
    dirs: int


def clean(path: str) -> str:
    """Go's filepath.Clean for slash paths, relative to the context root."""
    cleaned = posixpath.normpath("/" + path).lstrip("/")
    return cleaned or "."


def compile_pattern(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    # "**/" matches zero or more whole directories.
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise ValueError(f"syntax error in pattern {pattern!r}")
            body = pattern[i + 1 : end]
            if body.startswith("^") or body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return re.compile("".join(out), re.DOTALL)


class IgnoreMatcher:
    """Decides, for a slash path relative to the context, if it is excluded."""

    def __init__(self, lines: list[str]) -> None:
        self.patterns: list[Pattern] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip()
            if not line:
                continue
            text = clean(line)
            if text == ".":
                # "." or "/" would hide the whole context, docker ignores it.
                continue
            self.patterns.append(
                Pattern(text, exclusion, compile_pattern(text), text.count("/") + 1)
            )

    @classmethod
    def from_text(cls, text: str | bytes) -> IgnoreMatcher:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return cls(text.splitlines())

    @property
    def has_exclusions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    def excluded(self, path: str) -> bool:
        """True if ``path`` (relative, slash separated) is excluded."""
        path = clean(path)
        parts = path.split("/")
        result = False
        for pattern in self.patterns:
            if result == (not pattern.exclusion):
                # Only a pattern of the other kind can change the answer.
                continue
            if self._matches(pattern, path, parts):
                result = not pattern.exclusion
        return result

    @staticmethod
    def _matches(pattern: Pattern, path: str, parts: list[str]) -> bool:
        if pattern.regex.match(path):
            return True
        # A match on a parent directory covers everything inside it.
        for depth in range(1, len(parts)):
            if pattern.regex.match("/".join(parts[:depth])):
                return True
        return False

    def may_include_below(self, directory: str) -> bool:
        """Whether an exception could re-include something under an excluded dir."""
        directory = clean(directory)
        for pattern in self.patterns:
            if not pattern.exclusion:
                continue
            if "**" in pattern.text or pattern.text.startswith(directory + "/"):
                return True
            prefix = pattern.text.split("/")[: directory.count("/") + 1]
            if compile_pattern("/".join(prefix)).match(directory):
                return True
        return False
