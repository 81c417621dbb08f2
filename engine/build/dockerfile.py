"""Dockerfile parsing and word expansion, as docker's legacy builder reads them.

A Dockerfile is a list of instructions, one per logical line. Physical lines
ending in the escape character (``\\`` unless a ``# escape=`` directive says
otherwise) continue on the next line; comment lines are dropped, also inside a
continuation. Each instruction keeps its original text for the build output::

    >>> df = parse("FROM busybox AS base\\nRUN echo \\\\\\n  hi\\n")
    >>> [(i.cmd, i.args) for i in df.instructions]
    [('from', ['busybox', 'AS', 'base']), ('run', ['echo   hi'])]

Arguments stay raw here (quotes and ``$VAR`` kept): the builder expands them
with :func:`expand` at the step that uses them, because the values come from
ARG and ENV steps that run in between.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from engine.errors import InvalidParameter

DEFAULT_ESCAPE = "\\"
DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
KNOWN_DIRECTIVES = {"escape", "syntax", "check"}
# Instructions whose arguments docker expands ($VAR) before using them.
EXPANDED = {
    "add",
    "arg",
    "copy",
    "env",
    "expose",
    "from",
    "label",
    "stopsignal",
    "user",
    "volume",
    "workdir",
}
INSTRUCTIONS = {
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
}


class DockerfileError(InvalidParameter):
    """A Dockerfile docker itself would refuse; the message names the line."""


@dataclass
class Instruction:
    """One instruction: ``cmd`` lower case, ``args`` raw, ``flags`` by name."""

    cmd: str
    args: list[str]
    original: str
    line: int
    flags: dict[str, str] = field(default_factory=dict)
    json: bool = False
    # ONBUILD's wrapped instruction; HEALTHCHECK's kind (CMD or NONE).
    sub: Instruction | None = None

    @property
    def keyword(self) -> str:
        return self.cmd.upper()


@dataclass
class Dockerfile:
    instructions: list[Instruction]
    escape: str = DEFAULT_ESCAPE
    directives: dict[str, str] = field(default_factory=dict)


def parse(text: str | bytes) -> Dockerfile:
    """Parse Dockerfile text into instructions.

    Raises DockerfileError (400) for an unknown instruction or a malformed one,
    with docker's ``dockerfile parse error line N: ...`` wording.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text.removeprefix("\ufeff")
    lines = text.splitlines()
    directives, start = _directives(lines)
    escape = directives.get("escape", DEFAULT_ESCAPE)
    if escape not in ("\\", "`"):
        raise DockerfileError(f"invalid ESCAPE '{escape}'. Must be ` or \\")
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")

    instructions: list[Instruction] = []
    index = start
    while index < len(lines):
        raw = lines[index]
        first = index + 1
        index += 1
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        text_line = raw.lstrip()
        # Join continuation lines; comment and blank lines inside one are
        # skipped rather than ending it, as docker does.
        while continuation.search(text_line):
            text_line = continuation.sub("", text_line)
            while index < len(lines) and _skippable(lines[index]):
                index += 1
            if index >= len(lines):
                break
            text_line += lines[index]
            index += 1
        text_line = continuation.sub("", text_line)
        if not text_line.strip():
            continue
        instructions.append(parse_line(text_line.strip(), first, escape))
    return Dockerfile(instructions, escape, directives)


def _skippable(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _directives(lines: list[str]) -> tuple[dict[str, str], int]:
    found: dict[str, str] = {}
    for number, line in enumerate(lines):
        match = DIRECTIVE.match(line.strip())
        if not match:
            return found, number
        name, value = match.group(1).lower(), match.group(2)
        if name not in KNOWN_DIRECTIVES:
            return found, number
        if name in found:
            raise DockerfileError(f"only one {name} parser directive can be used")
        found[name] = value
    return found, len(lines)


def parse_line(text: str, line: int, escape: str = DEFAULT_ESCAPE) -> Instruction:
    """Parse one logical line (continuations already joined)."""
    keyword, _, rest = text.partition(" ")
    if "\t" in keyword:
        keyword, _, more = keyword.partition("\t")
        rest = more + " " + rest
    cmd = keyword.lower()
    rest = rest.strip()
    if cmd not in INSTRUCTIONS:
        raise DockerfileError(
            f"dockerfile parse error line {line}: unknown instruction: {keyword.upper()}"
        )
    flags: dict[str, str] = {}
    if cmd in ("from", "copy", "add", "run", "healthcheck"):
        flags, rest = _flags(rest, line)
    inst = Instruction(cmd=cmd, args=[], original=text, line=line, flags=flags)
    try:
        _PARSERS[cmd](inst, rest, escape)
    except DockerfileError:
        raise
    except ValueError as err:
        raise DockerfileError(f"dockerfile parse error line {line}: {err}") from None
    return inst


def _flags(rest: str, line: int) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        word, _, remainder = rest.partition(" ")
        if word == "--":
            rest = remainder.strip()
            break
        name, eq, value = word[2:].partition("=")
        if not eq:
            value = "true"
        flags[name.lower()] = value
        rest = remainder.strip()
    return flags, rest


def _maybe_json(inst: Instruction, rest: str) -> None:
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            inst.args = value
            inst.json = True
            return
    inst.args = [rest] if rest else []


def _parse_command(inst: Instruction, rest: str, escape: str) -> None:
    _maybe_json(inst, rest)
    if inst.cmd == "run" and not inst.args:
        raise ValueError("RUN requires at least one argument")
    if inst.cmd == "shell" and not inst.json:
        raise ValueError("SHELL requires the arguments to be in JSON form")


def _parse_words(inst: Instruction, rest: str, escape: str) -> None:
    inst.args = split_words(rest, escape)
    if not inst.args and inst.cmd not in ("maintainer",):
        raise ValueError(f"{inst.keyword} requires at least one argument")


def _parse_files(inst: Instruction, rest: str, escape: str) -> None:
    _maybe_json(inst, rest)
    if not inst.json:
        inst.args = split_words(rest, escape)
    if len(inst.args) < 2:
        raise ValueError(
            f"{inst.keyword} requires at least two arguments, but only one was "
            "provided. Destination could not be determined"
        )


def _parse_volume(inst: Instruction, rest: str, escape: str) -> None:
    _maybe_json(inst, rest)
    if not inst.json:
        inst.args = split_words(rest, escape)
    if not inst.args:
        raise ValueError("VOLUME requires at least one argument")


def _parse_string(inst: Instruction, rest: str, escape: str) -> None:
    if not rest:
        raise ValueError(f"{inst.keyword} requires exactly one argument")
    inst.args = [rest]


def _parse_pairs(inst: Instruction, rest: str, escape: str) -> None:
    """ENV and LABEL: ``k=v k2="v 2"`` or the old ``k some value``."""
    words = split_words(rest, escape)
    if not words:
        raise ValueError(f"{inst.keyword} requires at least one argument")
    if "=" not in words[0]:
        # Old form: the first word is the key, the rest of the line its value.
        key = words[0]
        value = rest[len(key) :].strip()
        if not value and inst.cmd == "env":
            raise ValueError("ENV must have two arguments")
        inst.args = [key, value]
        inst.flags["legacy"] = "true"
        return
    pairs: list[str] = []
    for word in words:
        if "=" not in word:
            raise ValueError(
                f"Syntax error - can't find = in {word!r}. Must be of the form: name=value"
            )
        key, _, value = word.partition("=")
        if not key:
            raise ValueError(f"{inst.keyword} names can not be blank")
        pairs += [key, value]
    inst.args = pairs


def _parse_arg(inst: Instruction, rest: str, escape: str) -> None:
    words = split_words(rest, escape)
    if not words:
        raise ValueError("ARG requires at least one argument")
    inst.args = words


def _parse_healthcheck(inst: Instruction, rest: str, escape: str) -> None:
    kind, _, remainder = rest.partition(" ")
    kind = kind.upper()
    if kind == "NONE":
        if remainder.strip() or inst.flags:
            raise ValueError("HEALTHCHECK NONE takes no arguments")
        inst.args = ["NONE"]
        return
    if kind != "CMD":
        raise ValueError(f"Unknown type {kind!r} in HEALTHCHECK (try CMD)")
    sub = Instruction(cmd="cmd", args=[], original=remainder, line=inst.line)
    _maybe_json(sub, remainder.strip())
    if not sub.args:
        raise ValueError("Missing command after HEALTHCHECK CMD")
    inst.args = ["CMD"]
    inst.sub = sub
    inst.json = sub.json


def _parse_onbuild(inst: Instruction, rest: str, escape: str) -> None:
    if not rest:
        raise ValueError("ONBUILD requires at least one argument")
    sub = parse_line(rest, inst.line, escape)
    if sub.cmd in ("onbuild", "from", "maintainer"):
        raise ValueError(f"{sub.keyword} isn't allowed as an ONBUILD trigger")
    inst.sub = sub
    inst.args = [rest]


_PARSERS: dict[str, Callable[[Instruction, str, str], None]] = {
    "from": _parse_words,
    "run": _parse_command,
    "cmd": _parse_command,
    "entrypoint": _parse_command,
    "shell": _parse_command,
    "env": _parse_pairs,
    "label": _parse_pairs,
    "arg": _parse_arg,
    "copy": _parse_files,
    "add": _parse_files,
    "expose": _parse_words,
    "volume": _parse_volume,
    "user": _parse_string,
    "workdir": _parse_string,
    "stopsignal": _parse_string,
    "maintainer": _parse_string,
    "healthcheck": _parse_healthcheck,
    "onbuild": _parse_onbuild,
}


def split_words(text: str, escape: str = DEFAULT_ESCAPE) -> list[str]:
    """Split on unquoted whitespace, keeping quotes and escapes in the words."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    in_word = False
    chars = iter(text)
    for ch in chars:
        if quote:
            current.append(ch)
            if ch == escape and quote == '"':
                current.append(next(chars, ""))
            elif ch == quote:
                quote = ""
            continue
        if ch.isspace():
            if in_word:
                words.append("".join(current))
                current = []
                in_word = False
            continue
        in_word = True
        current.append(ch)
        if ch == escape:
            current.append(next(chars, ""))
        elif ch in ("'", '"'):
            quote = ch
    if in_word:
        words.append("".join(current))
    return words


# -- word expansion -------------------------------------------------------


def expand(word: str, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> str:
    """Expand ``$VAR``, ``${VAR}``, ``${VAR:-x}`` ... and remove quotes.

    Single quotes keep their content literal, double quotes allow expansion,
    the escape character protects the next one (``\\$`` is a dollar sign).
    Raises DockerfileError for ``${VAR:?message}`` on an unset variable and for
    a bad substitution.
    """
    return _Expander(word, env, escape).run()


def expand_words(
    text: str, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE
) -> list[str]:
    return [expand(word, env, escape) for word in split_words(text, escape)]


class _Expander:
    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.text = text
        self.env = env
        self.escape = escape
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        ch = self.peek()
        self.pos += 1
        return ch

    def run(self, stop: str = "") -> str:
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.peek()
            if stop and ch in stop:
                break
            self.take()
            if ch == self.escape:
                nxt = self.take()
                out.append(nxt)
            elif ch == "'":
                out.append(self._single())
            elif ch == '"':
                out.append(self._double())
            elif ch == "$":
                out.append(self._dollar())
            else:
                out.append(ch)
        return "".join(out)

    def _single(self) -> str:
        end = self.text.find("'", self.pos)
        if end < 0:
            raise DockerfileError(
                f"unexpected end of statement while looking for matching single-quote in {self.text!r}"
            )
        value = self.text[self.pos : end]
        self.pos = end + 1
        return value

    def _double(self) -> str:
        out: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise DockerfileError(
                    f"unexpected end of statement while looking for matching double-quote in {self.text!r}"
                )
            ch = self.take()
            if ch == '"':
                return "".join(out)
            if ch == self.escape:
                nxt = self.take()
                # Inside double quotes the escape only protects these.
                if nxt in ('"', "$", self.escape):
                    out.append(nxt)
                else:
                    out.append(ch + nxt)
            elif ch == "$":
                out.append(self._dollar())
            else:
                out.append(ch)

    def _name(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and (
            self.text[self.pos].isalnum() or self.text[self.pos] == "_"
        ):
            self.pos += 1
        return self.text[start : self.pos]

    def _dollar(self) -> str:
        ch = self.peek()
        if ch == "{":
            self.take()
            return self._braced()
        name = self._name()
        if not name:
            return "$"
        return self.env.get(name, "")

    def _braced(self) -> str:
        name = self._name()
        if not name:
            raise DockerfileError(f"bad substitution in {self.text!r}")
        ch = self.take()
        if ch == "}":
            return self.env.get(name, "")
        colon = ch == ":"
        if colon:
            ch = self.take()
        if ch not in ("-", "+", "?"):
            raise DockerfileError(
                f"unsupported modifier ({ch}) in substitution: {self.text!r}"
            )
        word = self.run(stop="}")
        if self.take() != "}":
            raise DockerfileError(f"missing '}}' in substitution: {self.text!r}")
        value = self.env.get(name)
        is_set = value is not None and (value != "" or not colon)
        if ch == "-":
            return value if is_set and value is not None else word
        if ch == "+":
            return word if is_set else ""
        if not is_set:
            raise DockerfileError(f"{name}: {word or 'is not allowed to be empty'}")
        return value or ""
