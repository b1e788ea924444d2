"""Dockerfile variables: what ARG and ENV declare, the scopes a word sees them in, and
substituting ``$VAR`` and ``${VAR...}`` into a word as BuildKit does.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable

from ci_integration.images.dockerfile.lexer import Malformed, raw_words
from ci_integration.images.dockerfile.model import Instruction

Lookup = Callable[[str], str | None]  # None: not set; raises _Unresolvable if unknowable


class _Unresolvable(Exception):
    """A variable only the build knows: a base image's ENV, the build platform."""


class _Expansion:
    """Shell-style expansion of one word as BuildKit does it: quotes, escapes, ``$VAR``,
    ``${VAR}``, ``${VAR:-x}``, ``${VAR-x}``, ``${VAR:+x}``, ``${VAR:?x}``, ``${VAR#x}``,
    ``${VAR%x}``."""

    def __init__(self, text: str, lookup: Lookup, escape: str) -> None:
        self.text = text
        self.lookup = lookup
        self.escape = escape
        self.position = 0

    def peek(self) -> str:
        return self.text[self.position] if self.position < len(self.text) else ""

    def take(self) -> str:
        char = self.peek()
        self.position += 1
        return char

    def word(self, stop: str = "") -> str:
        out: list[str] = []
        while self.position < len(self.text):
            char = self.peek()
            if stop and char == stop:
                self.position += 1
                return "".join(out)
            if char == "'":
                out.append(self.single_quoted())
            elif char == '"':
                out.append(self.double_quoted())
            elif char == "$":
                out.append(self.dollar())
            else:
                self.position += 1
                if char == self.escape:
                    if self.position == len(self.text):
                        break
                    char = self.take()
                out.append(char)
        if stop:
            raise ValueError(f"missing {stop!r} in {self.text!r}")
        return "".join(out)

    def single_quoted(self) -> str:
        end = self.text.find("'", self.position + 1)
        if end < 0:
            raise ValueError(f"unterminated single quote in {self.text!r}")
        content = self.text[self.position + 1 : end]
        self.position = end + 1
        return content

    def double_quoted(self) -> str:
        self.position += 1
        out: list[str] = []
        while True:
            char = self.peek()
            if not char:
                raise ValueError(f"unterminated double quote in {self.text!r}")
            if char == '"':
                self.position += 1
                return "".join(out)
            if char == "$":
                out.append(self.dollar())
                continue
            self.position += 1
            if char == self.escape and self.peek() in ('"', "$", self.escape):
                char = self.take()
            out.append(char)

    def dollar(self) -> str:
        self.position += 1
        if self.peek() != "{":
            name = self.name()
            return self.value_of(name) if name else "$"
        self.position += 1
        if self.peek() in ("", "{", "}", ":"):
            raise ValueError(f"bad substitution in {self.text!r}")
        name = self.name()
        operator = self.take()
        if operator == "}":
            return self.value_of(name)
        if operator == ":" and self.peek() and self.peek() in "-+?":
            return self.conditional(name, self.take(), empty_is_unset=True)
        if operator in ("-", "+", "?"):
            return self.conditional(name, operator, empty_is_unset=False)
        if operator in ("#", "%"):
            longest = self.peek() == operator
            if longest:
                self.position += 1
            return _remove_affix(self.value_of(name), self.word("}"), operator, longest)
        raise ValueError(f"unsupported substitution ${{{name}{operator}...}} in {self.text!r}")

    def conditional(self, name: str, operator: str, *, empty_is_unset: bool) -> str:
        argument = self.word("}")
        value = self.lookup(name)
        is_set = value is not None and (value != "" or not empty_is_unset)
        if operator == "-":
            return value if is_set and value is not None else argument
        if operator == "+":
            return argument if is_set else ""
        if not is_set:
            raise ValueError(f"{name}: {argument or 'parameter not set'}")
        return value or ""

    def name(self) -> str:
        first = self.peek()
        if first.isdigit():
            start = self.position
            while self.peek().isdigit():
                self.position += 1
            return self.text[start : self.position]
        if first and first in "@*#?-$!0":
            self.position += 1
            return first
        start = self.position
        while self.peek() and (self.peek().isalnum() or self.peek() == "_"):
            self.position += 1
        return self.text[start : self.position]

    def value_of(self, name: str) -> str:
        return self.lookup(name) or ""


def _remove_affix(value: str, pattern: str, operator: str, longest: bool) -> str:
    """``${v#p}``, ``${v%p}``: the value less its shortest (or longest) matching prefix/suffix."""
    lengths = range(len(value), -1, -1) if longest else range(len(value) + 1)
    for length in lengths:
        affix = value[:length] if operator == "#" else value[len(value) - length :]
        if fnmatch.fnmatchcase(affix, pattern):
            return value[length:] if operator == "#" else value[: len(value) - length]
    return value


def expand(text: str, lookup: Lookup, escape: str = "\\") -> str:
    """One word with its quotes removed and its variables substituted."""
    return _Expansion(text, lookup, escape).word()


def expand_or_unknown(text: str, lookup: Lookup, escape: str) -> str | None:
    """The expanded word, or None if it names a variable only the build knows."""
    try:
        return expand(text, lookup, escape)
    except _Unresolvable:
        return None


def expand_or_keep(text: str, lookup: Lookup, escape: str) -> str:
    """The expanded word, or the word as written if only the build could expand it."""
    expanded = expand_or_unknown(text, lookup, escape)
    return text if expanded is None else expanded


@dataclasses.dataclass
class Scope:
    """The variables one part of the Dockerfile sees; a None value is one only the build knows."""

    env: dict[str, str | None] = dataclasses.field(default_factory=dict)
    args: dict[str, str | None] = dataclasses.field(default_factory=dict)
    open: bool = False  # names never declared may still come from the base image's ENV

    def lookup(self, name: str) -> str | None:
        # ENV wins over an ARG of the same name, as in Docker.
        for table in (self.env, self.args):
            if name in table:
                value = table[name]
                if value is None:
                    raise _Unresolvable(name)
                return value
        if self.open:
            raise _Unresolvable(name)
        return None

    def child(self) -> Scope:
        """The scope of a stage built FROM this one: ENV is inherited, ARG is not."""
        return Scope(env=dict(self.env), open=self.open)


def arg_declarations(instruction: Instruction, escape: str) -> list[tuple[str, str | None]]:
    declarations: list[tuple[str, str | None]] = []
    for word in raw_words(instruction.arguments, escape):
        name, equals, raw = word.partition("=")
        if not name:
            raise Malformed(instruction.line, f"ARG {word!r} has no name: write ARG NAME[=VALUE]")
        declarations.append((name, raw if equals else None))
    if not declarations:
        raise Malformed(instruction.line, "ARG needs a name: write ARG NAME[=VALUE]")
    return declarations


def env_assignments(instruction: Instruction, escape: str) -> list[tuple[str, str]]:
    words = raw_words(instruction.arguments, escape)
    if not words:
        raise Malformed(instruction.line, "ENV needs a value: write ENV NAME=VALUE")
    if "=" not in words[0]:
        # The legacy form: ENV NAME the rest of the line.
        parts = instruction.arguments.split(None, 1)
        if len(parts) < 2:
            raise Malformed(instruction.line, "ENV needs a value: write ENV NAME=VALUE")
        return [(parts[0], parts[1])]
    assignments = []
    for word in words:
        name, equals, raw = word.partition("=")
        if not equals or not name:
            raise Malformed(instruction.line, f"ENV {word!r} is not NAME=VALUE")
        assignments.append((name, raw))
    return assignments
