"""A Dockerfile read into its build stages: what each stage runs, which earlier stages
and which images it needs, which build-context files it copies, which caches it mounts.

The rules are BuildKit's: parser directives, escape-character continuations, comments
inside continuations, heredocs, ARG substitution in FROM, case-insensitive stage names.
Nothing here talks to an engine.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from ci_integration.errors import UsageError

NO_BUILD_ARGS: Mapping[str, str] = MappingProxyType({})
INSTRUCTIONS = frozenset(
    {
        "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
        "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
    }
)  # fmt: skip
# BuildKit sets these from the platforms of the build; we only know them if given as build args.
AUTOMATIC_PLATFORM_ARGS = frozenset(
    side + part for side in ("BUILD", "TARGET") for part in ("PLATFORM", "OS", "ARCH", "VARIANT")
)
CACHE_SHARING = ("shared", "private", "locked")
SCRATCH = "scratch"

_HEREDOC_INSTRUCTIONS = frozenset({"RUN", "COPY", "ADD"})
_DIRECTIVES = ("syntax", "escape", "check")
_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*")
_HEREDOC = re.compile(r"(\d*)<<(-?)([^<]*)")
_STAGE_NAME = re.compile(r"[a-z][a-z0-9_.-]*")
_REMOTE_SOURCE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|git@")
_INSTRUCTION_SPLIT = re.compile(r"[\t\v\f\r ]+")


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str  # upper-cased: FROM, RUN, COPY...
    arguments: str  # after the keyword and its --flags, continuations joined, no heredoc body
    flags: tuple[tuple[str, str], ...]  # ("from", "builder"), ("link", "")... in order
    line: int  # 1-based line where the instruction starts

    def flag(self, name: str) -> str | None:
        values = self.flag_values(name)
        return values[0] if values else None

    def flag_values(self, name: str) -> list[str]:
        return [value for flag, value in self.flags if flag == name]


@dataclasses.dataclass(frozen=True)
class CacheMount:
    id: str  # BuildKit's default is the target path
    target: str
    sharing: str = "shared"
    uid: int | None = None
    gid: int | None = None
    mode: str | None = None
    from_stage: str | None = None
    source: str | None = None


@dataclasses.dataclass(frozen=True)
class Stage:
    index: int
    name: str | None  # lower-cased, as Docker does
    base: str  # after ARG substitution; may name an earlier stage
    platform: str | None
    instructions: tuple[Instruction, ...]
    text: str  # the FROM line up to the line before the next FROM
    # What the stage needs; parse() fills these, since resolving a name needs the other stages.
    depends_on: tuple[str, ...] = ()
    external_images: tuple[str, ...] = ()
    copy_sources: tuple[str, ...] = ()
    cache_mounts: tuple[CacheMount, ...] = ()
    mount_sources: tuple[str, ...] = ()  # context paths RUN --mount=type=bind reads (no from=)
    from_line: int = 0  # 1-based line of the FROM instruction

    @property
    def ref(self) -> str:
        return self.name if self.name is not None else str(self.index)


@dataclasses.dataclass(frozen=True)
class Dockerfile:
    stages: tuple[Stage, ...]
    global_args: dict[str, str | None]  # ARGs before the first FROM: their defaults
    syntax: str | None
    escape: str = "\\"

    def stage(self, ref: str) -> Stage:
        """The stage by name (any case) or by index."""
        wanted = str(ref).strip().lower()
        if wanted.isdigit() and int(wanted) < len(self.stages):
            return self.stages[int(wanted)]
        for stage in self.stages:
            if stage.name == wanted:
                return stage
        known = ", ".join(stage.ref for stage in self.stages)
        raise UsageError(f"unknown stage {ref!r}: the Dockerfile has stages {known}")

    def stages_for(self, target: str | None = None) -> list[Stage]:
        """The target (default: the last stage) and all it needs, dependencies first."""
        final = self.stage(target) if target is not None else self.stages[-1]
        needed = {final.index}
        pending = [final]
        while pending:
            for ref in pending.pop().depends_on:
                dependency = self.stage(ref)
                if dependency.index not in needed:
                    needed.add(dependency.index)
                    pending.append(dependency)
        # A stage only ever depends on earlier ones, so index order is a build order.
        return [self.stages[index] for index in sorted(needed)]


def load(path: Path, build_args: Mapping[str, str] = NO_BUILD_ARGS) -> Dockerfile:
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise UsageError(f"Dockerfile not found: {path} (pass -f PATH)") from None
    except OSError as exc:
        raise UsageError(f"cannot read Dockerfile {path}: {exc.strerror} (pass -f PATH)") from None
    except UnicodeDecodeError:
        raise UsageError(f"Dockerfile {path} is not UTF-8 text") from None
    return _parse(text, build_args, source=str(path))


def parse(text: str, build_args: Mapping[str, str] = NO_BUILD_ARGS) -> Dockerfile:
    """The Dockerfile's stages; malformed input raises UsageError naming the line."""
    return _parse(text, build_args, source="Dockerfile")


class _Malformed(Exception):
    """A problem in the Dockerfile; parse() turns it into a UsageError with the line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


class _Unresolvable(Exception):
    """A variable only the build knows: a base image's ENV, the build platform."""


def _parse(text: str, build_args: Mapping[str, str], source: str) -> Dockerfile:
    lines = _physical_lines(text)
    try:
        directives = _read_directives(lines)
        escape = directives.get("escape", "\\")
        instructions = _read_instructions(lines, escape)
        return _assemble(lines, instructions, directives, build_args)
    except _Malformed as exc:
        raise UsageError(f"{source} line {exc.line}: {exc}") from None


def _physical_lines(text: str) -> list[str]:
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _read_directives(lines: list[str]) -> dict[str, str]:
    """``# name=value`` lines at the very top; the first other line ends them."""
    directives: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        match = _DIRECTIVE.fullmatch(line.lstrip())
        if not match or match.group(1).lower() not in _DIRECTIVES:
            break
        name, value = match.group(1).lower(), match.group(2)
        if name in directives:
            raise _Malformed(number, f"only one {name} parser directive can be used")
        if name == "escape" and value not in ("\\", "`"):
            raise _Malformed(number, f"invalid escape character {value!r}: use \\ or `")
        directives[name] = value
    return directives


def _read_instructions(lines: list[str], escape: str) -> list[Instruction]:
    e = re.escape(escape)
    continuation = re.compile(rf"([^{e}]){e}[ \t]*\Z|\A{e}[ \t]*\Z")
    instructions = []
    index = 0
    while index < len(lines):
        start = index + 1
        first = lines[index].lstrip()
        index += 1
        if first.startswith("#"):
            continue
        logical, ended = _trim_continuation(first, continuation)
        if ended and not logical:
            continue
        while not ended and index < len(lines):
            line = lines[index]
            index += 1
            # Comment and blank lines inside a continuation are dropped, not ending it.
            if line.lstrip().startswith("#") or not line.strip():
                continue
            part, ended = _trim_continuation(line, continuation)
            logical += part
        instruction = _instruction(logical, start)
        for terminator, chomp in _heredocs(instruction, logical):
            index = _skip_heredoc_body(lines, index, terminator, chomp, start)
        instructions.append(instruction)
    return instructions


def _trim_continuation(line: str, continuation: re.Pattern[str]) -> tuple[str, bool]:
    """The line without its trailing escape character, and whether the instruction ends."""
    if continuation.search(line):
        return continuation.sub(r"\1", line), False
    return line, True


def _instruction(logical: str, line: int) -> Instruction:
    parts = _INSTRUCTION_SPLIT.split(logical.strip(), maxsplit=1)
    keyword = parts[0].upper()
    if keyword not in INSTRUCTIONS:
        raise _Malformed(line, f"unknown instruction {parts[0]!r}")
    flags, arguments = _split_flags(parts[1] if len(parts) > 1 else "")
    return Instruction(keyword, arguments.strip(), flags, line)


def _split_flags(text: str) -> tuple[tuple[tuple[str, str], ...], str]:
    """Leading ``--name[=value]`` words, and the rest of the text; ``--`` ends the flags."""
    flags = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if not text.startswith("--", position):
            return tuple(flags), text[position:]
        word, position = _read_flag_word(text, position)
        if word == "--":
            return tuple(flags), text[position:]
        name, _, value = word[2:].partition("=")
        flags.append((name, value))


def _read_flag_word(text: str, position: int) -> tuple[str, int]:
    """One flag word with its quotes removed and backslash escapes applied, and where it ends."""
    chars = []
    quote = ""
    while position < len(text):
        char = text[position]
        if not quote and char.isspace():
            break
        position += 1
        if quote and char == quote:
            quote = ""
            continue
        if not quote and char in "'\"":
            quote = char
            continue
        if char == "\\":
            if position == len(text):
                break
            char = text[position]
            position += 1
        chars.append(char)
    return "".join(chars), position


def _heredocs(instruction: Instruction, logical: str) -> list[tuple[str, bool]]:
    """The terminators of the heredocs the instruction opens, with their <<- flag."""
    keyword, arguments = instruction.keyword, instruction.arguments
    if keyword == "ONBUILD":
        inner = arguments.split(None, 1)
        keyword = inner[0].upper() if inner else ""
        arguments = _split_flags(inner[1])[1] if len(inner) > 1 else ""
    if keyword not in _HEREDOC_INSTRUCTIONS or _json_list(arguments) is not None:
        return []
    found = []
    for word in _raw_words(logical, "\\"):
        match = _HEREDOC.fullmatch(word)
        if match and match.group(3):
            found.append((_unquote_heredoc_name(match.group(3)), match.group(2) == "-"))
    return found


def _unquote_heredoc_name(word: str) -> str:
    return re.sub(r"[\"'\\]", "", word)


def _skip_heredoc_body(
    lines: list[str], index: int, terminator: str, chomp: bool, start: int
) -> int:
    """The index of the line after the heredoc's terminator."""
    while index < len(lines):
        line = lines[index].lstrip("\t") if chomp else lines[index]
        index += 1
        if line == terminator:
            return index
    raise _Malformed(start, f"unterminated heredoc: add a line holding only {terminator}")


def _raw_words(text: str, escape: str) -> list[str]:
    """Words split on unquoted whitespace, their quotes and escapes kept as written."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    index = 0
    while index < len(text):
        char = text[index]
        index += 1
        if not quote and char.isspace():
            if current:
                words.append("".join(current))
                current = []
            continue
        current.append(char)
        if char == escape and quote != "'" and index < len(text):
            current.append(text[index])
            index += 1
        elif quote and char == quote:
            quote = ""
        elif not quote and char in "'\"":
            quote = char
    if current:
        words.append("".join(current))
    return words


def _json_list(arguments: str) -> list[str] | None:
    """The arguments in JSON form (``["a", "b"]``), or None when they are in shell form."""
    if not arguments.startswith("["):
        return None
    try:
        value = json.loads(arguments)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


Lookup = Callable[[str], str | None]  # None: not set; raises _Unresolvable if unknowable


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
        out = []
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
        out = []
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


@dataclasses.dataclass
class _Scope:
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

    def child(self) -> _Scope:
        """The scope of a stage built FROM this one: ENV is inherited, ARG is not."""
        return _Scope(env=dict(self.env), open=self.open)


@dataclasses.dataclass(frozen=True)
class _From:
    line: int
    base: str
    platform: str | None
    name: str | None


def _assemble(
    lines: list[str],
    instructions: list[Instruction],
    directives: Mapping[str, str],
    build_args: Mapping[str, str],
) -> Dockerfile:
    escape = directives.get("escape", "\\")
    starts = [i for i, instruction in enumerate(instructions) if instruction.keyword == "FROM"]
    preamble = instructions[: starts[0]] if starts else instructions
    for instruction in preamble:
        if instruction.keyword != "ARG":
            raise _Malformed(
                instruction.line,
                f"{instruction.keyword} before the first FROM: only ARG may come before it",
            )
    if not starts:
        raise _Malformed(max(len(lines), 1), "no FROM instruction: a stage starts with FROM IMAGE")
    defaults, global_scope = _global_args(preamble, build_args, escape)
    headers = [_read_from(instructions[i], global_scope, escape) for i in starts]
    _check_unique_names(headers)
    assembler = _StageAssembler(headers, global_scope, build_args, escape)
    ends = [*starts[1:], len(instructions)]
    for index, (start, end) in enumerate(zip(starts, ends, strict=True)):
        first_line = headers[index].line
        last_line = headers[index + 1].line - 1 if index + 1 < len(headers) else len(lines)
        text = "\n".join(lines[first_line - 1 : last_line])
        assembler.add(index, tuple(instructions[start + 1 : end]), text)
    return Dockerfile(
        stages=tuple(assembler.stages),
        global_args=defaults,
        syntax=directives.get("syntax"),
        escape=escape,
    )


def _global_args(
    preamble: list[Instruction], build_args: Mapping[str, str], escape: str
) -> tuple[dict[str, str | None], _Scope]:
    """The global ARGs' defaults, and the scope FROM lines see (build args applied)."""
    defaults: dict[str, str | None] = {}
    plain = _Scope(args={name: None for name in AUTOMATIC_PLATFORM_ARGS})
    effective = _Scope(
        args={name: build_args.get(name) for name in AUTOMATIC_PLATFORM_ARGS},
    )
    for instruction in preamble:
        for name, raw in _arg_declarations(instruction, escape):
            try:
                default = None if raw is None else _expand_or_keep(raw, plain.lookup, escape)
                if name in build_args:
                    effective.args[name] = build_args[name]
                elif raw is not None:
                    effective.args[name] = _expand_or_unknown(raw, effective.lookup, escape)
            except ValueError as exc:
                raise _Malformed(instruction.line, str(exc)) from None
            defaults[name] = default
            if default is not None:
                plain.args[name] = default
    return defaults, effective


def _arg_declarations(instruction: Instruction, escape: str) -> list[tuple[str, str | None]]:
    declarations: list[tuple[str, str | None]] = []
    for word in _raw_words(instruction.arguments, escape):
        name, equals, raw = word.partition("=")
        if not name:
            raise _Malformed(instruction.line, f"ARG {word!r} has no name: write ARG NAME[=VALUE]")
        declarations.append((name, raw if equals else None))
    if not declarations:
        raise _Malformed(instruction.line, "ARG needs a name: write ARG NAME[=VALUE]")
    return declarations


def _env_assignments(instruction: Instruction, escape: str) -> list[tuple[str, str]]:
    words = _raw_words(instruction.arguments, escape)
    if not words:
        raise _Malformed(instruction.line, "ENV needs a value: write ENV NAME=VALUE")
    if "=" not in words[0]:
        # The legacy form: ENV NAME the rest of the line.
        parts = instruction.arguments.split(None, 1)
        if len(parts) < 2:
            raise _Malformed(instruction.line, "ENV needs a value: write ENV NAME=VALUE")
        return [(parts[0], parts[1])]
    assignments = []
    for word in words:
        name, equals, raw = word.partition("=")
        if not equals or not name:
            raise _Malformed(instruction.line, f"ENV {word!r} is not NAME=VALUE")
        assignments.append((name, raw))
    return assignments


def _expand_or_unknown(text: str, lookup: Lookup, escape: str) -> str | None:
    try:
        return expand(text, lookup, escape)
    except _Unresolvable:
        return None


def _expand_or_keep(text: str, lookup: Lookup, escape: str) -> str:
    expanded = _expand_or_unknown(text, lookup, escape)
    return text if expanded is None else expanded


def _read_from(instruction: Instruction, scope: _Scope, escape: str) -> _From:
    words = instruction.arguments.split()
    name = None
    if len(words) == 3 and words[1].lower() == "as":
        name = words[2].lower()
        if not _STAGE_NAME.fullmatch(name):
            raise _Malformed(
                instruction.line,
                f"invalid stage name {words[2]!r}: use a letter, then letters, digits, - _ .",
            )
    elif len(words) != 1:
        raise _Malformed(instruction.line, "FROM takes an image and an optional AS NAME")
    try:
        base = _expand_or_keep(words[0], scope.lookup, escape)
        platform = instruction.flag("platform")
        if platform is not None:
            platform = _expand_or_keep(platform, scope.lookup, escape)
    except ValueError as exc:
        raise _Malformed(instruction.line, str(exc)) from None
    if not base:
        raise _Malformed(instruction.line, f"FROM {words[0]} names no image: set its build arg")
    return _From(instruction.line, base, platform, name)


def _check_unique_names(headers: list[_From]) -> None:
    seen: dict[str, int] = {}
    for header in headers:
        if header.name is None:
            continue
        if header.name in seen:
            first = seen[header.name]
            raise _Malformed(header.line, f"stage name {header.name!r} is taken by line {first}")
        seen[header.name] = header.line


class _StageAssembler:
    """Builds the stages in order, each resolving its names against the ones before it."""

    def __init__(
        self, headers: list[_From], global_scope: _Scope, build_args: Mapping[str, str], escape: str
    ) -> None:
        self.headers = headers
        self.global_scope = global_scope
        self.build_args = build_args
        self.escape = escape
        self.stages: list[Stage] = []
        self.scopes: list[_Scope] = []

    def add(self, index: int, instructions: tuple[Instruction, ...], text: str) -> None:
        header = self.headers[index]
        needs = _Needs()
        scope = self._base_scope(header, needs)
        for instruction in instructions:
            try:
                self._read(instruction, index, scope, needs)
            except ValueError as exc:
                raise _Malformed(instruction.line, str(exc)) from None
        self.scopes.append(scope)
        self.stages.append(
            Stage(
                index=index,
                name=header.name,
                base=header.base,
                platform=header.platform,
                instructions=instructions,
                text=text,
                depends_on=tuple(needs.stages),
                external_images=tuple(needs.images),
                copy_sources=tuple(needs.copy_sources),
                cache_mounts=tuple(needs.cache_mounts),
                mount_sources=tuple(needs.mount_sources),
                from_line=header.line,
            )
        )

    def _base_scope(self, header: _From, needs: _Needs) -> _Scope:
        base = header.base.lower()
        for stage in self.stages:
            if stage.name == base:
                needs.stage(stage.ref)
                return self.scopes[stage.index].child()
        if base == SCRATCH:
            return _Scope()
        needs.image(header.base)
        return _Scope(open=True)

    def _read(self, instruction: Instruction, index: int, scope: _Scope, needs: _Needs) -> None:
        if instruction.keyword == "ARG":
            for name, raw in _arg_declarations(instruction, self.escape):
                self._declare_arg(scope, name, raw)
        elif instruction.keyword == "ENV":
            values = [
                (name, _expand_or_unknown(raw, scope.lookup, self.escape))
                for name, raw in _env_assignments(instruction, self.escape)
            ]
            # Every value of one ENV sees the variables as they were before it.
            scope.env.update(values)
        elif instruction.keyword in ("COPY", "ADD"):
            self._read_copy(instruction, index, scope, needs)
        elif instruction.keyword == "RUN":
            for option in instruction.flag_values("mount"):
                self._read_mount(option, instruction.line, index, scope, needs)

    def _declare_arg(self, scope: _Scope, name: str, raw: str | None) -> None:
        if name in self.build_args:
            scope.args[name] = self.build_args[name]
        elif raw is not None:
            scope.args[name] = _expand_or_unknown(raw, scope.lookup, self.escape)
        elif name in self.global_scope.args:
            scope.args[name] = self.global_scope.args[name]
        # Else the ARG is declared without a value: Docker leaves it unset.

    def _read_copy(
        self, instruction: Instruction, index: int, scope: _Scope, needs: _Needs
    ) -> None:
        words = _json_list(instruction.arguments)
        if words is None:
            words = instruction.arguments.split()
        if len(words) < 2:
            raise ValueError(f"{instruction.keyword} needs a source and a destination")
        origin = instruction.flag("from")
        if origin is not None:
            self._need(origin, index, scope, needs)
            return
        for word in words[:-1]:
            heredoc = _HEREDOC.fullmatch(word)
            if heredoc and heredoc.group(3):
                continue
            if instruction.keyword == "ADD" and _REMOTE_SOURCE.match(word):
                continue
            needs.copy_sources.append(self._context_path(word, scope))

    def _read_mount(self, option: str, line: int, index: int, scope: _Scope, needs: _Needs) -> None:
        fields = _mount_fields(option)
        kind = fields.get("type", "bind").lower()
        origin = fields.get("from")
        if origin:
            self._need(origin, index, scope, needs)
        elif kind == "bind":
            # A bind mount without from= reads the build context, as a COPY would.
            source = fields.get("source") or fields.get("src") or "."
            needs.mount_sources.append(self._context_path(source, scope))
        if kind == "cache":
            expanded = {
                key: _expand_or_keep(text, scope.lookup, self.escape)
                for key, text in fields.items()
            }
            needs.cache_mounts.append(_cache_mount(expanded, line))

    def _context_path(self, word: str, scope: _Scope) -> str:
        # A path naming a variable only the build knows could be anything: take it all.
        return _expand_or_unknown(word, scope.lookup, self.escape) or "."

    def _need(self, reference: str, index: int, scope: _Scope, needs: _Needs) -> None:
        """Record a --from=REFERENCE: a stage (by name or index) or an image."""
        value = _expand_or_keep(reference, scope.lookup, self.escape)
        if value.isdigit():
            if int(value) >= index:
                raise ValueError(
                    f"--from={value} names stage {value}, not one before this stage ({index})"
                )
            needs.stage(self.stages[int(value)].ref)
            return
        name = value.lower()
        for stage in self.stages:
            if stage.name == name:
                needs.stage(stage.ref)
                return
        for later in self.headers[index:]:
            if later.name == name:
                raise ValueError(
                    f"--from={value} names stage {name!r} of line {later.line}, "
                    "not one before this one: move that stage up"
                )
        if name != SCRATCH:
            needs.image(value)


@dataclasses.dataclass
class _Needs:
    """What one stage needs; stages and images each once, in the order first named."""

    stages: list[str] = dataclasses.field(default_factory=list)
    images: list[str] = dataclasses.field(default_factory=list)
    copy_sources: list[str] = dataclasses.field(default_factory=list)
    mount_sources: list[str] = dataclasses.field(default_factory=list)
    cache_mounts: list[CacheMount] = dataclasses.field(default_factory=list)

    def stage(self, ref: str) -> None:
        if ref not in self.stages:
            self.stages.append(ref)

    def image(self, reference: str) -> None:
        if reference not in self.images:
            self.images.append(reference)


def _mount_fields(option: str) -> dict[str, str]:
    """``type=cache,target=/x,ro`` as a dict, keys lower-cased; CSV quoting as BuildKit reads it."""
    fields: dict[str, str] = {}
    for field in next(csv.reader([option]), []):
        key, _, value = field.partition("=")
        fields[key.strip().lower()] = value
    return fields


def _cache_mount(fields: Mapping[str, str], line: int) -> CacheMount:
    target = fields.get("target") or fields.get("dst") or fields.get("destination")
    if not target:
        raise _Malformed(line, "a cache mount needs a target: --mount=type=cache,target=PATH")
    sharing = fields.get("sharing", "shared").lower()
    if sharing not in CACHE_SHARING:
        raise _Malformed(line, f"cache mount sharing={sharing!r}: use {', '.join(CACHE_SHARING)}")
    mode = fields.get("mode")
    if mode is not None and not re.fullmatch(r"[0-7]+", mode):
        raise _Malformed(line, f"cache mount mode={mode!r} is not an octal mode like 0755")
    return CacheMount(
        id=fields.get("id") or target,
        target=target,
        sharing=sharing,
        uid=_mount_number(fields, "uid", line),
        gid=_mount_number(fields, "gid", line),
        mode=mode,
        from_stage=fields.get("from") or None,
        source=fields.get("source") or fields.get("src") or None,
    )


def _mount_number(fields: Mapping[str, str], key: str, line: int) -> int | None:
    value = fields.get(key)
    if value is None:
        return None
    if not value.isdigit():
        raise _Malformed(line, f"cache mount {key}={value!r} is not a number")
    return int(value)
